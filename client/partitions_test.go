package client_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// partBundle is a client over a namespace of p partitions, with one stand-in
// worker per partition.
type partBundle struct {
	c       *client.Client
	ns      string
	workers []*fakeWorker
}

func setupParts(t *testing.T, p int) *partBundle {
	t.Helper()
	rdb, ns := redistest.New(t)
	c, err := client.New(rdb, client.Config{Namespace: ns, Partitions: p})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	b := &partBundle{c: c, ns: ns}
	for i := range p {
		b.workers = append(b.workers, newFakeWorker(t, rdb, streams.PartitionNamespace(ns, p, i)))
	}
	return b
}

func (b *partBundle) submitN(t *testing.T, prefix string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		_, err := b.c.Submit(context.Background(), client.SubmitOptions{ClientJobID: ids[i], Input: map[string]int{"i": i}})
		require.NoError(t, err)
	}
	return ids
}

// TestPartitionedAwaitAndEvents: jobs spread over 3 partitions are awaited
// (each on its partition's reader) and replayed by one subscription that
// reads every partition: each job's submitted and completed event, once.
func TestPartitionedAwaitAndEvents(t *testing.T) {
	t.Parallel()
	const p = 3
	b := setupParts(t, p)
	ctx := context.Background()
	ids := b.submitN(t, "aw", 30)
	perPart := make([]int, p)
	for _, id := range ids {
		perPart[streams.PartitionOf(id, p)]++
	}
	results := make(chan client.Result, len(ids))
	for _, id := range ids {
		go func() {
			r, err := b.c.AwaitResult(ctx, id)
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	for i, w := range b.workers {
		require.NotZero(t, perPart[i], "partition %d has jobs", i)
		recs := w.admit(ctx, perPart[i], streams.AdmitOpts{MaxDeliveries: 5, ResultTTL: 3600e9})
		for _, rec := range recs {
			require.Equal(t, i, streams.PartitionOf(rec.JobID, p), "job %s admitted from its partition", rec.JobID)
			w.finish(ctx, rec, workflow.StateCompleted, `{"ok":true}`, "")
		}
	}
	for range ids {
		r := <-results
		require.Equal(t, workflow.StateCompleted, r.Status, "%+v", r)
	}

	seen := map[string][]client.EventType{}
	for ev, err := range b.c.Events(ctx, client.EventsOptions{From: client.FromStart, StopAtEnd: true}) {
		require.NoError(t, err)
		seen[ev.JobID] = append(seen[ev.JobID], ev.Type)
		require.Equal(t, streams.PartitionOf(ev.JobID, p), ev.Partition, "event %s of %s names its partition", ev.ID, ev.JobID)
	}
	for _, id := range ids {
		require.Equal(t, client.EventSubmitted, seen[id][0], id)
		require.Equal(t, client.EventCompleted, seen[id][len(seen[id])-1], id)
	}
	rep, err := b.c.Audit(ctx, client.AuditOptions{})
	require.NoError(t, err)
	require.True(t, rep.OK(), "%+v", rep.Violations)
	require.Equal(t, len(ids), rep.Jobs)
}

// TestPartitionedPositionResume: a subscription's position names every
// partition; a new client (another process, after a restart) resuming from
// it delivers exactly the events not read yet, in every partition: no gap,
// no repeat.
func TestPartitionedPositionResume(t *testing.T) {
	t.Parallel()
	const p = 4
	b := setupParts(t, p)
	ctx := context.Background()
	sub, err := b.c.NewSubscription(ctx, client.EventsOptions{StopAtEnd: true})
	require.NoError(t, err)
	start := sub.Position()
	require.Len(t, strings.Split(start, ","), p)
	ids := b.submitN(t, "pos", 40)

	got := map[string]int{}
	for ev, err := range sub.Events(ctx) {
		require.NoError(t, err)
		got[ev.JobID]++
		if len(got) == 15 {
			break
		}
	}
	pos := sub.Position()
	require.NotEqual(t, start, pos)

	other, err := client.New(redistest.Client(t), client.Config{Namespace: b.ns, Partitions: p})
	require.NoError(t, err)
	defer other.Close()
	for ev, err := range other.Events(ctx, client.EventsOptions{From: pos, StopAtEnd: true}) {
		require.NoError(t, err)
		got[ev.JobID]++
	}
	for _, id := range ids {
		require.Equal(t, 1, got[id], "job %s: submitted events delivered", id)
	}
	require.Len(t, got, len(ids))

	// A position for another partition count is refused.
	_, err = other.NewSubscription(ctx, client.EventsOptions{From: "1-0,2-0"})
	require.ErrorContains(t, err, "names 2 partitions' positions, the namespace has 4")
}

// TestPartitionedList: List's cursor walks every partition's records.
func TestPartitionedList(t *testing.T) {
	t.Parallel()
	b := setupParts(t, 3)
	ids := b.submitN(t, "ls", 25)
	listed := map[string]bool{}
	cursor := uint64(0)
	for pages := 0; ; pages++ {
		require.Less(t, pages, 100)
		page, err := b.c.List(context.Background(), client.ListOptions{Limit: 4, Cursor: cursor})
		require.NoError(t, err)
		for _, j := range page.Jobs {
			listed[j.ID] = true
		}
		if cursor = page.NextCursor; cursor == 0 {
			break
		}
	}
	for _, id := range ids {
		require.True(t, listed[id], "job %s listed", id)
	}
	st, err := b.c.Stats(context.Background(), client.StatsOptions{})
	require.NoError(t, err)
	require.EqualValues(t, len(ids), st.Backlog, "the backlog of every partition")
}

// TestClientPartitionMismatch: a client configured with another P than the
// one the workers recorded is refused, with both counts named.
func TestClientPartitionMismatch(t *testing.T) {
	t.Parallel()
	rdb, ns := redistest.New(t)
	ps, err := streams.NewPartitions(rdb, streams.Config{Namespace: ns}, 3)
	require.NoError(t, err)
	require.NoError(t, ps.CheckPartitions(context.Background(), true))
	c, err := client.New(rdb, client.Config{Namespace: ns, Partitions: 2})
	require.NoError(t, err)
	defer c.Close()
	err = c.CheckPartitions(context.Background())
	require.ErrorIs(t, err, client.ErrPartitionsMismatch)
	require.ErrorContains(t, err, "has 3 partitions")
	n, err := client.RecordedPartitions(context.Background(), rdb, ns)
	require.NoError(t, err)
	require.Equal(t, 3, n)
}
