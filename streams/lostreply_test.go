package streams

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// lostReplyStore is b's namespace reached through a proxy that can lose a
// reply after Redis applied the command. retries is go-redis's MaxRetries:
// the default (3) re-sends a command whose connection broke by itself, -1
// surfaces the error so the caller retries.
func (b *testBundle) lostReplyStore(t *testing.T, retries int) (*Store, *redistest.Proxy) {
	t.Helper()
	p := redistest.NewProxy(t, b.rdb.Options().Addr)
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: retries, DB: b.rdb.Options().DB})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := New(rdb, Config{Namespace: b.keys.Namespace()})
	require.NoError(t, err)
	// Loaded scripts, as in a running worker: the lost reply is then the
	// script's own, not a NOSCRIPT that applied nothing.
	require.NoError(t, st.LoadScripts(b.ctx))
	return st, p
}

// TestWritesRetriedAfterALostReply: a checkpoint or finalize that Redis
// applied but whose reply was lost (the ambiguous timeout) is retried, by
// go-redis itself or by the caller. The retry must be idempotent: the /run
// attempt is counted once, no event is appended twice, and the retried
// finalize is recognised as the caller's own outcome (nil), not "terminal",
// so the worker still counts it.
func TestWritesRetriedAfterALostReply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		retries int
	}{{"go-redis_retries", 0}, {"caller_retries", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, backendRedis)
			st, p := b.lostReplyStore(t, tc.retries)
			rec := b.admitted(t, "lr")
			// write runs f, retrying it once if the lost reply surfaced.
			write := func(lost <-chan struct{}, f func() error) error {
				err := f()
				<-lost
				if err != nil {
					err = f()
				}
				return err
			}

			lost := p.SwallowReply("lr", "SUBMITTING")
			require.NoError(t, write(lost, func() error {
				return st.Checkpoint(b.ctx, Checkpoint{JobID: "lr", Owner: rec.Owner, Epoch: rec.Epoch, Step: "SUBMITTING", Attempts: 1}, b.now)
			}))
			require.Equal(t, 1, b.get(t, "lr").Attempts, "one /run intent, counted once")

			lost = p.SwallowReply("lr", "rp-1")
			require.NoError(t, write(lost, func() error {
				return st.Checkpoint(b.ctx, Checkpoint{JobID: "lr", Owner: rec.Owner, Epoch: rec.Epoch, Step: "POLL", State: "QUEUED",
					RunpodID: "rp-1", RunpodStatus: "IN_QUEUE", Event: &EventInput{Type: EventQueued,
						Payload: EventPayload{RunpodID: "rp-1", Attempt: 1}}}, b.now)
			}))
			require.Equal(t, []string{EventSubmitted, EventQueued}, b.eventTypes(t, "lr"), "the queued event once")

			out := Outcome{JobID: "lr", Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch, State: "COMPLETED",
				Output: []byte(`{"ok":1}`), RunpodID: "rp-1", RunpodStatus: "COMPLETED"}
			lost = p.SwallowReply("lr", "COMPLETED")
			var errs []error
			require.NoError(t, write(lost, func() error {
				var err error
				errs, err = st.Finalize(b.ctx, []Outcome{out}, FinalizeOpts{ResultTTL: time.Hour, Now: b.now})
				return err
			}))
			require.Len(t, errs, 1)
			require.NoError(t, errs[0], "the retried finalize is our own outcome")
			got := b.get(t, "lr")
			require.Equal(t, "COMPLETED", got.State)
			require.Equal(t, 1, got.Attempts)
			require.Equal(t, []string{EventSubmitted, EventQueued, EventCompleted}, b.eventTypes(t, "lr"))
		})
	}
}
