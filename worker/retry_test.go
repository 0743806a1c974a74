package worker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestRetriedJobRunsAgain: a FAILED job retried (streams.Retry, what
// `submitter retry` calls) is admitted and run again by a real worker as
// run 2: one new /run on the simulator, its own terminal event carrying run
// 2, the epoch still growing.
func TestRetriedJobRunsAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 4})
	cfg := b.config("retry-w")
	cfg.Runpod = rp
	b.start(t, cfg)

	_, err := b.store.Submit(t.Context(), streams.Submission{JobID: "r1", Input: []byte(`{"mock_delay":5,"mock_error":"bad luck"}`)},
		streams.SubmitOpts{PersistInput: true})
	require.NoError(t, err)
	first := b.waitState(t, "r1", workflow.StateFailed, 20*time.Second)
	require.Equal(t, 1, first.Run)

	res, err := b.store.Retry(t.Context(), "r1", nil, time.Now())
	require.NoError(t, err)
	require.Equal(t, 2, res.Run)
	second := b.waitRecord(t, "r1", 20*time.Second, func(r streams.Record) bool {
		return r.Run == 2 && workflow.State(r.State).Terminal()
	})
	require.Equal(t, string(workflow.StateFailed), second.State)
	require.Contains(t, second.Error, "bad luck")
	require.Equal(t, 1, second.Attempts, "one /run in run 2")
	require.Greater(t, second.Epoch, first.Epoch)
	require.NotEqual(t, first.RunpodID, second.RunpodID)
	require.Len(t, srv.Sim.Jobs(), 2, "one Runpod job per run")

	evs := b.events(t)["r1"]
	var terminalRuns []int
	for _, ev := range evs {
		if ev.Type == streams.EventFailed {
			terminalRuns = append(terminalRuns, ev.Run)
		}
	}
	require.Equal(t, []int{0, 2}, terminalRuns, "one outcome per run, each saying its run")
}
