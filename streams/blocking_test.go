package streams

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// blockedClients is the server's count of clients inside a blocking command.
func blockedClients(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "clients").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "blocked_clients:"); ok {
			var n int
			_, err := fmt.Sscan(v, &n)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no blocked_clients in INFO clients")
	return 0
}

// TestBlockingReadsLeaveConnectionsForCommands: more blocking reads than
// the client has pooled connections (a worker's fetch loop per partition and
// a client's events reader per partition on one node) must not make every
// other command wait for a reader's BLOCK to end. Before, the readers took
// every connection of the pool: each release went straight to the next
// waiting reader, so a Get waited for a turn each time (about a BLOCK per
// command; on a 2-core machine a cluster node's pool is 10 connections, and
// a node carrying 4 of 6 partitions for 3 workers starved the failover
// test's Gets for minutes). Blocking reads now hold at most half the pool.
func TestBlockingReadsLeaveConnectionsForCommands(t *testing.T) {
	t.Parallel()
	base, ns := redistest.New(t)
	const poolSize = 4
	rdb := redis.NewClient(&redis.Options{Addr: base.Options().Addr, PoolSize: poolSize, Protocol: 2})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := New(rdb, Config{Namespace: ns})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, st.EnsureGroup(ctx))

	var wg sync.WaitGroup
	for i := range 2 * poolSize { // twice the pool: half read the jobs, half the events
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if i%2 == 0 {
					_, _ = st.Read(ctx, fmt.Sprintf("c%d", i), 1, 250*time.Millisecond)
				} else {
					_, _ = st.ReadEvents(ctx, "$", 1, 250*time.Millisecond)
				}
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	// The readers are in: as many blocked on the server as they may hold.
	require.Eventually(t, func() bool { return blockedClients(t, base) >= BlockingShare(poolSize) },
		time.Minute, 10*time.Millisecond)

	before := rdb.PoolStats().WaitCount
	for i := range 20 {
		gctx, gcancel := context.WithTimeout(ctx, time.Minute)
		_, err := st.Get(gctx, fmt.Sprintf("none-%d", i))
		gcancel()
		require.ErrorIs(t, err, ErrNotFound, "a Get among the blocking readers answers")
	}
	// Before, the Gets (and the readers beyond the pool) waited for a
	// turn; now the readers beyond their share wait outside the pool.
	require.Zero(t, rdb.PoolStats().WaitCount-before,
		"commands waited for a pooled connection held by blocking reads")
	require.LessOrEqual(t, blockedClients(t, base), BlockingShare(poolSize),
		"blocking reads hold at most their share of the pool")
}

// wrappedClient is a caller's wrapper around a go-redis client (tracing,
// metrics): not a type go-redis defines.
type wrappedClient struct{ *redis.Client }

// blockingLimitCount is how many clients currently have a limit.
func blockingLimitCount() int {
	n := 0
	blockingLimits.Range(func(any, any) bool { n++; return true })
	return n
}

// TestBlockingLimitsDoNotLeak: the limit of a client no one holds any more
// is dropped. Before, the global map kept one entry (and the client it was
// keyed by, with its pool) per client ever used: 50 clients built and closed
// left 50 entries however often the GC ran.
func TestBlockingLimitsDoNotLeak(t *testing.T) {
	base, ns := redistest.New(t)
	before := blockingLimitCount()
	func() {
		for range 50 {
			rdb := redis.NewClient(&redis.Options{Addr: base.Options().Addr, Protocol: 2})
			st, err := New(rdb, Config{Namespace: ns})
			require.NoError(t, err)
			_, err = st.ReadEvents(context.Background(), "$", 1, time.Millisecond)
			require.True(t, err == nil || err == redis.Nil, "%v", err)
			require.NoError(t, rdb.Close())
		}
	}()
	require.Eventually(t, func() bool { runtime.GC(); return blockingLimitCount() <= before },
		time.Minute, 10*time.Millisecond, "limits of dropped clients stay in the map")
}

// TestBlockingLimitForWrappedClient: a client go-redis does not define (a
// wrapper) gets a limit too. Before, it had none: its blocking reads could
// take its whole pool.
func TestBlockingLimitForWrappedClient(t *testing.T) {
	base, _ := redistest.New(t)
	inner := redis.NewClient(&redis.Options{Addr: base.Options().Addr, PoolSize: 6, Protocol: 2})
	t.Cleanup(func() { _ = inner.Close() })
	sem := blockingLimit(&wrappedClient{inner})
	require.NotNil(t, sem, "a wrapped client has no limit")
	require.Equal(t, BlockingShare(6), cap(sem), "the wrapper's limit follows the pool it wraps")
	w := &wrappedClient{inner}
	require.Equal(t, blockingLimit(w), blockingLimit(w), "one wrapper, one limit")
}
