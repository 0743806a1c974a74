package worker

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// lostChunkReplies writes the first chunk batch of a job, then answers
// every attempt of it with a transient error, as a Redis whose replies are
// lost would (each attempt applied, none answered).
type lostChunkReplies struct {
	*streams.Store
	fails atomic.Int32 // attempts still to fail
}

func (l *lostChunkReplies) AppendChunks(ctx context.Context, c streams.Chunks, now time.Time) (int, error) {
	n, err := l.Store.AppendChunks(ctx, c, now)
	if err == nil && l.fails.Add(-1) >= 0 {
		return 0, errors.New("redis: i/o timeout (test: reply lost)")
	}
	return n, err
}

// TestStreamingChunksAfterLostReplies: every attempt to record a batch of
// chunks is applied but its reply lost; the chunks Runpod hands out next
// (/stream drains) must still be recorded and end in the output. The
// worker used to fall back to the count before the batch, so the next
// batch was sent at indexes the record already held and skipped as
// duplicates: lost from the events and the output.
func TestStreamingChunksAfterLostReplies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 2, DisableRateLimits: true})
	cfg := b.config("lossy")
	cfg.Runpod, cfg.Streaming = rp, true
	st := &lostChunkReplies{Store: b.store}
	st.fails.Store(3) // appendChunks tries 3 times
	w := newWorker(st, cfg.WithDefaults())
	b.run(t, w)

	b.submit(t, "lr", `{"mock_delay":3000,"mock_stream":["a","b","c","d","e","f"]}`, 0)
	rec := b.waitState(t, "lr", workflow.StateCompleted, time.Minute)
	outs, idx := b.chunkEvents(t, "lr")
	t.Logf("chunk events %v %v; output %s", outs, idx, rec.Output)
	var got []string
	require.NoError(t, json.Unmarshal(rec.Output, &got))
	require.Equal(t, []string{"a", "b", "c", "d", "e", "f"}, got, "every chunk Runpod handed out is in the output")
	require.Equal(t, []string{`"a"`, `"b"`, `"c"`, `"d"`, `"e"`, `"f"`}, outs)
}
