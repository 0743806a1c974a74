package streams

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// TestCancelHintNotPublished: a user whose ACL allows the namespace's keys
// but not its control channel. cancel.lua's PUBLISH fails after the flag and
// the event were written (a script is not rolled back). Before the fix the
// caller got only the PUBLISH error and could not tell that the cancel was
// recorded; now the result says recorded, and why the hint failed.
func TestCancelHintNotPublished(t *testing.T) {
	t.Parallel()
	b := setup(t, backendRedis)
	ns := b.keys.Namespace()
	user := "u_nochan_" + ns
	admin := redistest.Client(t)
	require.NoError(t, admin.Do(b.ctx, "ACL", "SETUSER", user, "on", ">pw-nochan", "resetkeys", "~{"+ns+"}:*",
		"resetchannels", "+@all", "-@dangerous").Err())
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr(), Username: user, Password: "pw-nochan"})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := New(rdb, Config{Namespace: ns})
	require.NoError(t, err)

	_, err = b.st.Submit(b.ctx, sub("c"), SubmitOpts{Now: b.now})
	require.NoError(t, err)
	res, err := st.CancelJob(b.ctx, "c", CancelOpts{})
	require.NoError(t, err, "the cancel is recorded: not an error")
	require.Equal(t, CancelResult{State: "SUBMITTED", Requested: true, HintError: res.HintError, Receivers: 0}, res)
	require.Contains(t, res.HintError, "publish to the channel")
	require.True(t, b.get(t, "c").Cancel, "the flag is set")
	require.Equal(t, []string{EventSubmitted, EventCancelRequested}, b.eventTypes(t, "c"))

	// Cancel (the short form) reports the same truth as an error that
	// still carries the state.
	state, err := st.Cancel(b.ctx, "c", CancelOpts{})
	require.ErrorIs(t, err, ErrHintNotPublished)
	require.Equal(t, "SUBMITTED", state)
}

// TestCancelReceivers: the result counts the subscribers the hint reached
// (0: no worker listens now; the owner acts at its next periodic check).
func TestCancelReceivers(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, sub("c"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		res, err := b.st.CancelJob(b.ctx, "c", CancelOpts{})
		require.NoError(t, err)
		require.Equal(t, CancelResult{State: "SUBMITTED", Requested: true}, res)

		ctx, cancel := context.WithCancel(b.ctx)
		defer cancel()
		ctl, err := b.st.SubscribeControl(ctx)
		require.NoError(t, err)
		res, err = b.st.CancelJob(b.ctx, "c", CancelOpts{})
		require.NoError(t, err)
		require.Equal(t, CancelResult{State: "SUBMITTED", Requested: true, Receivers: 1}, res)
		recvControl(t, ctl)
	})
}
