package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// deliver reads n new entries as consumer (XREADGROUP), as a worker's fetch
// would, and returns their ids.
func deliver(t *testing.T, rdb *redis.Client, st *streams.Store, consumer string, n int) []string {
	t.Helper()
	msgs, err := st.Read(context.Background(), consumer, n, 0)
	require.NoError(t, err)
	require.Len(t, msgs, n)
	ids := make([]string, n)
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// A claim pass against a large pending list with one dead consumer costs a
// bounded number of calls, the same whatever the list's size: it reads the
// PEL's summary and the consumers' liveness keys, and pages only the dead
// consumer's entries. Before, XAUTOCLAIM paged the whole list (COUNT ×10
// entries scanned per call): with one free slot, 20 calls per 200 live
// entries ahead of the dead ones. Counted by the test's own redis-server.
func TestClaimPassCostBoundedByPEL(t *testing.T) {
	srv, err := redistest.Start()
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()

	claimCalls := map[int]int64{}
	for _, live := range []int{200, 2000} {
		ns := fmt.Sprintf("claimcost%d", live)
		st, err := streams.New(rdb, streams.Config{Namespace: ns})
		require.NoError(t, err)
		require.NoError(t, st.EnsureGroup(ctx))
		require.NoError(t, st.LoadScripts(ctx))
		keys := st.Keys()
		// A live worker "busy" holds `live` fresh entries and its liveness key.
		for i := range live {
			require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys.Submissions(),
				Values: []string{"job_id", fmt.Sprintf("busy-%d", i), "input", "{}"}}).Err())
		}
		deliver(t, rdb, st, "busy", live)
		require.NoError(t, rdb.Set(ctx, keys.Alive("busy"), "busy:1", time.Hour).Err())
		// A dead worker "gone" holds 3 entries, lapsed an hour ago, after them.
		for i := range 3 {
			_, err := st.Submit(ctx, streams.Submission{JobID: fmt.Sprintf("gone-%d", i), Input: []byte(`{}`)}, streams.SubmitOpts{})
			require.NoError(t, err)
		}
		for _, id := range deliver(t, rdb, st, "gone", 3) {
			require.NoError(t, rdb.Do(ctx, "XCLAIM", keys.Submissions(), st.Group(), "gone", 0, id, "IDLE", 3600000, "JUSTID").Err())
		}

		b := &testBundle{rdb: rdb, ns: ns, store: st, rp: newFakeRunpod()}
		cfg := b.config("claimer")
		cfg.MinIdle = time.Minute
		cfg.MaxInFlight = 1
		w := newWorker(st, cfg.WithDefaults())
		require.NoError(t, rdb.ConfigResetStat(ctx).Err())
		n, err := w.claimPass(ctx)
		require.NoError(t, err)
		calls := redistest.CommandCalls(t, rdb)
		require.Equal(t, 1, n, "one free slot: one of the dead consumer's jobs admitted")
		var c int64
		for _, name := range []string{"xautoclaim", "xclaim", "xpending", "mget", "exists"} {
			c += calls[name]
		}
		claimCalls[live] = c
		require.LessOrEqual(t, c, int64(8), "claim commands with %d live entries pending: %v", live, calls)
	}
	require.Equal(t, claimCalls[200], claimCalls[2000], "a pass's cost does not grow with the pending list")
}

// The hole a lease per worker opens: while a worker's liveness key lives,
// no peer takes its entries, so an entry in its own pending list that it
// does not hold (a job it dropped whose entry stayed its, an admit that
// failed, or a process before it with the same consumer name) would stay
// there forever. The worker's own claim pass takes such entries once they
// are idle past MinIdle; a peer's pass leaves them alone.
func TestOwnStrandedEntryReclaimedWhileAlive(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	require.NoError(t, b.store.EnsureGroup(ctx))
	b.submit(t, "stranded", `{"mock_delay":10,"mock_return":"x"}`, 0)
	ids := deliver(t, b.rdb, b.store, "A", 1)
	require.NoError(t, b.rdb.Do(ctx, "XCLAIM", b.store.Keys().Submissions(), b.store.Group(), "A", 0, ids[0], "IDLE", 3600000, "JUSTID").Err())
	require.NoError(t, b.rdb.Set(ctx, b.store.Keys().Alive("A"), "a:1", time.Hour).Err())

	peer := newWorker(b.store, b.config("B").WithDefaults())
	n, err := peer.claimPass(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "a peer took a live worker's entry")

	a := newWorker(b.store, b.config("A").WithDefaults())
	n, err = a.claimPass(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the worker's own stranded entry was not reclaimed")
	require.Equal(t, 1, a.Stats().InFlight)
	rec := b.get(t, "stranded")
	require.Equal(t, "A", rec.Owner)
	require.EqualValues(t, 1, rec.Epoch)
}

// noHints is the real store whose control subscription never delivers (a
// hint missed while the subscription reconnects, or never published).
type noHints struct{ *streams.Store }

func (noHints) SubscribeControl(ctx context.Context) (<-chan streams.ControlMessage, error) {
	ch := make(chan streams.ControlMessage)
	go func() { <-ctx.Done(); close(ch) }()
	return ch, nil
}

// A cancel whose hint never arrives is seen at the next heartbeat, which
// reads the partition's cancel log (cancel.lua appends to it), not by a
// per-job re-read of the record before a poll. Polls here are an hour away,
// so before (the re-read came only with a poll, every 30 s at most) the job
// was never cancelled.
func TestCancelSeenByBeatWithoutHint(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("w")
	cfg.Poll.Initial, cfg.Poll.Max, cfg.Poll.QueueMax = time.Hour, time.Hour, time.Hour
	w := newWorker(noHints{b.store}, cfg.WithDefaults())
	b.run(t, w)
	b.submit(t, "c1", `{"mock_delay":3600000}`, 0)
	b.waitRecord(t, "c1", 30*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	_, err := b.store.Cancel(context.Background(), "c1", streams.CancelOpts{})
	require.NoError(t, err)
	b.waitState(t, "c1", "CANCELED", 30*time.Second)
	_, _, cancels := b.rp.counts()
	require.Equal(t, 1, cancels, "the Runpod job was cancelled")
}
