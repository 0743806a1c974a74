package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// TestPartitionsFollowTheWorkers: without --partitions the submitter uses
// the count the workers recorded (the job lands in its id's partition);
// with another count it refuses, naming both, before writing anything.
func TestPartitionsFollowTheWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ps, err := streams.NewPartitions(b.rdb, streams.Config{Namespace: b.ns}, 3)
	require.NoError(t, err)
	require.NoError(t, ps.CheckPartitions(context.Background(), true))

	r := b.run(t, "", "submit", "--id", "job-1", "--input", `{}`)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, 2, streams.PartitionOf("job-1", 3))
	rec, err := ps.At(2).Get(context.Background(), "job-1")
	require.NoError(t, err)
	require.Equal(t, "SUBMITTED", rec.State)

	r = b.run(t, "", "--partitions", "2", "submit", "--id", "job-2", "--input", `{}`)
	require.NotEqual(t, 0, r.code)
	require.Contains(t, r.stderr, "has 3 partitions")
	require.Contains(t, r.stderr, "configured with 2")
	for _, st := range ps.All() {
		_, err := st.Get(context.Background(), "job-2")
		require.ErrorIs(t, err, streams.ErrNotFound, "nothing written")
	}
	r = b.run(t, "", "--partitions", "3", "get", "job-1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"job-1"`)
}
