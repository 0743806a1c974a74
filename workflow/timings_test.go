package workflow

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOutcomeCarriesRunpodTimings: the terminal /status answer's delayTime,
// executionTime and workerId reach the outcome, whether the job finished on
// its own or was cancelled (the confirming /status after /cancel).
func TestOutcomeCarriesRunpodTimings(t *testing.T) {
	t.Parallel()
	done := RunpodJob{ID: "rp-1", Status: RunpodCompleted, DelayTime: 1200, ExecutionTime: 3400,
		WorkerID: "gpuworker00001", Output: []byte(`"ok"`)}
	j, _ := Apply(onRunpod(), Action{Kind: ActPoll}, Result{Job: done}, t0, pol, nil)
	require.NotNil(t, j.Outcome)
	require.Equal(t, int64(1200), j.Outcome.DelayMs)
	require.Equal(t, int64(3400), j.Outcome.ExecMs)
	require.Equal(t, "gpuworker00001", j.Outcome.RunpodWorkerID)

	// Cancelled: /cancel, then the /status that confirms it.
	c := onRunpod()
	c.CancelRequested = true
	a := Next(c, t0, pol)
	require.Equal(t, ActCancel, a.Kind)
	c, _ = Apply(c, a, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}}, t0, pol, nil)
	a = Next(c, t0, pol)
	require.Equal(t, ActPoll, a.Kind)
	c, _ = Apply(c, a, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled, DelayTime: 10, ExecutionTime: 77,
		WorkerID: "gpuworker00002"}}, t0, pol, nil)
	require.NotNil(t, c.Outcome)
	require.Equal(t, StateCanceled, c.Outcome.State)
	require.Equal(t, int64(10), c.Outcome.DelayMs)
	require.Equal(t, int64(77), c.Outcome.ExecMs)
	require.Equal(t, "gpuworker00002", c.Outcome.RunpodWorkerID)
}
