package streams

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// admitted submits and admits one job as w1, returning its record.
func (b *testBundle) admitted(t *testing.T, id string) Record {
	t.Helper()
	_, err := b.st.Submit(b.ctx, sub(id), SubmitOpts{Now: b.now})
	require.NoError(t, err)
	_, res := b.readAdmit(t, "w1", 1, AdmitOpts{})
	require.Equal(t, Admitted, res[0].Status)
	return res[0].Record
}

func TestCheckpoint(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "c")
		later := b.now.Add(5000)
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "c", Owner: rec.Owner, Epoch: rec.Epoch,
			Step: "SUBMITTING", Attempts: 1}, later))
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "c", Owner: rec.Owner, Epoch: rec.Epoch,
			Step: "POLL", State: "QUEUED", RunpodID: "rp-1", RunpodStatus: "IN_QUEUE",
			Event: &EventInput{Type: EventQueued, Payload: EventPayload{RunpodID: "rp-1", Attempt: 1}}}, later))
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "c", Owner: rec.Owner, Epoch: rec.Epoch,
			State: "IN_PROGRESS", Output: []byte(`{"pct":50}`),
			Event: &EventInput{Type: EventProgress, Payload: EventPayload{Output: []byte(`{"pct":50}`)}}}, later))

		got := b.get(t, "c")
		require.Equal(t, "POLL", got.Step)
		require.Equal(t, "IN_PROGRESS", got.State)
		require.Equal(t, "rp-1", got.RunpodID)
		require.Equal(t, "IN_QUEUE", got.RunpodStatus)
		require.Equal(t, 1, got.Attempts)
		require.JSONEq(t, `{"pct":50}`, string(got.Output))
		require.Equal(t, later.UnixMilli(), got.UpdatedMs)

		evs := b.events(t)
		require.Equal(t, []string{EventSubmitted, EventQueued, EventProgress}, b.eventTypes(t, "c"))
		q := evs[1]
		require.Equal(t, "QUEUED", q.State)
		require.Equal(t, rec.Epoch, q.Epoch)
		require.Equal(t, later.UnixMilli(), q.TS)
		require.Equal(t, EventPayload{RunpodID: "rp-1", Attempt: 1}, q.Payload)
		require.Equal(t, "IN_PROGRESS", evs[2].State)
	})
}

func TestCheckpointRefusals(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "c")
		before := b.get(t, "c")
		nEvents := len(b.events(t))
		ev := &EventInput{Type: EventQueued}

		err := b.st.Checkpoint(b.ctx, Checkpoint{JobID: "c", Owner: rec.Owner, Epoch: rec.Epoch - 1, Step: "POLL", RunpodID: "stale", Event: ev}, b.now)
		require.ErrorIs(t, err, ErrFenced)
		err = b.st.Checkpoint(b.ctx, Checkpoint{JobID: "nope", Epoch: 1, Event: ev}, b.now)
		require.ErrorIs(t, err, ErrNotFound)
		err = b.st.Checkpoint(b.ctx, Checkpoint{JobID: "c", Owner: rec.Owner, Epoch: rec.Epoch, State: "COMPLETED"}, b.now)
		require.ErrorIs(t, err, ErrInvalid)
		require.Equal(t, before, b.get(t, "c"), "refusals write nothing")
		require.Len(t, b.events(t), nEvents)

		errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "c", Owner: rec.Owner, Epoch: rec.Epoch, State: "CANCELED"}}, FinalizeOpts{Now: b.now})
		require.NoError(t, err)
		require.NoError(t, errs[0])
		// Terminal beats fenced: the order is not_found, terminal, fenced.
		err = b.st.Checkpoint(b.ctx, Checkpoint{JobID: "c", Owner: rec.Owner, Epoch: rec.Epoch - 1, Event: ev}, b.now)
		require.ErrorIs(t, err, ErrTerminal)
		_, err = b.rdb.Exists(b.ctx, b.keys.Job("nope")).Result()
		require.NoError(t, err)
	})
}

// TestCheckpointSubmittingRefusedAfterCancel: the /run intent (Step
// SUBMITTING) is refused on a cancel-flagged job, atomically with the flag
// check, so a job canceled before it is sent is never sent; other
// checkpoints still pass (a polling job keeps recording progress).
func TestCheckpointSubmittingRefusedAfterCancel(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "c")
		st, err := b.st.Cancel(b.ctx, "c", CancelOpts{Now: b.now})
		require.NoError(t, err)
		require.Equal(t, "SUBMITTED", st)
		before := b.get(t, "c")
		require.True(t, before.Cancel)
		require.Equal(t, 0, before.Attempts)
		nEvents := len(b.events(t))

		later := b.now.Add(5000)
		err = b.st.Checkpoint(b.ctx, Checkpoint{JobID: "c", Owner: rec.Owner, Epoch: rec.Epoch, Step: "SUBMITTING", Attempts: 1,
			Event: &EventInput{Type: EventProgress}}, later)
		require.ErrorIs(t, err, ErrCancelRequested)
		after := b.get(t, "c")
		require.Equal(t, before, after, "a refused intent writes nothing")
		require.Equal(t, 0, after.Attempts)
		require.Equal(t, before.Step, after.Step)
		require.Len(t, b.events(t), nEvents, "a refused intent appends no event")

		// Fenced still beats canceled.
		err = b.st.Checkpoint(b.ctx, Checkpoint{JobID: "c", Owner: rec.Owner, Epoch: rec.Epoch - 1, Step: "SUBMITTING"}, later)
		require.ErrorIs(t, err, ErrFenced)

		// A non-SUBMITTING checkpoint on the cancel-flagged job is applied.
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "c", Owner: rec.Owner, Epoch: rec.Epoch,
			Step: "POLL", State: "IN_PROGRESS", RunpodID: "rp-1", RunpodStatus: "IN_PROGRESS",
			Event: &EventInput{Type: EventProgress}}, later))
		got := b.get(t, "c")
		require.Equal(t, "POLL", got.Step)
		require.Equal(t, "IN_PROGRESS", got.State)
		require.Equal(t, "rp-1", got.RunpodID)
		require.Equal(t, later.UnixMilli(), got.UpdatedMs)
		require.Equal(t, []string{EventSubmitted, EventCancelRequested, EventProgress}, b.eventTypes(t, "c"))
	})
}

// TestCheckpointUncertainAttempt: an uncertain /run attempt is counted and
// its event appended once per attempt number, however often it is written
// (a retry after a lost reply, or a second owner recording the same
// attempt); the next attempt counts again.
func TestCheckpointUncertainAttempt(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "u")
		uncertain := func(attempt int) {
			require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "u", Owner: rec.Owner, Epoch: rec.Epoch, UncertainAttempt: attempt,
				Event: &EventInput{Type: EventSubmitUncertain, Payload: EventPayload{Attempt: attempt}}}, b.now))
		}
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "u", Owner: rec.Owner, Epoch: rec.Epoch, Step: "SUBMITTING", Attempts: 1}, b.now))
		uncertain(1)
		uncertain(1)
		got := b.get(t, "u")
		require.Equal(t, 1, got.Uncertain)
		require.Equal(t, 1, got.UncertainAttempt)
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "u", Owner: rec.Owner, Epoch: rec.Epoch, Step: "SUBMITTING", Attempts: 2}, b.now))
		uncertain(2)
		got = b.get(t, "u")
		require.Equal(t, 2, got.Uncertain)
		require.Equal(t, 2, got.UncertainAttempt)
		require.Equal(t, 2, got.Attempts)
		require.Equal(t, []string{EventSubmitted, EventSubmitUncertain, EventSubmitUncertain}, b.eventTypes(t, "u"))
	})
}
