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
