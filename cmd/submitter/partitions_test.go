package main

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
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

// TestEventsResumeAcrossPartitions: each partition's events stream numbers
// its own entries, so a printed event's id alone cannot resume a
// partitioned namespace (it applies to every partition). Each line carries
// the position after it, one id per partition, and --from takes it. Seen
// failing before: the lines had no position, and --from the first event's
// id skipped partition 1's event of the same id.
func TestEventsResumeAcrossPartitions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ps, err := streams.NewPartitions(b.rdb, streams.Config{Namespace: b.ns}, 2)
	require.NoError(t, err)
	require.NoError(t, ps.CheckPartitions(ctx, true))
	for i, job := range []string{"ev-p0", "ev-p1"} {
		require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: ps.At(i).Keys().Events(), ID: "1700000000000-1",
			Values: []any{streams.EventFieldType, "submitted", streams.EventFieldJobID, job}}).Err())
	}
	r := b.run(t, "", "events")
	require.Equal(t, 0, r.code, r.stderr)
	evs := lines[map[string]any](t, r.stdout)
	require.Len(t, evs, 2)
	first, ok := evs[0]["position"].(string)
	require.True(t, ok, "each line names its position: %s", r.stdout)
	r = b.run(t, "", "events", "--from", first)
	require.Equal(t, 0, r.code, r.stderr)
	rest := lines[map[string]any](t, r.stdout)
	require.Len(t, rest, 1, "resuming after the first event prints the other: %s", r.stdout)
	require.NotEqual(t, evs[0]["clientJobId"], rest[0]["clientJobId"])
	require.Equal(t, evs[1]["position"], rest[0]["position"])
}
