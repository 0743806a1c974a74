package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestAdmissionKeepsRunpodsQueueShallow: 8 GPU workers, depth 4, 120 jobs
// submitted at once: Runpod's queue (the simulator's peak) stays within the
// depth plus the documented slack, the rest waits in our stream, and every
// job completes.
func TestAdmissionKeepsRunpodsQueueShallow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const gpus, depth, n = 8, 4, 120
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: gpus, DisableRateLimits: true})
	cfg := b.config("adm")
	cfg.Runpod = rp
	cfg.Admission = Admission{Depth: depth, Interval: 50 * time.Millisecond,
		Health: func(ctx context.Context) (EndpointLoad, error) {
			h, err := rp.(*activities.Client).Health(ctx)
			return EndpointLoad{InQueue: int(h.Jobs.InQueue), IdleWorkers: int(h.Workers.Idle)}, err
		}}
	b.start(t, cfg)
	ids := jobIDs("adm", n)
	for _, id := range ids {
		b.submit(t, id, `{"mock_delay":100}`, 0)
	}
	for _, id := range ids {
		b.waitState(t, id, workflow.StateCompleted, 2*time.Minute)
	}
	st := srv.Sim.Stats()
	t.Logf("admission depth %d over %d GPU workers, %d jobs: Runpod's queue peaked at %d", depth, gpus, n, st.PeakQueued)
	// Slack: /runs in flight while /health was read (bounded by one grant:
	// depth + gpus).
	require.LessOrEqual(t, st.PeakQueued, 2*depth+gpus, "Runpod's queue stays shallow")
	require.Less(t, st.PeakQueued, n-gpus, "the backlog did not all go to Runpod")
	require.EqualValues(t, n, st.JobsCreated)
}

func TestAdmissionConfigValidate(t *testing.T) {
	t.Parallel()
	c := Config{Runpod: newFakeRunpod(), Admission: Admission{Depth: 4}}
	require.ErrorContains(t, c.WithDefaults().Validate(), "Admission.Health")
	c.Admission.Depth = -1
	require.ErrorContains(t, c.WithDefaults().Validate(), "Admission.Depth")
}
