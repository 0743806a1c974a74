package client_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// TestDeadPagesAcrossPartitionsWithEqualIDs: two partitions' dead-letter
// streams each hold an entry with the same stream id (ids are per stream:
// two dead-letterings in the same millisecond, in two partitions, both get
// <ms>-0). Paging Dead one entry at a time, After the last id seen, must
// show both. The merged page's After applies to every partition, so the
// second partition's entry with the id just seen is skipped for good.
// Seen failing: only dead-a was listed. No job is lost (the entry stays,
// and a read from the start shows it), but a paged listing or a paged
// RetryDead misses it. Fixed: each entry's Cursor holds one position per
// partition (as Subscription.Position), and After takes it.
func TestDeadPagesAcrossPartitionsWithEqualIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, ns := redistest.New(t)
	c, err := client.New(rdb, client.Config{Namespace: ns, Partitions: 2})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	for i, job := range []string{"dead-a", "dead-b"} {
		k, err := streams.NewKeys(streams.PartitionNamespace(ns, 2, i))
		require.NoError(t, err)
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: k.Dead(), ID: "1700000000000-0",
			Values: map[string]any{"job_id": job, "dead_reason": "poison"}}).Err())
	}
	seen := map[string]bool{}
	after := ""
	for range 4 {
		page, err := c.Dead(ctx, client.DeadOptions{After: after, Limit: 1})
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		seen[page[0].JobID] = true
		after = page[0].Cursor
	}
	require.Equal(t, map[string]bool{"dead-a": true, "dead-b": true}, seen, "paging Dead saw every dead letter")
}

// TestDeadCursorOnePartition: with one partition a dead letter's Cursor is
// its ID, so pages written before cursors existed (After = the last ID)
// keep working; an After naming another partition count is refused.
func TestDeadCursorOnePartition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, ns := redistest.New(t)
	c, err := client.New(rdb, client.Config{Namespace: ns})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	k, err := streams.NewKeys(ns)
	require.NoError(t, err)
	for i, job := range []string{"dead-1", "dead-2", "dead-3"} {
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: k.Dead(), ID: fmt.Sprintf("1700000000000-%d", i+1),
			Values: map[string]any{"job_id": job, "dead_reason": "poison"}}).Err())
	}
	page, err := c.Dead(ctx, client.DeadOptions{Limit: 2})
	require.NoError(t, err)
	require.Len(t, page, 2)
	for _, d := range page {
		require.Equal(t, d.ID, d.Cursor)
	}
	page, err = c.Dead(ctx, client.DeadOptions{After: page[1].ID})
	require.NoError(t, err)
	require.Len(t, page, 1)
	require.Equal(t, "dead-3", page[0].JobID)
	_, err = c.Dead(ctx, client.DeadOptions{After: "1-0,2-0"})
	require.ErrorContains(t, err, "names 2 partitions' positions, the namespace has 1")
	_, err = c.Dead(ctx, client.DeadOptions{After: "bogus"})
	require.ErrorContains(t, err, "After")
}
