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
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestRedisRestart kills Redis (SIGKILL, AOF on) while a worker holds jobs
// on Runpod, brings it back on the same port, and checks that the worker
// kept going: every job ends COMPLETED with one terminal event and one /run.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := redistest.StartWith(redistest.Options{Dir: dir, AppendOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := streams.New(rdb, streams.Config{Namespace: "restart"})
	require.NoError(t, err)
	b := &testBundle{rdb: rdb, ns: "restart", store: st, rp: newFakeRunpod()}

	cfg := b.config("survivor")
	cfg.MinIdle = 5 * time.Second // the outage must not look like a crash
	cfg.HeartbeatInterval = time.Second
	b.start(t, cfg)
	const n = 20
	ids := jobIDs("rs", n)
	for _, id := range ids {
		b.submit(t, id, `{"mock_delay":1500,"mock_return":"ok"}`, 0)
	}
	for _, id := range ids {
		b.waitRecord(t, id, 5*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	}

	srv.Kill()
	// Let every loop hit the outage for a moment.
	down := time.NewTimer(700 * time.Millisecond)
	<-down.C
	srv2, err := redistest.StartWith(redistest.Options{Port: srv.Port, Dir: dir, AppendOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { srv2.Stop() })

	for _, id := range ids {
		b.waitState(t, id, workflow.StateCompleted, 15*time.Second)
	}
	evs := b.events(t)
	for _, id := range ids {
		cnt, _ := terminalEvents(evs[id])
		require.Equal(t, 1, cnt, fmt.Sprintf("job %s: terminal events", id))
	}
	runs, _, _ := b.rp.counts()
	require.Equal(t, n, runs)
	pending, err := st.Pending(context.Background())
	require.NoError(t, err)
	require.Zero(t, pending)
}
