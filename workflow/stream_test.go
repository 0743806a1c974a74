package workflow

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestStreamingJob: a streaming job reads /stream once Runpod runs it; new
// chunks are to be recorded in order from the recorded count; a terminal
// /stream ends streaming and /status decides, the chunks becoming the
// output when Runpod's is []. A job that finished between two polls is
// drained first; a /stream refusal falls back to /status.
func TestStreamingJob(t *testing.T) {
	t.Parallel()
	raw := func(s ...string) []json.RawMessage {
		out := make([]json.RawMessage, len(s))
		for i, x := range s {
			out[i] = json.RawMessage(x)
		}
		return out
	}
	j := onRunpod()
	j.Streaming = true
	require.Equal(t, ActPoll, Next(j, t0, pol).Kind, "queued: /status")
	j, _ = Apply(j, Action{Kind: ActPoll}, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodInProgress}}, t0, pol, nil)
	a := Next(j, t0.Add(pol.Poll.Max), pol)
	require.Equal(t, ActStream, a.Kind, "running: /stream")

	j, eff := Apply(j, a, Result{Stream: RunpodStream{Status: RunpodInProgress, Outputs: raw(`"a"`, `"b"`)}}, t0, pol, nil)
	require.Equal(t, raw(`"a"`, `"b"`), eff.Chunks)
	require.Equal(t, 0, eff.ChunkBase)
	require.Equal(t, 2, j.Chunks)
	require.Equal(t, t0, j.NextAt, "chunks came: read again at once")

	j, eff = Apply(j, Action{Kind: ActStream}, Result{Stream: RunpodStream{Status: RunpodCompleted, Outputs: raw(`"c"`)}}, t0, pol, nil)
	require.Equal(t, 2, eff.ChunkBase)
	require.True(t, j.StreamDone)
	require.Equal(t, ActPoll, Next(j, t0, pol).Kind, "the stream ended: /status decides")
	j, _ = Apply(j, Action{Kind: ActPoll}, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCompleted, Output: json.RawMessage(`[]`),
		ExecutionTime: 900}}, t0, pol, nil)
	require.NotNil(t, j.Outcome)
	require.True(t, j.Outcome.OutputFromChunks, "[] from Runpod: the chunks are the output")

	// With an aggregate output, Runpod's output stands.
	k := onRunpod()
	k.Streaming, k.Chunks, k.StreamDone, k.RunpodStatus = true, 3, true, RunpodInProgress
	k, _ = Apply(k, Action{Kind: ActPoll}, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCompleted, Output: json.RawMessage(`["a","b","c"]`)}}, t0, pol, nil)
	require.False(t, k.Outcome.OutputFromChunks)

	// Finished between two polls: drained with /stream before deciding.
	f := onRunpod()
	f.Streaming = true
	f, _ = Apply(f, Action{Kind: ActPoll}, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCompleted, Output: json.RawMessage(`[]`)}}, t0, pol, nil)
	require.Nil(t, f.Outcome)
	require.Equal(t, ActStream, Next(f, t0, pol).Kind)

	// /stream refused (permanent): back to /status.
	g := onRunpod()
	g.Streaming, g.RunpodStatus = true, RunpodInProgress
	g, _ = Apply(g, Action{Kind: ActStream}, Result{Err: errPermanent}, t0, pol, nil)
	require.True(t, g.StreamOff)
	require.Equal(t, ActPoll, Next(g, t0, pol).Kind)
}
