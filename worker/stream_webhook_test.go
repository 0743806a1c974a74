package worker

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestStreamingWebhookWaitsForTheChunks: the webhook of a streaming job
// whose output is [] arrives while its chunks are still buffered on Runpod
// (with webhooks on, the owner reads a job only at the fallback poll, so
// here it has read none). The outcome must be every chunk: the delivery
// leaves it to the owner, woken to drain /stream first. It used to
// finalize at once with the chunks recorded so far: output [], no chunk
// event (and a chunk read later is refused by the finished record).
func TestStreamingWebhookWaitsForTheChunks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 2, DisableRateLimits: true})
	release := make(chan struct{})
	var held atomic.Bool
	b.webhookWorker(t, "whs", rp, func(c *Config) {
		c.Streaming = true
		c.MinIdle = time.Minute // the held step must not lose its lease
		c.StepHook = func(id, point string) {
			// Were the owner streaming before the webhook, hold its next
			// /stream once a chunk is recorded, until the webhook has been
			// answered: chunks still on Runpod then, too.
			if point != PointPolling || held.Load() {
				return
			}
			rec, err := b.store.Get(t.Context(), id)
			if err == nil && rec.Chunks >= 1 && held.CompareAndSwap(false, true) {
				<-release
			}
		}
	})
	b.submit(t, "whs-1", `{"mock_delay":1500,"mock_stream":["a","b","c","d","e"]}`, 0)
	require.Eventually(t, func() bool { return srv.Sim.Stats().WebhooksDelivered >= 1 }, time.Minute, 10*time.Millisecond)
	close(release)
	rec := b.waitState(t, "whs-1", workflow.StateCompleted, time.Minute)
	t.Logf("held %v, output %s", held.Load(), rec.Output)
	var got []string
	require.NoError(t, json.Unmarshal(rec.Output, &got))
	require.Equal(t, []string{"a", "b", "c", "d", "e"}, got, "every chunk, not those recorded when the webhook came")
	outs, _ := b.chunkEvents(t, "whs-1")
	require.Len(t, outs, 5)
}
