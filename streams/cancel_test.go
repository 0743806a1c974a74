package streams

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func contextWithCancel(b *testBundle) (context.Context, context.CancelFunc) {
	return context.WithCancel(b.ctx)
}

func recvControl(t *testing.T, ch <-chan ControlMessage) ControlMessage {
	t.Helper()
	select {
	case m, ok := <-ch:
		require.True(t, ok, "control channel closed early")
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no control message within 5s")
	}
	return ControlMessage{}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		ctx, cancel := contextWithCancel(b)
		ctl, err := b.st.SubscribeControl(ctx)
		require.NoError(t, err)

		_, err = b.st.Submit(b.ctx, sub("c"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		st, err := b.st.Cancel(b.ctx, "c", CancelOpts{Now: b.now.Add(time.Second)})
		require.NoError(t, err)
		require.Equal(t, "SUBMITTED", st)
		require.Equal(t, ControlMessage{Kind: ControlCancel, JobID: "c"}, recvControl(t, ctl))
		rec := b.get(t, "c")
		require.True(t, rec.Cancel)
		require.Equal(t, b.now.Add(time.Second).UnixMilli(), rec.UpdatedMs)

		// Again: no second event, but another nudge.
		_, err = b.st.Cancel(b.ctx, "c", CancelOpts{Now: b.now})
		require.NoError(t, err)
		require.Equal(t, ControlMessage{Kind: ControlCancel, JobID: "c"}, recvControl(t, ctl))
		require.Equal(t, []string{EventSubmitted, EventCancelRequested}, b.eventTypes(t, "c"))

		_, err = b.st.Cancel(b.ctx, "nope", CancelOpts{Now: b.now})
		require.ErrorIs(t, err, ErrNotFound)

		// Terminal: state returned, nothing changed.
		_, res := b.readAdmit(t, "w1", 1, AdmitOpts{})
		errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "c", Owner: res[0].Record.Owner, Epoch: res[0].Record.Epoch, State: "CANCELED"}}, FinalizeOpts{Now: b.now})
		require.NoError(t, err)
		require.NoError(t, errs[0])
		st, err = b.st.Cancel(b.ctx, "c", CancelOpts{Now: b.now})
		require.NoError(t, err)
		require.Equal(t, "CANCELED", st)
		require.Equal(t, []string{EventSubmitted, EventCancelRequested, EventCanceled}, b.eventTypes(t, "c"))

		cancel()
		select {
		case _, ok := <-ctl:
			require.False(t, ok, "closed after ctx is done")
		case <-time.After(5 * time.Second):
			t.Fatal("control channel not closed")
		}
	})
}

func TestParseControl(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]ControlMessage{
		"handoff":      {Kind: ControlHandoff},
		"cancel job-1": {Kind: ControlCancel, JobID: "job-1"},
	} {
		have, err := ParseControl(in)
		require.NoError(t, err)
		require.Equal(t, want, have)
		require.Equal(t, in, have.String())
	}
	for _, in := range []string{"", "cancel", "cancel ", "reboot"} {
		_, err := ParseControl(in)
		require.Error(t, err, in)
	}
}
