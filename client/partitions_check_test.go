package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// TestWrongPartitionsRefusedOnEveryEntryPoint: the workers recorded P = 3;
// a library client configured with P = 2 (that never called
// CheckPartitions) must be refused on every entry point, with an error
// naming the setting and both counts, before it writes anything. Seen
// failing before: Submit succeeded, writing the job into the partition P = 2
// picks (where a P = 3 worker dead-letters it as misrouted, or no worker
// reads), and Get, Cancel, AwaitResult and Events read the wrong keys.
func TestWrongPartitionsRefusedOnEveryEntryPoint(t *testing.T) {
	t.Parallel()
	rdb, ns := redistest.New(t)
	ps, err := streams.NewPartitions(rdb, streams.Config{Namespace: ns}, 3)
	require.NoError(t, err)
	require.NoError(t, ps.CheckPartitions(context.Background(), true))
	c, err := client.New(rdb, client.Config{Namespace: ns, Partitions: 2})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	refused := func(what string, err error) {
		t.Helper()
		require.ErrorIs(t, err, client.ErrPartitionsMismatch, what)
		require.ErrorContains(t, err, "Config.Partitions", what)
		require.ErrorContains(t, err, "has 3 partitions", what)
		require.ErrorContains(t, err, "configured with 2", what)
	}
	_, err = c.Submit(ctx, client.SubmitOptions{ClientJobID: "wrong-p", Input: map[string]int{"x": 1}})
	refused("Submit", err)
	_, err = c.Get(ctx, "wrong-p")
	refused("Get", err)
	_, err = c.Cancel(ctx, "wrong-p")
	refused("Cancel", err)
	_, err = c.RequestCancel(ctx, "wrong-p")
	refused("RequestCancel", err)
	_, err = c.AwaitResult(ctx, "wrong-p")
	refused("AwaitResult", err)
	for _, err := range c.Events(ctx, client.EventsOptions{From: client.FromStart, StopAtEnd: true}) {
		refused("Events", err)
		break
	}
	_, err = c.NewSubscription(ctx, client.EventsOptions{})
	refused("NewSubscription", err)
	_, err = c.Retry(ctx, "wrong-p")
	refused("Retry", err)
	_, err = c.Dead(ctx, client.DeadOptions{})
	refused("Dead", err)
	_, err = c.List(ctx, client.ListOptions{})
	refused("List", err)
	_, err = c.Audit(ctx, client.AuditOptions{})
	refused("Audit", err)

	// Nothing was written under the wrong layout.
	wrong, err := streams.NewPartitions(rdb, streams.Config{Namespace: ns}, 2)
	require.NoError(t, err)
	for i, st := range wrong.All() {
		_, err := st.Get(ctx, "wrong-p")
		require.ErrorIs(t, err, streams.ErrNotFound, "partition %d of 2", i)
	}
}

// TestRightPartitionsPassWithoutRecord: a client whose P matches, or a
// namespace no worker recorded yet, is not refused.
func TestRightPartitionsPassWithoutRecord(t *testing.T) {
	t.Parallel()
	rdb, ns := redistest.New(t)
	c, err := client.New(rdb, client.Config{Namespace: ns, Partitions: 2})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	_, err = c.Submit(ctx, client.SubmitOptions{ClientJobID: "right-p", Input: map[string]int{"x": 1}})
	require.NoError(t, err, "nothing recorded: accepted")
	ps, err := streams.NewPartitions(rdb, streams.Config{Namespace: ns}, 2)
	require.NoError(t, err)
	require.NoError(t, ps.CheckPartitions(ctx, true))
	_, err = c.Get(ctx, "right-p")
	require.NoError(t, err)
}
