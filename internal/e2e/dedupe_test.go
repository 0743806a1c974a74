package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestDedupe: with dedupe on, the same input hash answers with the live job
// (client and raw XADD alike), then with the completed job; after a job with
// a hash FAILED, the same hash runs again as a new job. The simulator must
// see one Runpod job per job that really ran: a dedupe that does not hold
// creates more, and a dedupe key not released after FAILED makes the retry
// answer with the failed job.
func TestDedupe(t *testing.T) {
	t.Parallel()
	e := newEnv(t, runpodsim.Config{})
	ctx := context.Background()
	cfg := e.workerConfig("dd", e.runpod())
	cfg.Dedupe = true
	e.startWorker(cfg)
	submit := func(id, hash string, input map[string]any) client.SubmitResult {
		t.Helper()
		res, err := e.cli.Submit(ctx, client.SubmitOptions{ClientJobID: id, InputHash: hash, Input: jobInput(id, input)})
		require.NoError(t, err)
		return res
	}

	live := submit("dd-live", "sha256:aaa", map[string]any{"mock_delay": 1500, "mock_return": "first"})
	require.False(t, live.Deduplicated)
	_, err := e.store.Get(ctx, "dd-live")
	require.NoError(t, err)

	// While dd-live runs: the client gets dd-live back...
	again := submit("dd-again", "sha256:aaa", map[string]any{"mock_return": "second"})
	require.True(t, again.Deduplicated)
	require.Equal(t, "dd-live", again.ClientJobID)
	require.False(t, again.State.Terminal(), "answered by the live job")
	// ...and a raw producer's submission becomes an alias of it.
	e.xadd(streams.SubmissionValues(streams.Submission{JobID: "dd-raw", InputHash: "sha256:aaa",
		Input: jobInput("dd-raw", map[string]any{"mock_return": "third"})})...)
	eventually(t, 10*time.Second, func() (bool, string) {
		rec, err := e.record("dd-raw")
		return err == nil && rec.AliasOf == "dd-live", "dd-raw alias of " + rec.AliasOf
	})
	out := e.await("dd-raw")
	require.Equal(t, "dd-live", out.ClientJobID, "an alias resolves to the live job's outcome")
	require.Equal(t, workflow.StateCompleted, out.Status)
	require.JSONEq(t, `"first"`, string(out.Output))

	// Completed: the hash still answers with it.
	later := submit("dd-later", "sha256:aaa", map[string]any{"mock_return": "fourth"})
	require.True(t, later.Deduplicated)
	require.Equal(t, "dd-live", later.ClientJobID)
	require.Equal(t, workflow.StateCompleted, later.State)

	// A FAILED job releases its hash: the same hash runs again.
	failed := submit("dd-fail", "sha256:bbb", map[string]any{"mock_error": "boom"})
	require.False(t, failed.Deduplicated)
	res := e.await("dd-fail")
	require.Equal(t, workflow.StateFailed, res.Status)
	require.Contains(t, res.Error, "boom")
	retry := submit("dd-retry", "sha256:bbb", map[string]any{"mock_return": "ok"})
	require.False(t, retry.Deduplicated, "after FAILED the hash may run again")
	require.Equal(t, "dd-retry", retry.ClientJobID)
	res = e.await("dd-retry")
	require.Equal(t, workflow.StateCompleted, res.Status)

	ids := []string{"dd-live", "dd-fail", "dd-retry"}
	recs := e.waitTerminal(ids, 10*time.Second)
	e.audit(ids)
	e.checkRunpodSide(recs, true)
	sims := e.simJobs()
	require.Len(t, sims, len(ids), "Runpod jobs only for the jobs that really ran: %v", sortedKeys(sims))
	for _, dup := range []string{"dd-again", "dd-later"} {
		_, err := e.store.Get(ctx, dup)
		require.True(t, errors.Is(err, streams.ErrNotFound), "a deduplicated client submission creates no job: %s %v", dup, err)
	}
}
