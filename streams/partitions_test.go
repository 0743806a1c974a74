package streams

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// TestPartitionOfVectors pins the routing function raw producers implement
// (docs/wire-format.md lists the same vectors): CRC-32/IEEE of the id's
// bytes, modulo P.
func TestPartitionOfVectors(t *testing.T) {
	t.Parallel()
	for _, v := range []struct {
		id      string
		p, want int
	}{
		{"job-1", 6, 5}, {"job-1", 4, 3}, {"job-2", 6, 3}, {"hello", 6, 4},
		{"order-42", 6, 4}, {"order-42", 1, 0}, {"anything", 0, 0}, {"", 6, 0},
	} {
		require.Equal(t, v.want, PartitionOf(v.id, v.p), "PartitionOf(%q, %d)", v.id, v.p)
	}
}

// TestPartitionOfSpreads checks that sequential ids spread evenly enough
// that no partition carries much more than its share.
func TestPartitionOfSpreads(t *testing.T) {
	t.Parallel()
	const p, n = 6, 60_000
	counts := make([]int, p)
	for i := range n {
		counts[PartitionOf(fmt.Sprintf("job-%d", i), p)]++
	}
	for i, c := range counts {
		require.InDelta(t, n/p, c, n/p/20, "partition %d has %d of %d", i, c, n)
	}
}

// TestKeyNamesP1Golden: one partition keeps today's key names exactly, so
// existing data and raw-XADD producers go on working.
func TestKeyNamesP1Golden(t *testing.T) {
	t.Parallel()
	ps, err := NewPartitions(nil, Config{}, 1)
	require.NoError(t, err)
	require.Equal(t, 1, ps.Count())
	k := ps.At(0).Keys()
	require.Same(t, ps.At(0), ps.For("any-id"))
	require.Equal(t, []string{
		"{runpod}:submissions", "{runpod}:events", "{runpod}:dead", "{runpod}:job:j1",
		"{runpod}:dedupe:h1", "{runpod}:orphans", "{runpod}:workers", "{runpod}:control",
		"{runpod}:budget:ep:run", "{runpod}:breaker:ep", "{runpod}:*",
	}, []string{
		k.Submissions(), k.Events(), k.Dead(), k.Job("j1"),
		k.Dedupe("h1"), k.Orphans(), k.Workers(), k.Control(),
		k.Budget("ep", "run"), k.Breaker("ep"), k.Pattern(),
	})
	require.Equal(t, "runpod", k.Namespace())
}

// TestKeyNamesPartitioned: partition i of ns lives under the hash tag
// {ns:i}, and a job's keys are in the partition its id picks.
func TestKeyNamesPartitioned(t *testing.T) {
	t.Parallel()
	ps, err := NewPartitions(nil, Config{Namespace: "q"}, 6)
	require.NoError(t, err)
	require.Equal(t, "{q:2}:submissions", ps.At(2).Keys().Submissions())
	require.Equal(t, "{q:5}:events", ps.At(5).Keys().Events())
	require.Equal(t, "{q:0}:control", ps.At(0).Keys().Control())
	require.Equal(t, "{q:5}:job:job-1", ps.For("job-1").Keys().Job("job-1"))
	require.Equal(t, "{q}:meta", ps.At(0).Keys().Meta()[:0]+mustKeys(t, "q").Meta())
	_, err = NewPartitions(nil, Config{}, 0)
	require.Error(t, err)
	_, err = NewPartitions(nil, Config{}, MaxPartitions+1)
	require.Error(t, err)
}

func mustKeys(t *testing.T, ns string) Keys {
	k, err := NewKeys(ns)
	require.NoError(t, err)
	return k
}

// TestCheckPartitions: a worker records P when none is recorded; a process
// configured with another count is refused with both counts named; a
// producer accepts an unrecorded count without writing it.
func TestCheckPartitions(t *testing.T) {
	t.Parallel()
	rdb, ns := redistest.New(t)
	ctx := context.Background()
	p6, err := NewPartitions(rdb, Config{Namespace: ns}, 6)
	require.NoError(t, err)
	require.NoError(t, p6.CheckPartitions(ctx, false))
	n, err := p6.StoredPartitions(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "a producer's check records nothing")

	require.NoError(t, p6.CheckPartitions(ctx, true))
	n, err = p6.StoredPartitions(ctx)
	require.NoError(t, err)
	require.Equal(t, 6, n)
	require.NoError(t, p6.CheckPartitions(ctx, true), "the same count again")

	p1, err := NewPartitions(rdb, Config{Namespace: ns}, 1)
	require.NoError(t, err)
	for _, record := range []bool{false, true} {
		err = p1.CheckPartitions(ctx, record)
		require.True(t, errors.Is(err, ErrPartitionsMismatch), "%v", err)
		require.ErrorContains(t, err, "has 6 partitions")
		require.ErrorContains(t, err, "configured with 1")
	}
}

// TestNamespaceCollidingWithAPartition: namespace "x:1" (P = 1) and
// partition 1 of namespace "x" (P = 2) are the same keys ({x:1}:...):
// one pool's workers would read the other's submissions (running them on
// the wrong endpoint, or dead-lettering them as in the wrong partition with
// their records left SUBMITTED). Whichever worker starts second refuses.
func TestNamespaceCollidingWithAPartition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, ns := redistest.New(t)
	for _, partitionedFirst := range []bool{true, false} {
		base := fmt.Sprintf("%s-%v", ns, partitionedFirst)
		split, err := NewPartitions(rdb, Config{Namespace: base}, 2)
		require.NoError(t, err)
		alone, err := NewPartitions(rdb, Config{Namespace: base + ":1"}, 1)
		require.NoError(t, err)
		first, second := split, alone
		if !partitionedFirst {
			first, second = alone, split
		}
		require.NoError(t, first.CheckPartitions(ctx, true))
		require.NoError(t, first.CheckPartitions(ctx, true), "a restart of the first is fine")
		err = second.CheckPartitions(ctx, true)
		require.ErrorIs(t, err, ErrPartitionsMismatch, "partitioned first: %v", partitionedFirst)
		require.ErrorContains(t, err, base+":1")
	}
}
