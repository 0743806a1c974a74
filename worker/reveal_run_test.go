package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// beforeReveal runs hook (once) just before a RevealRunpodJob reaches Redis.
type beforeReveal struct {
	*streams.Store
	hook func()
}

func (s *beforeReveal) RevealRunpodJob(ctx context.Context, r streams.Reveal, now time.Time) (streams.RevealResult, error) {
	if h := s.hook; h != nil {
		s.hook = nil
		h()
	}
	return s.Store.RevealRunpodJob(ctx, r, now)
}

// TestRevealForAnOldRunLeavesTheNewRunAlone: run 1 of a job sent /run
// twice (attempt 1 uncertain) and ended FAILED on attempt 2's Runpod job.
// Attempt 1's Runpod job, never learned, finishes later and its webhook
// arrives; between the worker's read of the record (run 1, finished) and
// the reveal, the job is retried (run 2, a new entry). The reveal names run
// 1's entry and must not write into run 2: no runpod_job_revealed event in
// run 2's history, no field of run 2 changed, and run 2's outcome left to
// run 2.
func TestRevealForAnOldRunLeavesTheNewRunAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	require.NoError(t, b.store.EnsureGroup(ctx))
	res, err := b.store.Submit(ctx, streams.Submission{JobID: "r", Input: []byte(`{"x":1}`)},
		streams.SubmitOpts{PersistInput: true})
	require.NoError(t, err)
	require.True(t, res.Created)
	msgs, err := b.store.Read(ctx, "w1", 1, 0)
	require.NoError(t, err)
	adm, err := b.store.Admit(ctx, []streams.AdmitRequest{streams.NewAdmitRequest(msgs[0], 1<<20)},
		streams.AdmitOpts{Consumer: "w1", MaxDeliveries: 5, ResultTTL: time.Hour, Now: time.Now()})
	require.NoError(t, err)
	run1 := adm[0].Record
	now := time.Now()
	cp := streams.Checkpoint{JobID: "r", Owner: "w1", Epoch: run1.Epoch}
	for _, c := range []streams.Checkpoint{
		{Step: "SUBMITTING", Attempts: 1},
		{Step: "SUBMITTING", Attempts: 1, UncertainAttempt: 1},
		{Step: "SUBMITTING", Attempts: 2},
		{Step: "POLL", State: "QUEUED", Attempts: 2, RunpodID: "rp-2"},
	} {
		c.JobID, c.Owner, c.Epoch = cp.JobID, cp.Owner, cp.Epoch
		require.NoError(t, b.store.Checkpoint(ctx, c, now))
	}
	errs, err := b.store.Finalize(ctx, []streams.Outcome{{JobID: "r", Entry: run1.Entry, Owner: "w1", Epoch: run1.Epoch,
		State: "FAILED", Error: "boom", RunpodID: "rp-2", InputHashKnown: true}}, streams.FinalizeOpts{ResultTTL: time.Hour, Now: now})
	require.NoError(t, err)
	require.NoError(t, errs[0])

	st := &beforeReveal{Store: b.store}
	var run2 streams.Record
	st.hook = func() {
		_, err := b.store.Retry(ctx, "r", nil, time.Time{})
		require.NoError(t, err)
		run2 = b.get(t, "r")
	}
	cfg := b.config("w1")
	cfg.Webhook = Webhook{URL: "http://127.0.0.1:1/hook", Key: SecretKey(testWebhookKey)}
	w := newWorker(st, cfg.WithDefaults())
	what, err := w.completeByWebhook(ctx, "r", run1.Entry, 1,
		workflow.RunpodJob{ID: "rp-1", Status: workflow.RunpodCompleted, ExecutionTime: 40, Output: []byte(`"late"`)})
	require.NoError(t, err)
	require.NotEqual(t, hookFinalized, what)
	require.NotEqual(t, hookWonReveal, what)

	require.NotEqual(t, run1.Entry, run2.Entry, "run 2 has its own entry")
	require.Equal(t, run2, b.get(t, "r"), "run 2's record is untouched")
	for _, e := range b.events(t)["r"] {
		if e.Run == 2 {
			require.NotEqual(t, streams.EventRunpodJobRevealed, e.Type, "run 1's Runpod job revealed in run 2's history")
		}
	}
}
