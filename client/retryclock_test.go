package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestRetryDeadlineOnRedisClock (review break7, finding 6): issue 7 item 7
// made deadlines come from Redis's clock, but Retry (retry.lua, `submitter
// retry`) still stamped the new run with the caller's clock: an operator
// whose clock is 2 h behind retries a 1 h job, and its new deadline is an
// hour in the past on every worker's clock: the run ends TIMED_OUT at once
// (and its updated_ms and retried event are two hours off). The new run's
// deadline is its time budget from Redis's now.
func TestRetryDeadlineOnRedisClock(t *testing.T) {
	t.Parallel()
	b := setup(t, client.Config{PersistInput: true})
	ctx := context.Background()
	_, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "rc", Input: map[string]any{"p": 1}, Timeout: time.Hour})
	require.NoError(t, err)
	recs := b.worker.admit(ctx, 1, streams.AdmitOpts{})
	b.worker.finish(ctx, recs["rc"], workflow.StateFailed, "", "boom")

	client.SetClock(b.client, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	_, err = b.client.Retry(ctx, "rc")
	require.NoError(t, err)
	redisNow, err := b.rdb.Time(ctx).Result()
	require.NoError(t, err)
	rec, err := b.worker.store.Get(ctx, "rc")
	require.NoError(t, err)
	require.Greater(t, rec.DeadlineMs, redisNow.Add(59*time.Minute).UnixMilli(),
		"the retried run has its hour from Redis's now (deadline %s, Redis now %s)",
		time.UnixMilli(rec.DeadlineMs).UTC(), redisNow.UTC())
}

// TestRetriedJobHoldsItsDedupeKey (review break7, finding 7): with dedupe,
// a FAILED job releases its input hash (it may run again), and Retry makes
// it live again, but did not take the hash back: a new submission of the
// same input then created a second job running beside the retried one
// (guarantee 4: the same input hash answers the live job), and that
// second job, not the retried one, held the hash afterwards. The retried
// run takes its hash back when nobody else holds it.
func TestRetriedJobHoldsItsDedupeKey(t *testing.T) {
	t.Parallel()
	b := setup(t, client.Config{PersistInput: true, Dedupe: true})
	ctx := context.Background()
	in := map[string]any{"p": "same"}
	_, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "dd-a", Input: in, InputHash: "h-same"})
	require.NoError(t, err)
	recs := b.worker.admit(ctx, 1, streams.AdmitOpts{Dedupe: true})
	b.worker.finish(ctx, recs["dd-a"], workflow.StateFailed, "", "boom")

	_, err = b.client.Retry(ctx, "dd-a")
	require.NoError(t, err)
	res, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "dd-b", Input: in, InputHash: "h-same"})
	require.NoError(t, err)
	require.True(t, res.Deduplicated, "dd-a runs again with this input: the same hash answers it (got %+v)", res)
	require.Equal(t, "dd-a", res.ClientJobID)
}
