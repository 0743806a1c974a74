package workflow

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDeliveryOutcome: a webhook delivery decides as a poll would. A
// CANCELLED job is the stop outcome of whoever asked (the flag, or the
// deadline); one nobody asked for decides nothing (our own orphan cancel).
func TestDeliveryOutcome(t *testing.T) {
	live := Job{ID: "j", State: StateInProgress, Step: StepPoll, RunpodID: "rp", RunpodStatus: RunpodInProgress,
		Deadline: t0.Add(time.Hour)}
	cancelled := RunpodJob{ID: "rp", Status: RunpodCancelled}

	o, ok := DeliveryOutcome(live, RunpodJob{ID: "rp", Status: RunpodCompleted, Output: json.RawMessage(`1`)}, t0)
	require.True(t, ok)
	require.Equal(t, StateCompleted, o.State)

	_, ok = DeliveryOutcome(live, RunpodJob{ID: "rp", Status: RunpodInProgress}, t0)
	require.False(t, ok, "not terminal")

	_, ok = DeliveryOutcome(live, cancelled, t0)
	require.False(t, ok, "nobody asked for the cancel: the owner's poll decides")

	o, ok = DeliveryOutcome(live, cancelled, t0.Add(2*time.Hour))
	require.True(t, ok)
	require.Equal(t, Outcome{State: StateTimedOut, Error: ReasonDeadline, RunpodStatus: RunpodCancelled}, o)

	flagged := live
	flagged.CancelRequested = true
	o, ok = DeliveryOutcome(flagged, cancelled, t0.Add(2*time.Hour))
	require.True(t, ok)
	require.Equal(t, Outcome{State: StateCanceled, Error: ReasonCanceled, RunpodStatus: RunpodCancelled}, o)

	// A streaming job's empty COMPLETED output is its /stream chunks, which
	// the owner drains first; a real output decides.
	streaming := live
	streaming.Streaming = true
	_, ok = DeliveryOutcome(streaming, RunpodJob{ID: "rp", Status: RunpodCompleted, Output: json.RawMessage(`[]`)}, t0)
	require.False(t, ok, "the owner drains /stream first")
	o, ok = DeliveryOutcome(streaming, RunpodJob{ID: "rp", Status: RunpodCompleted, Output: json.RawMessage(`["a"]`)}, t0)
	require.True(t, ok, "an aggregate output decides")
	require.JSONEq(t, `["a"]`, string(o.Output))
}
