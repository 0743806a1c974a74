package worker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
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

// TestAdmissionDepthIsPoolWide: four workers, depth 4, 2 GPU workers and
// jobs that run for minutes, so whatever Runpod gets stays there. Once the
// pool has settled (nothing new reached Runpod for several readings),
// Runpod holds the 2 running jobs plus at most the depth queued, whatever
// the number of workers; the rest of the backlog waits in our stream with
// state SUBMITTED. Per-worker admission admitted the depth once per worker
// (16 queued: 4x).
func TestAdmissionDepthIsPoolWide(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const gpus, depth, workers, n = 2, 4, 4, 60
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: gpus, DisableRateLimits: true})
	health := func(ctx context.Context) (EndpointLoad, error) {
		h, err := rp.(*activities.Client).Health(ctx)
		return EndpointLoad{InQueue: int(h.Jobs.InQueue), IdleWorkers: int(h.Workers.Idle)}, err
	}
	ids := jobIDs("admpool", n)
	for _, id := range ids {
		b.submit(t, id, `{"mock_delay":600000}`, 0)
	}
	for i := range workers {
		cfg := b.config(fmt.Sprintf("admpool-%d", i))
		cfg.Runpod = rp
		cfg.Admission = Admission{Depth: depth, Interval: 50 * time.Millisecond, Health: health}
		b.start(t, cfg)
	}
	// Settled: the number of Runpod jobs unchanged over 20 readings.
	last, same := int64(-1), 0
	require.Eventually(t, func() bool {
		c := srv.Sim.Stats().JobsCreated
		if c == last && c > 0 {
			same++
		} else {
			last, same = c, 0
		}
		return same >= 20
	}, 2*time.Minute, 50*time.Millisecond)
	st := srv.Sim.Stats()
	t.Logf("%d workers, depth %d, %d GPU workers: %d jobs reached Runpod (%d queued, %d running)",
		workers, depth, gpus, st.JobsCreated, st.Queued, st.Running)
	require.Equal(t, gpus, st.Running)
	require.LessOrEqual(t, st.Queued, depth, "Runpod's queue holds the pool's depth, not the depth per worker")
	require.GreaterOrEqual(t, st.Queued, depth-1, "the depth is used")
	held := 0
	for _, id := range ids {
		if r := b.get(t, id); r.State == string(workflow.StateSubmitted) && r.RunpodID == "" {
			held++
		}
	}
	require.Equal(t, n-int(st.JobsCreated), held, "the backlog waits in our stream as SUBMITTED")
}

// TestAdmissionBacklogCancelNeedsNoRunpodCall: while Runpod's queue has no
// room, jobs wait in the stream as SUBMITTED with no owner; one of them is
// canceled there. Once room opens it ends CANCELED without any /run, and the
// others run.
func TestAdmissionBacklogCancelNeedsNoRunpodCall(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 4, DisableRateLimits: true})
	var full atomic.Bool
	full.Store(true)
	cfg := b.config("admcancel")
	cfg.Runpod = rp
	cfg.Admission = Admission{Depth: 2, Interval: 20 * time.Millisecond,
		Health: func(ctx context.Context) (EndpointLoad, error) {
			if full.Load() {
				return EndpointLoad{InQueue: 1000}, nil // a queue far past the depth
			}
			return EndpointLoad{IdleWorkers: 4}, nil
		}}
	for _, id := range []string{"held-a", "held-b", "held-c"} {
		b.submit(t, id, `{"mock_delay":10}`, 0)
	}
	w := b.start(t, cfg)
	require.Eventually(t, func() bool { return w.w.Stats().AdmissionWaits >= 5 }, 30*time.Second, 10*time.Millisecond,
		"the fetcher found no room several times")
	for _, id := range []string{"held-a", "held-b", "held-c"} {
		r := b.get(t, id)
		require.Equal(t, string(workflow.StateSubmitted), r.State, id)
		require.Empty(t, r.Owner, "%s waits in the stream, owned by nobody", id)
	}
	_, err := b.store.Cancel(context.Background(), "held-b", streams.CancelOpts{})
	require.NoError(t, err)
	require.Zero(t, srv.Sim.Stats().JobsCreated, "nothing reached Runpod while it had no room")

	full.Store(false)
	b.waitState(t, "held-b", workflow.StateCanceled, 30*time.Second)
	b.waitState(t, "held-a", workflow.StateCompleted, 30*time.Second)
	b.waitState(t, "held-c", workflow.StateCompleted, 30*time.Second)
	require.EqualValues(t, 2, srv.Sim.Stats().JobsCreated, "the canceled job never reached Runpod")
}
