package worker

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestPollsPerJob runs the same jobs (1.5–2.5 s on the simulator) with the
// poll scheduler learning the endpoint's execution time and without it (the
// plain backoff by elapsed time), and reports the /status polls per job of
// each. Only completion is asserted: the figures depend on timing.
func TestPollsPerJob(t *testing.T) {
	t.Parallel()
	for _, learn := range []bool{true, false} {
		t.Run(fmt.Sprintf("learn=%v", learn), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 64, DisableRateLimits: true})
			cfg := b.config(fmt.Sprintf("polls-%v", learn))
			cfg.Runpod = rp
			cfg.Poll = workflow.PollPolicy{Initial: 100 * time.Millisecond, Max: 500 * time.Millisecond}
			w, err := New(b.rdb, cfg)
			require.NoError(t, err)
			if !learn {
				w.policy.Expect = nil
			}
			b.run(t, w)

			// A first wave teaches the estimate; the second is measured.
			wave := func(name string, n int) {
				ids := jobIDs(name, n)
				for i, id := range ids {
					b.submit(t, id, fmt.Sprintf(`{"mock_delay":%d}`, 1500+(i*37)%1000), 0)
				}
				for _, id := range ids {
					b.waitState(t, id, workflow.StateCompleted, time.Minute)
				}
			}
			wave("warm", 8)
			before := srv.Sim.Stats().Requests[runpodsim.OpStatus]
			const n = 48
			wave("measured", n)
			polls := srv.Sim.Stats().Requests[runpodsim.OpStatus] - before
			t.Logf("poll scheduler learning=%v: %.2f /status polls per job (%d jobs of 1.5–2.5 s)", learn, float64(polls)/n, n)
		})
	}
}
