package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// addOld appends n entries to stream key with ids from startMs on, one ms
// apart, pipelined. The pipeline goes over a client that never retries and
// waits as long as the server takes: a 5,000-entry pipeline can outlast the
// default 3 s read timeout on a loaded machine, and a retry after an applied
// pipeline fails with "ID specified in XADD is equal or smaller".
func (b *testBundle) addOld(t *testing.T, key string, n int, startMs int64) {
	t.Helper()
	ctx := context.Background()
	seed := redis.NewClient(&redis.Options{Addr: b.rdb.Options().Addr, MaxRetries: -1,
		ReadTimeout: -1, WriteTimeout: -1})
	defer seed.Close()
	for done := 0; done < n; {
		pipe := seed.Pipeline()
		for k := 0; k < 5000 && done < n; k, done = k+1, done+1 {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, ID: fmt.Sprintf("%d-0", startMs+int64(done)),
				Values: []any{"type", "submitted", "job_id", fmt.Sprint("old-", done)}})
		}
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
	}
}

func (b *testBundle) xlen(t *testing.T, key string) int64 {
	t.Helper()
	n, err := b.rdb.XLen(context.Background(), key).Result()
	require.NoError(t, err)
	return n
}

// 50,000 events older than the retention are all trimmed by the janitor's
// first pass, and the recent ones kept. Before the fix one pass removed at
// most 10,000 (XTRIM MINID ~ without LIMIT) and the next came 5 minutes
// later, so the stream outgrew its trimming.
func TestJanitorTrimsBacklogInOnePass(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	events := b.store.Keys().Events()
	old := time.Now().Add(-30 * 24 * time.Hour).UnixMilli()
	b.addOld(t, events, 50_000, old)
	for i := 0; i < 7; i++ {
		require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: events, Values: []any{"type", "recent"}}).Err())
	}
	cfg := b.config("jan")
	cfg.EventRetention = time.Hour
	b.start(t, cfg) // the janitor passes once at start
	require.Eventually(t, func() bool { return b.xlen(t, events) == 7 }, 30*time.Second, 20*time.Millisecond,
		"the first pass trims every old event")
}

// One pass, called directly: it reports what it removed, and dead letters
// are trimmed by age too.
func TestJanitorPass(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	keys := b.store.Keys()
	old := time.Now().Add(-60 * 24 * time.Hour).UnixMilli()
	b.addOld(t, keys.Events(), 25_000, old)
	b.addOld(t, keys.Dead(), 12_345, old)
	require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys.Dead(), Values: []any{"dead_reason", "recent"}}).Err())

	cfg := b.config("jan")
	cfg.EventRetention = time.Hour
	cfg.DeadRetention = 24 * time.Hour
	w, err := New(b.rdb, cfg)
	require.NoError(t, err)
	r, err := w.janitorPass(ctx, time.Hour)
	require.NoError(t, err)
	require.False(t, r.backlog)
	require.EqualValues(t, 25_000, r.events)
	require.EqualValues(t, 12_345, r.dead)
	require.Zero(t, b.xlen(t, keys.Events()))
	require.EqualValues(t, 1, b.xlen(t, keys.Dead()), "the recent dead letter is kept")

	// A zero budget still makes progress and says a backlog is left.
	b.addOld(t, keys.Events(), 30_000, old+100_000)
	r, err = w.janitorPass(ctx, 0)
	require.NoError(t, err)
	require.True(t, r.backlog)
	require.Positive(t, r.events)
}

// DeadRetention -1 keeps dead letters forever.
func TestJanitorKeepsDeadForever(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.addOld(t, b.store.Keys().Dead(), 10, time.Now().Add(-400*24*time.Hour).UnixMilli())
	cfg := b.config("jan")
	cfg.DeadRetention = -1
	w, err := New(b.rdb, cfg)
	require.NoError(t, err)
	_, err = w.janitorPass(context.Background(), time.Hour)
	require.NoError(t, err)
	require.EqualValues(t, 10, b.xlen(t, b.store.Keys().Dead()))
}

// A consumer of a gone worker (idle, nothing pending) is removed from the
// group; one that still holds an entry is kept, and so is the janitor's own.
func TestJanitorRemovesGoneConsumers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	keys := b.store.Keys()
	require.NoError(t, b.store.EnsureGroup(ctx))
	group := b.store.Group()
	require.NoError(t, b.rdb.XGroupCreateConsumer(ctx, keys.Submissions(), group, "gone-empty").Err())
	entry := b.rawAdd(t, "job_id", "held", "input", `1`)
	msgs, err := b.store.Read(ctx, "gone-pending", 1, 0)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.NoError(t, b.rdb.XGroupCreateConsumer(ctx, keys.Submissions(), group, "jan").Err())

	cfg := b.config("jan")
	cfg.ConsumerRetention = time.Millisecond
	w, err := New(b.rdb, cfg)
	require.NoError(t, err)
	consumers := func() map[string]int64 {
		cs, err := b.rdb.XInfoConsumers(ctx, keys.Submissions(), group).Result()
		require.NoError(t, err)
		out := map[string]int64{}
		for _, c := range cs {
			out[c.Name] = c.Pending
		}
		return out
	}
	require.Eventually(t, func() bool {
		_, err := w.janitorPass(ctx, time.Hour)
		require.NoError(t, err)
		_, present := consumers()["gone-empty"]
		return !present
	}, 10*time.Second, 10*time.Millisecond, "the gone consumer is removed")
	require.Equal(t, map[string]int64{"gone-pending": 1, "jan": 0}, consumers())
	p, err := b.rdb.XPending(ctx, keys.Submissions(), group).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, p.Count, "the held entry is still pending")
	require.Equal(t, entry, p.Lower)
}
