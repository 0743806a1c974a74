package worker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// statusEntered signals each /status call as it starts; the fake's
// statusBlock then holds it.
type statusEntered struct {
	*fakeRunpod
	entered chan string
}

func (s *statusEntered) Status(ctx context.Context, id string) (workflow.RunpodJob, error) {
	select {
	case s.entered <- id:
	default:
	}
	return s.fakeRunpod.Status(ctx, id)
}

// TestWebhookAndPollCountOneOutcome: the owner's fallback poll reads the
// job COMPLETED while the job's webhook, delivered to the same worker,
// writes that very outcome first. Redis has one terminal event either way;
// the worker must also count the outcome once (Stats.Finalized, OnOutcome,
// and so the outcomes metric): the poll's finalize of an outcome another
// writer wrote under the same owner and epoch is not "ours".
func TestWebhookAndPollCountOneOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.rp.statusBlock = make(chan struct{})
	rp := &statusEntered{fakeRunpod: b.rp, entered: make(chan string, 1)}
	var outcomes, transitions atomic.Int32
	ts := httptest.NewUnstartedServer(nil)
	cfg := b.config("whonce")
	cfg.Runpod = rp
	cfg.MinIdle = time.Minute // no re-admit may interleave
	cfg.Webhook = Webhook{URL: "http://" + ts.Listener.Addr().String() + "/runpod/webhook",
		Key: SecretKey(testWebhookKey), PollInterval: 50 * time.Millisecond}
	cfg.Hooks.OnOutcome = func(string, workflow.State) { outcomes.Add(1) }
	cfg.Hooks.OnTransition = func(_ string, _, to workflow.State) {
		if to.Terminal() {
			transitions.Add(1)
		}
	}
	w, err := New(b.rdb, cfg)
	require.NoError(t, err)
	ts.Config.Handler = w.WebhookHandler()
	ts.Start()
	t.Cleanup(ts.Close)
	b.run(t, w)

	b.submit(t, "once", `{"mock_delay":0,"mock_return":{"x":1}}`, 0)
	var runpodID string
	select {
	case runpodID = <-rp.entered: // the owner's poll is in /status, held
	case <-time.After(time.Minute):
		t.Fatal("no /status call")
	}
	rec := b.get(t, "once")
	require.Equal(t, runpodID, rec.RunpodID)

	// The webhook delivers the same result while the poll is held.
	body := map[string]any{"id": runpodID, "status": "COMPLETED", "output": json.RawMessage(`{"x":1}`)}
	require.Equal(t, http.StatusOK, postHook(t, "POST", w.webhookURL("once", rec.Entry, rec.Attempts), body))
	require.EqualValues(t, 1, w.WebhookStats().Finalized)

	close(b.rp.statusBlock) // the poll reads COMPLETED too and finalizes it
	require.Eventually(t, func() bool { return w.Stats().InFlight == 0 }, time.Minute, 5*time.Millisecond)

	n, _ := terminalEvents(b.events(t)["once"])
	require.Equal(t, 1, n, "terminal events")
	require.EqualValues(t, 1, w.Stats().Finalized[workflow.StateCompleted], "Stats.Finalized")
	require.EqualValues(t, 1, outcomes.Load(), "OnOutcome calls")
	require.EqualValues(t, 1, transitions.Load(), "OnTransition calls into a terminal state")
	require.Equal(t, workflow.StateCompleted, workflow.State(b.get(t, "once").State))
}

// TestWebhookLostReplyCountedOnce: a delivery's finalize is applied and its
// reply lost (the proxy swallows it and cuts the connection). The write is
// sent again under its finalize id and answered as written: the outcome is
// counted once, by the delivery (not left to a Runpod retry of the delivery,
// which would find the job terminal and count nothing), and the owner,
// woken, drops the job without counting it again.
func TestWebhookLostReplyCountedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	proxy := redistest.NewProxy(t, redistest.Addr())
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := streams.New(rdb, streams.Config{Namespace: b.ns})
	require.NoError(t, err)
	var outcomes atomic.Int32
	cfg := b.config("whlost")
	cfg.MinIdle = time.Minute
	cfg.Webhook = Webhook{URL: "http://127.0.0.1:1/hook", Key: SecretKey(testWebhookKey), PollInterval: 9 * time.Minute}
	cfg.Hooks.OnOutcome = func(string, workflow.State) { outcomes.Add(1) }
	w := newWorker(st, cfg.WithDefaults())
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { stop(); require.NoError(t, <-done) }()

	b.submit(t, "lost", `{"mock_delay":600000}`, 0)
	rec := b.waitRecord(t, "lost", time.Minute, func(r streams.Record) bool { return r.RunpodID != "" })
	swallowed := proxy.SwallowReply("lost-reply-output")
	what, err := w.completeByWebhook(context.Background(), "lost", rec.Entry, rec.Attempts,
		workflow.RunpodJob{ID: rec.RunpodID, Status: workflow.RunpodCompleted, Output: []byte(`"lost-reply-output"`)})
	<-swallowed
	require.NoError(t, err)
	require.Equal(t, hookFinalized, what)
	require.Eventually(t, func() bool { return w.Stats().InFlight == 0 }, time.Minute, 5*time.Millisecond)
	n, _ := terminalEvents(b.events(t)["lost"])
	require.Equal(t, 1, n)
	require.EqualValues(t, 1, outcomes.Load(), "OnOutcome calls")
	require.EqualValues(t, 1, w.Stats().Finalized[workflow.StateCompleted])
	require.EqualValues(t, 1, w.WebhookStats().Finalized)
}
