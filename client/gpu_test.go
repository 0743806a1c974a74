package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// TestJobTimingsAndGPUStats: Get shows Runpod's delayTime, executionTime and
// workerId and the finalizing worker; Stats sums GPU seconds per endpoint,
// once per run however often the outcome is written.
func TestJobTimingsAndGPUStats(t *testing.T) {
	t.Parallel()
	b := setup(t, client.Config{})
	ctx := context.Background()
	b.submit(t, "g1")
	b.submit(t, "g2")
	recs := b.worker.admit(ctx, 2, streams.AdmitOpts{})
	var outs []streams.Outcome
	for i, id := range []string{"g1", "g2"} {
		r := recs[id]
		outs = append(outs, streams.Outcome{JobID: id, Entry: r.Entry, Owner: r.Owner, Epoch: r.Epoch, State: "COMPLETED",
			Output: []byte(`1`), RunpodID: "rp-" + id, DelayMs: 250, ExecMs: int64(1500 * (i + 1)),
			RunpodWorkerID: "gpu-" + id, Endpoint: "ep-a"})
	}
	for range 2 { // the second write is a retry whose first reply was lost
		errs, err := b.worker.store.Finalize(ctx, outs, streams.FinalizeOpts{ResultTTL: time.Hour})
		require.NoError(t, err)
		require.Equal(t, []error{nil, nil}, errs)
	}

	j, err := b.client.Get(ctx, "g2")
	require.NoError(t, err)
	require.EqualValues(t, 250, j.DelayMs)
	require.EqualValues(t, 3000, j.ExecutionMs)
	require.Equal(t, "gpu-g2", j.RunpodWorkerID)
	require.Equal(t, "fake-worker", j.FinalizedBy)

	st, err := b.client.Stats(ctx, client.StatsOptions{})
	require.NoError(t, err)
	require.Equal(t, map[string]client.GPUUsage{"ep-a": {Seconds: 4.5, Runs: 2}}, st.GPU)
}

// TestErrorJSONInGetAndAwait: Runpod's error object reaches Get, AwaitResult
// and the failed event as JSON, with the readable message in Error.
func TestErrorJSONInGetAndAwait(t *testing.T) {
	t.Parallel()
	b := setup(t, client.Config{})
	ctx := context.Background()
	b.submit(t, "ej")
	r := b.worker.admit(ctx, 1, streams.AdmitOpts{})["ej"]
	obj := `{"code":"E42","message":"quota exceeded"}`
	errs, err := b.worker.store.Finalize(ctx, []streams.Outcome{{JobID: "ej", Entry: r.Entry, Owner: r.Owner, Epoch: r.Epoch,
		State: "FAILED", Error: "quota exceeded", ErrorJSON: []byte(obj), RunpodID: "rp-ej"}}, streams.FinalizeOpts{ResultTTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, errs[0])
	j, err := b.client.Get(ctx, "ej")
	require.NoError(t, err)
	require.Equal(t, "quota exceeded", j.Error)
	require.JSONEq(t, obj, string(j.ErrorJSON))
	res, err := b.client.AwaitResult(ctx, "ej")
	require.NoError(t, err)
	require.JSONEq(t, obj, string(res.ErrorJSON))
}

// TestStreamChunkEvents: the progress events of a streaming job's chunks
// reach subscribers with their index, in order.
func TestStreamChunkEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, client.Config{})
	ctx := context.Background()
	b.submit(t, "sc")
	r := b.worker.admit(ctx, 1, streams.AdmitOpts{})["sc"]
	n, err := b.worker.store.AppendChunks(ctx, streams.Chunks{JobID: "sc", Owner: r.Owner, Epoch: r.Epoch, RunpodID: "rp-sc",
		Outputs: [][]byte{[]byte(`"tok1"`), []byte(`"tok2"`)}}, time.Now())
	require.NoError(t, err)
	require.Equal(t, 2, n)
	evs := collect(t, b.client, client.EventsOptions{From: client.FromStart, JobID: "sc"})
	require.Len(t, evs, 3)
	for i, ev := range evs[1:] {
		require.Equal(t, client.EventProgress, ev.Type)
		require.NotNil(t, ev.Chunk)
		require.Equal(t, i, *ev.Chunk)
		require.JSONEq(t, fmt.Sprintf(`"tok%d"`, i+1), string(ev.Output))
	}
	require.Nil(t, evs[0].Chunk)
}
