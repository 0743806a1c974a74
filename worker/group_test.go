package worker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestLostGroupIsRecreated: Redis loses the namespace's data while a worker
// runs (as after a failover to an empty replica: here every key of the
// namespace is deleted). The fetcher gets NOGROUP; it recreates the group,
// says so, counts it, and later submissions complete. Before the fix the
// fetcher failed with NOGROUP on every read and nothing ran again until
// the worker was restarted.
func TestLostGroupIsRecreated(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("w1")
	var hooked atomic.Int64
	cfg.Hooks.OnGroupRecreated = func() { hooked.Add(1) }
	r := b.start(t, cfg)

	b.submit(t, "before", `{"mock_delay":10}`, 0)
	b.waitState(t, "before", workflow.StateCompleted, 10*time.Second)

	redistest.DeleteNamespace(b.rdb, b.ns) // stream, group, records: all gone
	// The fetcher's blocked read returns within its block time and finds no group.
	require.Eventually(t, func() bool { return r.w.Stats().GroupsRecreated >= 1 }, 15*time.Second, 10*time.Millisecond,
		"the worker did not recreate the consumer group")
	require.GreaterOrEqual(t, hooked.Load(), int64(1))

	b.submit(t, "after", `{"mock_delay":10}`, 0)
	b.waitState(t, "after", workflow.StateCompleted, 10*time.Second)
	groups, err := b.rdb.XInfoGroups(context.Background(), b.store.Keys().Submissions()).Result()
	require.NoError(t, err)
	require.Len(t, groups, 1)
}
