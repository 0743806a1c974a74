package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// testBundle is one test's Redis, namespace, client and stand-in worker.
type testBundle struct {
	rdb    *redis.Client
	ns     string
	client *client.Client
	worker *fakeWorker
}

func setup(t *testing.T, cfg client.Config) *testBundle {
	t.Helper()
	rdb, ns := redistest.New(t)
	cfg.Namespace = ns
	c, err := client.New(rdb, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return &testBundle{rdb: rdb, ns: ns, client: c, worker: newFakeWorker(t, rdb, ns)}
}

// fakeWorker plays the worker's part through package streams (admit,
// checkpoint, finalize), so client tests need neither package worker nor
// Runpod.
type fakeWorker struct {
	t        testing.TB
	store    *streams.Store
	consumer string
}

func newFakeWorker(t testing.TB, rdb redis.UniversalClient, ns string) *fakeWorker {
	t.Helper()
	store, err := streams.New(rdb, streams.Config{Namespace: ns})
	require.NoError(t, err)
	require.NoError(t, store.EnsureGroup(context.Background()))
	return &fakeWorker{t: t, store: store, consumer: "fake-worker"}
}

// admit reads and admits submissions until n jobs are admitted, returning
// their records by job id. Bounded by a deadline.
func (w *fakeWorker) admit(ctx context.Context, n int, opts streams.AdmitOpts) map[string]streams.Record {
	w.t.Helper()
	opts.Consumer = w.consumer
	got := map[string]streams.Record{}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n {
		require.True(w.t, time.Now().Before(deadline), "want %d jobs admitted, have %d", n, len(got))
		msgs, err := w.store.Read(ctx, w.consumer, n-len(got), 50*time.Millisecond)
		require.NoError(w.t, err)
		if len(msgs) == 0 {
			continue
		}
		reqs := make([]streams.AdmitRequest, len(msgs))
		for i, m := range msgs {
			reqs[i] = streams.NewAdmitRequest(m, 0)
		}
		res, err := w.store.Admit(ctx, reqs, opts)
		require.NoError(w.t, err)
		for i, r := range res {
			if r.Status == streams.Admitted {
				got[r.Record.JobID] = r.Record
			} else {
				// Count non-running outcomes too, keyed by entry, so callers
				// waiting for an alias or poison entry see it handled.
				got["entry:"+msgs[i].ID] = streams.Record{Entry: msgs[i].ID, State: r.Status.String()}
			}
		}
	}
	return got
}

// accept records that Runpod accepted the job (QUEUED, with its id).
func (w *fakeWorker) accept(ctx context.Context, rec streams.Record, runpodID string) {
	w.t.Helper()
	err := w.store.Checkpoint(ctx, streams.Checkpoint{
		JobID: rec.JobID, Owner: rec.Owner, Epoch: rec.Epoch, Step: string(workflow.StepPoll), State: string(workflow.StateQueued),
		RunpodID: runpodID, RunpodStatus: string(workflow.RunpodInQueue),
		Event: &streams.EventInput{Type: streams.EventQueued, Payload: streams.EventPayload{RunpodID: runpodID}},
	}, time.Now())
	require.NoError(w.t, err)
}

// progress records a Runpod status change.
func (w *fakeWorker) progress(ctx context.Context, rec streams.Record, st workflow.State) {
	w.t.Helper()
	err := w.store.Checkpoint(ctx, streams.Checkpoint{
		JobID: rec.JobID, Owner: rec.Owner, Epoch: rec.Epoch, State: string(st),
		Event: &streams.EventInput{Type: streams.EventProgress},
	}, time.Now())
	require.NoError(w.t, err)
}

// finish writes the terminal outcome, as the worker's finalize does.
func (w *fakeWorker) finish(ctx context.Context, rec streams.Record, st workflow.State, output, errText string) {
	w.t.Helper()
	w.finishMany(ctx, []streams.Record{rec}, st, output, errText)
}

func (w *fakeWorker) finishMany(ctx context.Context, recs []streams.Record, st workflow.State, output, errText string) {
	w.t.Helper()
	outs := make([]streams.Outcome, len(recs))
	for i, rec := range recs {
		outs[i] = streams.Outcome{JobID: rec.JobID, Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch, State: string(st),
			Error: errText, RunpodID: rec.RunpodID}
		if output != "" {
			outs[i].Output = []byte(output)
		}
	}
	errs, err := w.store.Finalize(ctx, outs, streams.FinalizeOpts{ResultTTL: time.Hour})
	require.NoError(w.t, err)
	for i, e := range errs {
		require.NoError(w.t, e, "finalize %s", recs[i].JobID)
	}
}

// submit submits a job with a small JSON input and requires success.
func (b *testBundle) submit(t *testing.T, id string) client.SubmitResult {
	t.Helper()
	res, err := b.client.Submit(context.Background(), client.SubmitOptions{ClientJobID: id, Input: map[string]any{"prompt": id}})
	require.NoError(t, err)
	return res
}
