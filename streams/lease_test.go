package streams

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func (b *testBundle) pending(t *testing.T, id string) redis.XPendingExt {
	t.Helper()
	p, err := b.rdb.XPendingExt(b.ctx, &redis.XPendingExtArgs{
		Stream: b.keys.Submissions(), Group: b.st.Group(), Start: id, End: id, Count: 1}).Result()
	require.NoError(t, err)
	require.Len(t, p, 1, "entry %s pending", id)
	return p[0]
}

// age makes an entry look idle for d without changing its owner.
func (b *testBundle) age(t *testing.T, consumer, id string, d time.Duration) {
	t.Helper()
	require.NoError(t, b.rdb.Do(b.ctx, "XCLAIM", b.keys.Submissions(), b.st.Group(), consumer, 0, id,
		"IDLE", d.Milliseconds(), "JUSTID").Err())
}

func TestHeartbeatRefreshes(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "h")
		b.age(t, "w1", rec.Entry, time.Hour)
		before := b.pending(t, rec.Entry)
		require.Greater(t, before.Idle, 59*time.Minute)

		lost, err := b.st.Heartbeat(b.ctx, "w1", []Lease{{JobID: "h", Entry: rec.Entry, Epoch: rec.Epoch}})
		require.NoError(t, err)
		require.Empty(t, lost)
		after := b.pending(t, rec.Entry)
		require.Less(t, after.Idle, time.Minute)
		require.Equal(t, "w1", after.Consumer)
		if b.mini == nil {
			// miniredis bumps the count on every XCLAIM; Redis does not with JUSTID.
			require.Equal(t, before.RetryCount, after.RetryCount, "JUSTID keeps the delivery count")
		}
		// Wrong epoch or unknown job: lost.
		lost, err = b.st.Heartbeat(b.ctx, "w1", []Lease{
			{JobID: "h", Entry: rec.Entry, Epoch: rec.Epoch + 1}, {JobID: "nope", Entry: "1-1", Epoch: 1}})
		require.NoError(t, err)
		require.Len(t, lost, 2)
	})
}

func TestHeartbeatNeverSteals(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "s")
		lease := Lease{JobID: "s", Entry: rec.Entry, Epoch: rec.Epoch}
		// B reclaims the entry (A looked dead) but has not admitted it yet:
		// the record still names A at its epoch, only the PEL names B.
		msgs, _, _, err := b.st.Claim(b.ctx, "wB", 0, 10, "0-0")
		require.NoError(t, err)
		require.Len(t, msgs, 1)

		lost, err := b.st.Heartbeat(b.ctx, "w1", []Lease{lease})
		require.NoError(t, err)
		require.Equal(t, []Lease{lease}, lost)
		require.Equal(t, "wB", b.pending(t, rec.Entry).Consumer, "the PEL still names B")

		// After B admits, the record names B too; A is still lost.
		res := b.admit(t, "wB", msgs, AdmitOpts{})
		require.Equal(t, Admitted, res[0].Status)
		lost, err = b.st.Heartbeat(b.ctx, "w1", []Lease{lease})
		require.NoError(t, err)
		require.Len(t, lost, 1)
		require.Equal(t, "wB", b.pending(t, rec.Entry).Consumer)
		n, err := b.st.Handoff(b.ctx, "w1", []Lease{lease})
		require.NoError(t, err)
		require.Zero(t, n, "handoff gives away only what it holds")
		require.Equal(t, "wB", b.pending(t, rec.Entry).Consumer)
	})
}

func TestHandoff(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		var leases []Lease
		for _, id := range []string{"h1", "h2"} {
			_, err := b.st.Submit(b.ctx, sub(id), SubmitOpts{Now: b.now})
			require.NoError(t, err)
		}
		_, res := b.readAdmit(t, "w1", 10, AdmitOpts{})
		for _, r := range res {
			leases = append(leases, Lease{JobID: r.Record.JobID, Entry: r.Record.Entry, Epoch: r.Record.Epoch})
		}
		ctx, cancel := contextWithCancel(b)
		defer cancel()
		ctl, err := b.st.SubscribeControl(ctx)
		require.NoError(t, err)

		// Freshly delivered: nobody can take them with MinIdle 30s.
		msgs, _, _, err := b.st.Claim(b.ctx, "w2", 30*time.Second, 10, "0-0")
		require.NoError(t, err)
		require.Empty(t, msgs)

		n, err := b.st.Handoff(b.ctx, "w1", leases)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		require.Equal(t, ControlMessage{Kind: ControlHandoff}, recvControl(t, ctl))

		msgs, _, next, err := b.st.Claim(b.ctx, "w2", 30*time.Second, 10, "0-0")
		require.NoError(t, err)
		require.Len(t, msgs, 2, "handed-off entries are claimable at once")
		require.Equal(t, "0-0", next)
		res = b.admit(t, "w2", msgs, AdmitOpts{})
		for _, r := range res {
			require.Equal(t, Admitted, r.Status)
			require.EqualValues(t, 2, r.Record.Epoch)
			require.Equal(t, "w2", r.Record.Owner)
		}
		require.Equal(t, map[string]string{leases[0].Entry: "w2", leases[1].Entry: "w2"}, b.pel(t))
	})
}

func TestClaimAcksDeletedEntries(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		b.skipOnMini(t, "XAUTOCLAIM does not report deleted entries (its reply's third element is always empty)")
		keep := b.rawAdd(t, "job_id", "k", "input", `1`)
		gone := b.rawAdd(t, "job_id", "g", "input", `1`)
		_, err := b.st.Read(b.ctx, "w1", 10, 0)
		require.NoError(t, err)
		require.NoError(t, b.rdb.XDel(b.ctx, b.keys.Submissions(), gone).Err())

		msgs, deleted, next, err := b.st.Claim(b.ctx, "w2", 0, 10, "0-0")
		require.NoError(t, err)
		require.Equal(t, "0-0", next)
		require.Len(t, msgs, 1)
		require.Equal(t, keep, msgs[0].ID)
		require.Equal(t, "k", msgs[0].Values["job_id"])
		require.Equal(t, []string{gone}, deleted)
		require.Equal(t, map[string]string{keep: "w2"}, b.pel(t))
		n, err := b.st.Pending(b.ctx)
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
	})
}

func TestClaimPages(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		for range 5 {
			b.rawAdd(t, "job_id", "x", "input", `1`)
		}
		_, err := b.st.Read(b.ctx, "w1", 10, 0)
		require.NoError(t, err)
		seen, cursor := 0, "0-0"
		for page := 0; ; page++ {
			require.Less(t, page, 10, "the scan ends")
			msgs, _, next, err := b.st.Claim(b.ctx, "w2", 0, 2, cursor)
			require.NoError(t, err)
			require.LessOrEqual(t, len(msgs), 2)
			seen += len(msgs)
			if next == "0-0" {
				break
			}
			cursor = next
		}
		require.Equal(t, 5, seen)
	})
}

func TestReadNonBlocking(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		msgs, err := b.st.Read(b.ctx, "w1", 10, 0)
		require.NoError(t, err)
		require.Empty(t, msgs)
		start := time.Now()
		msgs, err = b.st.Read(b.ctx, "w1", 10, 50*time.Millisecond)
		require.NoError(t, err)
		require.Empty(t, msgs)
		require.Less(t, time.Since(start), 5*time.Second)
		b.rawAdd(t, "job_id", "r", "input", `1`)
		msgs, err = b.st.Read(b.ctx, "w1", 10, 0)
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		require.NoError(t, b.st.EnsureGroup(b.ctx), "EnsureGroup is idempotent")
	})
}
