package streams

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestQueueInfo: backlog (not yet read by any worker), pending, the oldest
// waiting entry, dead letters and consumers, from one MULTI; a namespace no
// worker reads has no group.
func TestQueueInfo(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		b.skipOnMini(t, "XINFO GROUPS/CONSUMERS are not implemented by miniredis")
		// A namespace no worker ever read: no group (submit --wait says so).
		other, err := New(b.rdb, Config{Namespace: b.keys.Namespace() + "-nogroup"})
		require.NoError(t, err)
		_, err = other.Submit(b.ctx, sub("lonely"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		q, err := other.QueueInfo(b.ctx)
		require.NoError(t, err)
		require.False(t, q.GroupExists)
		require.Equal(t, int64(1), q.Backlog)
		require.InDelta(t, time.Now().UnixMilli(), q.OldestWaitingMs, float64(time.Hour.Milliseconds()), "entry ids carry the XADD time")

		for _, id := range []string{"q1", "q2", "q3"} {
			_, err := b.st.Submit(b.ctx, sub(id), SubmitOpts{Now: b.now})
			require.NoError(t, err)
		}
		q, err = b.st.QueueInfo(b.ctx)
		require.NoError(t, err)
		require.True(t, q.GroupExists)
		require.Empty(t, q.Consumers, "no worker has read yet")
		require.Equal(t, int64(3), q.Backlog)
		require.NotZero(t, q.OldestWaitingMs)

		msgs, err := b.st.Read(b.ctx, "w1", 1, 0)
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		q, err = b.st.QueueInfo(b.ctx)
		require.NoError(t, err)
		require.True(t, q.GroupExists)
		require.Equal(t, int64(3), q.Length)
		require.Equal(t, int64(1), q.Pending)
		require.Equal(t, int64(2), q.Backlog)
		rest, err := b.st.Read(b.ctx, "w1", 10, 0)
		require.NoError(t, err)
		require.Len(t, rest, 2)
		require.Len(t, q.Consumers, 1)
		require.Equal(t, "w1", q.Consumers[0].Name)
		require.Equal(t, int64(1), q.Consumers[0].Pending)
		q, err = b.st.QueueInfo(b.ctx)
		require.NoError(t, err)
		require.Zero(t, q.Backlog)
		require.Zero(t, q.OldestWaitingMs)
	})
}

// TestRetry: a FAILED job runs again as run 2 under the same id (new
// entry, retried event with run 2, record reset, no expiry); COMPLETED,
// live and input-less jobs are refused.
func TestRetry(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		finish := func(id, state string, persist bool) Record {
			_, err := b.st.Submit(b.ctx, sub(id), SubmitOpts{Now: b.now, PersistInput: persist})
			require.NoError(t, err)
			rec := b.admitted(t, id)
			_, err = b.st.Finalize(b.ctx, []Outcome{{JobID: id, Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch, State: state, Error: "boom"}},
				FinalizeOpts{ResultTTL: time.Hour, Now: b.now})
			require.NoError(t, err)
			return rec
		}
		first := finish("r-failed", "FAILED", true)
		res, err := b.st.Retry(b.ctx, "r-failed", nil, b.now.Add(time.Minute))
		require.NoError(t, err)
		require.Equal(t, 2, res.Run)
		require.Equal(t, "FAILED", res.PreviousState)
		require.NotEqual(t, first.Entry, res.Entry)
		rec := b.get(t, "r-failed")
		require.Equal(t, "SUBMITTED", rec.State)
		require.Equal(t, "SUBMIT", rec.Step)
		require.Equal(t, 2, rec.Run)
		require.Equal(t, res.Entry, rec.Entry)
		require.Empty(t, rec.Error)
		require.Zero(t, rec.FinishedMs)
		require.Zero(t, rec.Deliveries)
		require.Equal(t, first.Epoch, rec.Epoch, "the epoch stays monotonic")
		ttl, err := b.rdb.PTTL(b.ctx, b.keys.Job("r-failed")).Result()
		require.NoError(t, err)
		require.Less(t, ttl, time.Duration(0), "a retried job does not expire")
		evs := b.events(t)
		last := evs[len(evs)-1]
		require.Equal(t, EventRetried, last.Type)
		require.Equal(t, 2, last.Run)
		require.Equal(t, "SUBMITTED", last.State)

		// The new entry is admitted and run like a new job.
		msgs, results := b.readAdmit(t, "w2", 10, AdmitOpts{Consumer: "w2", MaxDeliveries: 5, Now: b.now})
		require.Len(t, msgs, 1)
		require.Equal(t, Admitted, results[0].Status)
		require.Equal(t, 2, results[0].Record.Run)
		require.Greater(t, results[0].Record.Epoch, first.Epoch)

		_, err = b.st.Retry(b.ctx, "r-failed", nil, b.now)
		require.ErrorIs(t, err, ErrNotFinished, "run 2 is live")

		finish("r-done", "COMPLETED", true)
		_, err = b.st.Retry(b.ctx, "r-done", nil, b.now)
		require.ErrorIs(t, err, ErrCompleted)

		finish("r-noinput", "FAILED", false)
		_, err = b.st.Retry(b.ctx, "r-noinput", nil, b.now)
		require.ErrorIs(t, err, ErrNoInput)
		res, err = b.st.Retry(b.ctx, "r-noinput", []byte(`{"from":"dead letter"}`), b.now)
		require.NoError(t, err, "the caller's copy of the input is enough")
		require.Equal(t, 2, res.Run)

		_, err = b.st.Retry(b.ctx, "nope", nil, b.now)
		require.ErrorIs(t, err, ErrNotFound)
	})
}

// TestPurgeFinished: only terminal records are deleted, optionally by state.
func TestPurgeFinished(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		for _, id := range []string{"p-failed", "p-done"} {
			st := map[string]string{"p-failed": "FAILED", "p-done": "COMPLETED"}[id]
			rec := b.admitted(t, id)
			_, err := b.st.Finalize(b.ctx, []Outcome{{JobID: id, Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch, State: st}},
				FinalizeOpts{ResultTTL: time.Hour, Now: b.now})
			require.NoError(t, err)
		}
		_, err := b.st.Submit(b.ctx, sub("p-live"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		ids := []string{"p-live", "p-failed", "p-done", "p-missing"}
		del, err := b.st.PurgeFinished(b.ctx, ids, []string{"FAILED"})
		require.NoError(t, err)
		require.Equal(t, []string{"p-failed"}, del)
		del, err = b.st.PurgeFinished(b.ctx, ids, nil)
		require.NoError(t, err)
		require.Equal(t, []string{"p-done"}, del)
		require.Equal(t, "SUBMITTED", b.get(t, "p-live").State, "a live job is never purged")
	})
}
