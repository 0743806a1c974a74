package streams

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// TestBlockingReadStalledServer: a blocking read on a server that stops
// answering (its reply never comes, the connection stays open) ends
// BlockingSlack after its BLOCK on a client whose context deadlines reach
// the socket, with an error that says Redis did not answer, not the
// caller's deadline. go-redis alone waits BLOCK + 10 s: a worker kept
// reading from a silent master that long after its replica took over.
func TestBlockingReadStalledServer(t *testing.T) {
	t.Parallel()
	b := setup(t, backendRedis)
	p := redistest.NewProxy(t, b.rdb.Options().Addr)
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, DB: b.rdb.Options().DB,
		ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := New(rdb, Config{Namespace: b.keys.Namespace()})
	require.NoError(t, err)
	require.NoError(t, st.EnsureGroup(b.ctx))

	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	p.SwallowReplyAfter(func() { <-release }, "xreadgroup")
	_, err = st.Read(b.ctx, "c1", 10, 50*time.Millisecond)
	require.ErrorIs(t, err, errBlockingStalled)
	require.NoError(t, b.ctx.Err(), "the caller's context is still alive")
}
