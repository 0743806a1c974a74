package worker

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// chunkEvents returns the outputs and indexes of a job's chunk events, in
// stream order.
func (b *testBundle) chunkEvents(t *testing.T, id string) (outs []string, idx []int) {
	t.Helper()
	all, err := b.store.ReadEvents(t.Context(), "0", 10000, 0)
	require.NoError(t, err)
	for _, ev := range all {
		if ev.JobID == id && ev.Type == streams.EventProgress && ev.Payload.Chunk != nil {
			outs = append(outs, string(ev.Payload.Output))
			idx = append(idx, *ev.Payload.Chunk)
		}
	}
	return outs, idx
}

// TestStreamingJobWithSimulator: with Streaming on, a generator job's
// chunks arrive as progress events while it runs, in order, each once, and
// its output is the list of chunks rather than the [] Runpod reports
// without an aggregate; a job with an aggregate keeps Runpod's output.
func TestStreamingJobWithSimulator(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 4, DisableRateLimits: true})
	cfg := b.config("streamer")
	cfg.Runpod, cfg.Streaming = rp, true
	b.start(t, cfg)

	b.submit(t, "st", `{"mock_delay":1500,"mock_stream":["a","b",{"c":3},"d","e"]}`, 0)
	b.submit(t, "agg", `{"mock_delay":300,"mock_stream":[1,2],"mock_aggregate_stream":true}`, 0)
	rec := b.waitState(t, "st", workflow.StateCompleted, time.Minute)
	require.JSONEq(t, `["a","b",{"c":3},"d","e"]`, string(rec.Output), "the output is the chunks, not []")
	outs, idx := b.chunkEvents(t, "st")
	require.Equal(t, []string{`"a"`, `"b"`, `{"c":3}`, `"d"`, `"e"`}, outs)
	require.Equal(t, []int{0, 1, 2, 3, 4}, idx)
	require.Equal(t, 5, rec.Chunks)
	require.Positive(t, srv.Sim.Stats().Requests[runpodsim.OpStream], "read with /stream")

	rec = b.waitState(t, "agg", workflow.StateCompleted, time.Minute)
	require.JSONEq(t, `[1,2]`, string(rec.Output))
	outs, _ = b.chunkEvents(t, "agg")
	require.Equal(t, []string{`1`, `2`}, outs)
}

// TestStreamingTakeoverNoDuplicates: a streaming job taken over mid-stream
// (its worker stops; a peer resumes it) never repeats a chunk: the new
// owner continues after the chunks the record holds (dedupe by index in
// the record, fenced by owner and epoch), and the output is exactly the
// recorded chunks, in order.
func TestStreamingTakeoverNoDuplicates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 4, DisableRateLimits: true})
	const n = 8
	var items []string
	for i := range n {
		items = append(items, fmt.Sprintf(`"c%d"`, i))
	}
	input := fmt.Sprintf(`{"mock_delay":4000,"mock_stream":[%s]}`, joinComma(items))
	cfgA := b.config("first")
	cfgA.Runpod, cfgA.Streaming = rp, true
	a := b.start(t, cfgA)
	b.submit(t, "tk", input, 0)
	b.waitRecord(t, "tk", time.Minute, func(r streams.Record) bool { return r.Chunks >= 2 })
	a.stop(t) // hands the job off

	cfgB := b.config("second")
	cfgB.Runpod, cfgB.Streaming = rp, true
	r := b.start(t, cfgB)
	require.Eventually(t, func() bool {
		k, err := r.w.RecoverNow(t.Context())
		require.NoError(t, err)
		return k == 1
	}, time.Minute, 50*time.Millisecond)
	rec := b.waitState(t, "tk", workflow.StateCompleted, time.Minute)
	require.Equal(t, "second", rec.FinalizedBy)

	outs, idx := b.chunkEvents(t, "tk")
	t.Logf("%d of %d chunks evented across the takeover", len(outs), n)
	require.GreaterOrEqual(t, len(outs), 2)
	seen := map[string]bool{}
	for i, o := range outs {
		require.False(t, seen[o], "chunk %s delivered twice", o)
		seen[o] = true
		require.Equal(t, i, idx[i], "indexes in order, no gap")
	}
	var got []string
	require.NoError(t, json.Unmarshal(rec.Output, &got))
	require.Len(t, got, len(outs))
	for i := range got {
		require.Equal(t, fmt.Sprintf("%q", got[i]), outs[i])
	}
	for i := 1; i < len(outs); i++ {
		require.Less(t, outs[i-1], outs[i], "chunks in the order yielded")
	}
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}
