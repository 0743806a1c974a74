package streams

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// admitMany submits and admits n jobs for consumer, returning their leases
// sorted by entry id.
func (b *testBundle) admitMany(t *testing.T, consumer, prefix string, n int) []Lease {
	t.Helper()
	for i := range n {
		_, err := b.st.Submit(b.ctx, sub(fmt.Sprintf("%s%d", prefix, i)), SubmitOpts{Now: b.now})
		require.NoError(t, err)
	}
	_, res := b.readAdmit(t, consumer, n, AdmitOpts{})
	leases := make([]Lease, 0, n)
	for _, r := range res {
		require.Equal(t, Admitted, r.Status)
		leases = append(leases, Lease{JobID: r.Record.JobID, Entry: r.Record.Entry, Epoch: r.Record.Epoch})
	}
	SortLeases(leases)
	return leases
}

func (b *testBundle) owner(t *testing.T, entry string) string {
	t.Helper()
	return b.pending(t, entry).Consumer
}

// A stall past the lease, then a takeover, then the stalled worker's
// heartbeat: the takeover takes only the stalled consumer's idle entries
// (its liveness key is gone), and the late beat finds its key not as it
// wrote it, checks every record, reports every taken lease lost and steals
// nothing back.
func TestStalledBeatAfterTakeover(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		leases := b.admitMany(t, "A", "st", 3)
		lv := Liveness{Lease: time.Minute, Token: "a:1"}
		res, err := b.st.Beat(b.ctx, "A", lv, leases)
		require.NoError(t, err)
		require.True(t, res.Checked, "the first beat reads every record")
		require.Empty(t, res.Lost)
		res, err = b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:2", Expect: "a:1"}, leases)
		require.NoError(t, err)
		require.False(t, res.Checked, "the key as written: no record read")
		require.Empty(t, res.Lost)

		// While A's key lives nobody takes its entries, however idle.
		for _, l := range leases {
			b.age(t, "A", l.Entry, time.Hour)
		}
		cr, err := b.st.ClaimFrom(b.ctx, "B", "A", time.Minute, 10, false)
		require.NoError(t, err)
		require.True(t, cr.Alive)
		require.Empty(t, cr.Msgs)

		// A stalls past the lease: its key expires.
		require.NoError(t, b.rdb.Del(b.ctx, b.keys.Alive("A")).Err())
		cons, err := b.st.PendingConsumers(b.ctx)
		require.NoError(t, err)
		require.EqualValues(t, 3, cons["A"])
		alive, err := b.st.Alive(b.ctx, []string{"A"})
		require.NoError(t, err)
		require.Equal(t, []bool{false}, alive)
		cr, err = b.st.ClaimFrom(b.ctx, "B", "A", time.Minute, 2, false)
		require.NoError(t, err)
		require.Len(t, cr.Msgs, 2)
		require.True(t, cr.More, "a full page: there may be more")
		cr2, err := b.st.ClaimFrom(b.ctx, "B", "A", time.Minute, 2, false)
		require.NoError(t, err)
		require.Len(t, cr2.Msgs, 1)
		require.False(t, cr2.More)
		msgs := append(cr.Msgs, cr2.Msgs...)
		reqs := make([]AdmitRequest, len(msgs))
		for i, m := range msgs {
			reqs[i] = NewAdmitRequest(m, 1<<20)
		}
		ad, err := b.st.Admit(b.ctx, reqs, AdmitOpts{Consumer: "B", Now: b.now})
		require.NoError(t, err)
		for _, r := range ad {
			require.Equal(t, Admitted, r.Status)
		}

		// A wakes and beats with the token it last wrote.
		res, err = b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:3", Expect: "a:2"}, leases)
		require.NoError(t, err)
		require.True(t, res.Checked, "the key had expired: every record is read")
		require.Len(t, res.Lost, 3)
		for _, l := range leases {
			require.Equal(t, "B", b.owner(t, l.Entry), "the stale beat stole %s back", l.Entry)
		}
	})
}

// A liveness key lost by Redis (a restart from an older snapshot, a
// failover) while the leases are still held: a claim pass in between takes
// nothing (the entries were refreshed within the lease), and the next beat
// checks every record, keeps every lease and writes the key again. A key
// rolled back to an older token, or written by another process with the
// same consumer name, also makes the beat check every record.
func TestLivenessKeyLostWhileLeasesHeld(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		leases := b.admitMany(t, "A", "lk", 4)
		_, err := b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:1"}, leases)
		require.NoError(t, err)
		require.NoError(t, b.rdb.Del(b.ctx, b.keys.Alive("A")).Err())

		cr, err := b.st.ClaimFrom(b.ctx, "B", "A", time.Minute, 10, false)
		require.NoError(t, err)
		require.False(t, cr.Alive)
		require.Empty(t, cr.Msgs, "entries refreshed within the lease are not taken")

		res, err := b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:2", Expect: "a:1"}, leases)
		require.NoError(t, err)
		require.True(t, res.Checked)
		require.Empty(t, res.Lost)
		got, err := b.rdb.Get(b.ctx, b.keys.Alive("A")).Result()
		require.NoError(t, err)
		require.Equal(t, "a:2", got)

		for _, stale := range []string{"a:1", "other-process:7"} {
			require.NoError(t, b.rdb.Set(b.ctx, b.keys.Alive("A"), stale, 0).Err())
			res, err = b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:3", Expect: "a:2"}, leases)
			require.NoError(t, err)
			require.True(t, res.Checked, "key holding %q", stale)
			require.Empty(t, res.Lost)
		}
		// A later batch of the same beat expects that beat's own token.
		res, err = b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:3", Expect: "a:3"}, leases)
		require.NoError(t, err)
		require.False(t, res.Checked)
		// The same call again (its reply lost, resent) reads the records.
		res, err = b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:3", Expect: "a:2"}, leases)
		require.NoError(t, err)
		require.True(t, res.Checked)
	})
}

// Handoff deletes the liveness key: the handed-off entries are taken at
// once, the ones not handed off (fresh) are not.
func TestHandoffClearsLiveness(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		leases := b.admitMany(t, "A", "ho", 3)
		_, err := b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:1"}, leases)
		require.NoError(t, err)
		n, err := b.st.Handoff(b.ctx, "A", leases[:2])
		require.NoError(t, err)
		require.Equal(t, 2, n)
		cr, err := b.st.ClaimFrom(b.ctx, "B", "A", time.Minute, 10, false)
		require.NoError(t, err)
		require.False(t, cr.Alive)
		require.Len(t, cr.Msgs, 2)
		require.Equal(t, "A", b.owner(t, leases[2].Entry))
	})
}

// Mixed versions. An older worker writes no liveness key but refreshes its
// entries' idle time (Heartbeat): a new claimer takes only its lapsed
// entries. A new worker keeps refreshing idle times: an older claimer
// (XAUTOCLAIM by idle time, Claim) takes nothing from it.
func TestLivenessMixedVersions(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		old := b.admitMany(t, "old", "ov", 2)
		b.age(t, "old", old[0].Entry, time.Hour)
		b.age(t, "old", old[1].Entry, time.Hour)
		lost, err := b.st.Heartbeat(b.ctx, "old", old[1:])
		require.NoError(t, err)
		require.Empty(t, lost)
		cr, err := b.st.ClaimFrom(b.ctx, "new", "old", time.Minute, 10, false)
		require.NoError(t, err)
		require.Len(t, cr.Msgs, 1)
		require.Equal(t, old[0].Entry, cr.Msgs[0].ID, "only the old worker's lapsed entry")

		fresh := b.admitMany(t, "A", "nv", 2)
		for _, l := range fresh {
			b.age(t, "A", l.Entry, time.Hour)
		}
		_, err = b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:1"}, fresh)
		require.NoError(t, err)
		msgs, _, _, err := b.st.Claim(b.ctx, "older", time.Minute, 100, "0-0")
		require.NoError(t, err)
		for _, m := range msgs {
			require.NotContains(t, []string{fresh[0].Entry, fresh[1].Entry}, m.ID, "XAUTOCLAIM took a live new worker's entry")
		}
	})
}

// The keep-alive cost of a beat, counted by the server itself (its own
// redis-server, so no other test's commands mix in): a beat whose liveness
// key is as written reads no record (before: one HMGET per lease per beat)
// and runs a handful of commands for 1,000 leases; one that finds the key
// lost reads every record once.
func TestBeatCostDoesNotGrowWithLeases(t *testing.T) {
	srv, err := redistest.Start()
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := New(rdb, Config{Namespace: "cost"})
	require.NoError(t, err)
	b := &testBundle{ctx: context.Background(), backend: backendRedis, rdb: rdb, st: st, keys: st.Keys(),
		now: time.UnixMilli(1_800_000_000_000)}
	require.NoError(t, st.EnsureGroup(b.ctx))
	require.NoError(t, st.LoadScripts(b.ctx))
	const n = 1000
	leases := b.admitMany(t, "A", "c", n)

	beat := func(lv Liveness) (BeatResult, map[string]int64) {
		require.NoError(t, rdb.ConfigResetStat(b.ctx).Err())
		res, err := st.Beat(b.ctx, "A", lv, leases)
		require.NoError(t, err)
		require.Empty(t, res.Lost)
		return res, redistest.CommandCalls(t, rdb)
	}
	res, calls := beat(Liveness{Lease: time.Minute, Token: "a:1"})
	require.True(t, res.Checked)
	require.EqualValues(t, n, calls["hmget"], "the first beat reads every record once")

	res, calls = beat(Liveness{Lease: time.Minute, Token: "a:2", Expect: "a:1"})
	require.False(t, res.Checked)
	require.Zero(t, calls["hmget"], "a beat whose key is as written reads no record")
	total := int64(0)
	for name, c := range calls {
		if name != "config|resetstat" && name != "info" {
			total += c
		}
	}
	require.LessOrEqual(t, total, int64(5), "commands for one beat of %d leases: %v", n, calls)

	require.NoError(t, rdb.Del(b.ctx, st.Keys().Alive("A")).Err())
	res, calls = beat(Liveness{Lease: time.Minute, Token: "a:3", Expect: "a:2"})
	require.True(t, res.Checked)
	require.EqualValues(t, n, calls["hmget"])
}

// A worker's first beat expects no key: absent, the records are not read;
// holding a token of an earlier process with the same consumer name (it
// ran within the lease), they are.
func TestFirstBeatExpectsNoKey(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		leases := b.admitMany(t, "A", "fb", 2)
		res, err := b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "run1:1", Expect: ExpectAbsent}, leases)
		require.NoError(t, err)
		require.False(t, res.Checked)
		require.Empty(t, res.Lost)
		res, err = b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "run2:1", Expect: ExpectAbsent}, leases)
		require.NoError(t, err)
		require.True(t, res.Checked, "the key holds another process's token")
		require.Empty(t, res.Lost)
	})
}

// cancel.lua logs the job id once, when it sets the flag: the owners'
// heartbeats read the log instead of re-reading every record.
func TestCancelAppendsToCancelLog(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		b.admitted(t, "cl")
		r, err := b.st.CancelsAfter(b.ctx, "0-0", false, 10)
		require.NoError(t, err)
		require.Empty(t, r.JobIDs)
		require.Equal(t, "0-0", r.Next)
		_, err = b.st.Cancel(b.ctx, "cl", CancelOpts{Now: b.now})
		require.NoError(t, err)
		_, err = b.st.Cancel(b.ctx, "cl", CancelOpts{Now: b.now})
		require.NoError(t, err)
		_, err = b.st.Cancel(b.ctx, "not-yet", CancelOpts{Now: b.now, StubTTL: time.Hour})
		require.ErrorIs(t, err, ErrCancelPending)
		r, err = b.st.CancelsAfter(b.ctx, "0-0", false, 10)
		require.NoError(t, err)
		require.Equal(t, []string{"cl"}, r.JobIDs, "logged once, and not for a stub")
		r, err = b.st.CancelsAfter(b.ctx, r.Next, r.Entry, 10)
		require.NoError(t, err)
		require.Empty(t, r.JobIDs)
		require.False(t, r.RolledBack)
	})
}
