package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

const testWebhookKey = "0123456789abcdef-test-key"

// webhookWorker starts a worker with webhooks on, its handler served on
// loopback, against rp. adjust may change the configuration first.
func (b *testBundle) webhookWorker(t *testing.T, id string, rp workflow.Runpod, adjust func(*Config)) *Worker {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	cfg := b.config(id)
	cfg.Runpod = rp
	cfg.Webhook = Webhook{URL: "http://" + ts.Listener.Addr().String() + "/runpod/webhook",
		Key: SecretKey(testWebhookKey), PollInterval: 9 * time.Minute}
	if adjust != nil {
		adjust(&cfg)
	}
	w, err := New(b.rdb, cfg)
	require.NoError(t, err)
	ts.Config.Handler = w.WebhookHandler()
	ts.Start()
	t.Cleanup(ts.Close)
	b.run(t, w)
	return w
}

// outcomeTimes records when each job's outcome was written (Hooks.OnOutcome).
type outcomeTimes struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (o *outcomeTimes) hook(id string, _ workflow.State) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.at[id] = time.Now()
}

// TestWebhookCompletion: with webhooks on and the fallback poll minutes
// away, every job finishes through its webhook (no /status call at all),
// with one terminal event each. It reports the latency from Runpod's
// completion (the simulator's finish time, on the wall clock) to the
// outcome written; nothing about it is asserted.
func TestWebhookCompletion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 64, DisableRateLimits: true})
	times := &outcomeTimes{at: map[string]time.Time{}}
	w := b.webhookWorker(t, "wh", rp, func(c *Config) {
		c.Hooks.OnOutcome = times.hook
		// A lease that lapses (a stalled scheduler on a loaded box misses
		// MinIdle's five beats) is re-admitted, and a resumed job polls at
		// once: that poll, not the webhook, may then finish it. Leases that
		// cannot lapse leave the webhook as the only way a job ends.
		c.MinIdle = time.Minute
	})

	const n = 200
	ids := jobIDs("wh", n)
	for i, id := range ids {
		b.submit(t, id, fmt.Sprintf(`{"mock_delay":%d,"mock_return":{"i":%d}}`, 20+i%60, i), 0)
	}
	for i, id := range ids {
		rec := b.waitState(t, id, workflow.StateCompleted, time.Minute)
		require.JSONEq(t, fmt.Sprintf(`{"i":%d}`, i), string(rec.Output))
	}
	require.Zero(t, srv.Sim.Stats().Requests[runpodsim.OpStatus], "no job needed a poll")
	st := w.WebhookStats()
	require.EqualValues(t, n, st.Finalized)
	require.Zero(t, st.Refused)
	evs := b.events(t)
	for _, id := range ids {
		cnt, _ := terminalEvents(evs[id])
		require.Equal(t, 1, cnt, "job %s: terminal events", id)
	}

	finished := map[string]time.Time{}
	for _, j := range srv.Sim.Jobs() {
		finished[j.ID] = j.FinishedAt
	}
	var lat []time.Duration
	times.mu.Lock()
	for _, id := range ids {
		rec := b.get(t, id)
		lat = append(lat, times.at[id].Sub(finished[rec.RunpodID]))
	}
	times.mu.Unlock()
	slices.Sort(lat)
	t.Logf("runpod completion → outcome written, via webhook, %d jobs on loopback: p50 %s, p99 %s, max %s",
		n, lat[n/2], lat[n*99/100], lat[n-1])
}

// TestWebhookDroppedPollingFinishes: Runpod never delivers a webhook; the
// slow fallback poll still finishes every job.
func TestWebhookDroppedPollingFinishes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 16, DisableRateLimits: true, WebhookDropProb: 1})
	w := b.webhookWorker(t, "whdrop", rp, func(c *Config) { c.Webhook.PollInterval = 200 * time.Millisecond })
	const n = 30
	ids := jobIDs("drop", n)
	for _, id := range ids {
		b.submit(t, id, `{"mock_delay":50}`, 0)
	}
	for _, id := range ids {
		b.waitState(t, id, workflow.StateCompleted, time.Minute)
	}
	require.EqualValues(t, n, srv.Sim.Stats().WebhooksDropped)
	require.Zero(t, w.WebhookStats().Received)
	require.Positive(t, srv.Sim.Stats().Requests[runpodsim.OpStatus])
}

// TestWebhookDuplicateDelivery: every webhook arrives twice; each job has
// one terminal event and the second delivery is counted as a duplicate.
func TestWebhookDuplicateDelivery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 16, DisableRateLimits: true, WebhookDupProb: 1})
	w := b.webhookWorker(t, "whdup", rp, nil)
	const n = 20
	ids := jobIDs("dup", n)
	for _, id := range ids {
		b.submit(t, id, `{"mock_delay":30}`, 0)
	}
	for _, id := range ids {
		b.waitState(t, id, workflow.StateCompleted, time.Minute)
	}
	require.Eventually(t, func() bool { return srv.Sim.Stats().WebhooksDuplicated == n }, 30*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return w.WebhookStats().Duplicates == n }, 30*time.Second, 10*time.Millisecond)
	require.EqualValues(t, n, w.WebhookStats().Finalized)
	evs := b.events(t)
	for _, id := range ids {
		cnt, _ := terminalEvents(evs[id])
		require.Equal(t, 1, cnt, "job %s: terminal events", id)
	}
}

// post sends a webhook delivery and returns the HTTP status.
func postHook(t *testing.T, method, url string, body any) int {
	t.Helper()
	data, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequest(method, url, bytes.NewReader(data))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// TestWebhookForgedOrReplayed: deliveries with a wrong token, another job's
// token, another attempt, another Runpod job's body, or a replay of a
// genuine delivery after the job ended change nothing.
func TestWebhookForgedOrReplayed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 4, DisableRateLimits: true})
	w := b.webhookWorker(t, "whforge", rp, nil)

	b.submit(t, "done", `{"mock_delay":10,"mock_return":"real"}`, 0)
	b.waitState(t, "done", workflow.StateCompleted, 30*time.Second)
	b.submit(t, "victim", `{"mock_delay":600000}`, 0)
	victim := b.waitRecord(t, "victim", 30*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	eventsBefore := b.events(t)
	doneBefore := b.get(t, "done")

	forged := map[string]any{"id": victim.RunpodID, "status": "COMPLETED", "output": "forged", "executionTime": 5}
	good := w.webhookURL("victim", victim.Entry, 1)
	base := good[:strings.Index(good, "?")]
	cases := []struct {
		name   string
		method string
		url    string
		body   any
		code   int
	}{
		{"no token", "POST", base + "?job=victim&attempt=1", forged, http.StatusForbidden},
		{"wrong token", "POST", base + "?job=victim&attempt=1&token=00112233445566778899aabbccddeeff", forged, http.StatusForbidden},
		{"another job's token", "POST", strings.Replace(strings.Replace(w.webhookURL("done", doneBefore.Entry, 1), "job=done", "job=victim", 1), url.QueryEscape(doneBefore.Entry), url.QueryEscape(victim.Entry), 1), forged, http.StatusForbidden},
		{"another attempt's token", "POST", strings.Replace(good, "attempt=1", "attempt=2", 1), forged, http.StatusForbidden},
		{"token of another namespace", "POST", base + "?" + strings.SplitN(otherNamespaceURL(t, w, "victim", victim.Entry, 1), "?", 2)[1], forged, http.StatusForbidden},
		{"not a POST", "GET", good, forged, http.StatusMethodNotAllowed},
		{"a later attempt (signed, never sent)", "POST", w.webhookURL("victim", victim.Entry, 2), forged, http.StatusOK},
		{"another run's entry (signed)", "POST", w.webhookURL("victim", "1-0", 1), forged, http.StatusOK},
		{"another entry's token", "POST", strings.Replace(good, url.QueryEscape(victim.Entry), "1-0", 1), forged, http.StatusForbidden},
		{"another runpod job's body", "POST", good, map[string]any{"id": "rp-someone-else", "status": "COMPLETED", "output": "x"}, http.StatusOK},
		{"not terminal", "POST", good, map[string]any{"id": victim.RunpodID, "status": "IN_PROGRESS"}, http.StatusOK},
		{"no body", "POST", good, nil, http.StatusBadRequest},
	}
	for _, tc := range cases {
		require.Equal(t, tc.code, postHook(t, tc.method, tc.url, tc.body), tc.name)
	}
	// A genuine delivery replayed after the job ended.
	var replayed int
	for _, d := range srv.Sim.Webhooks() {
		if d.OK {
			var body any
			require.NoError(t, json.Unmarshal(d.Body, &body))
			require.Equal(t, http.StatusOK, postHook(t, "POST", d.URL, body))
			replayed++
		}
	}
	require.Equal(t, 1, replayed, "the finished job's delivery")

	require.Equal(t, victim, b.get(t, "victim"), "the live job's record is unchanged")
	require.Equal(t, doneBefore, b.get(t, "done"), "the finished job's record is unchanged")
	require.Equal(t, eventsBefore, b.events(t), "no event was added")
	st := w.WebhookStats()
	require.EqualValues(t, 8, st.Refused, "seven forged, one without a body")
	require.EqualValues(t, 1, st.Finalized, "only the genuine first delivery")
	require.EqualValues(t, 1, st.Duplicates, "the replay")
}

// otherNamespaceURL is the URL a worker of another namespace with the same
// key would send.
func otherNamespaceURL(t *testing.T, w *Worker, jobID, entry string, attempt int) string {
	t.Helper()
	other := &Worker{cfg: w.cfg}
	other.cfg.Namespace = w.cfg.Namespace + "-other"
	return other.webhookURL(jobID, entry, attempt)
}

// uncertainOnce makes the first /run of a job fail as uncertain without
// sending it, as if Runpod had created a job whose answer was lost.
type uncertainOnce struct {
	workflow.Runpod
	mu   sync.Mutex
	runs int
}

func (u *uncertainOnce) Run(ctx context.Context, req workflow.RunRequest) (workflow.RunpodJob, error) {
	u.mu.Lock()
	u.runs++
	first := u.runs == 1
	u.mu.Unlock()
	if first {
		return workflow.RunpodJob{}, fmt.Errorf("test: answer lost: %w", workflow.ErrSubmitUncertain)
	}
	return u.Runpod.Run(ctx, req)
}

// TestWebhookRevealsUnlearnedRunpodJob: attempt 1's /run was uncertain (its
// Runpod job exists, its id was never learned) and the job was sent again
// as attempt 2. Attempt 1's Runpod job finishes first: its webhook, whose
// URL names attempt 1, reveals it. It is recorded on the job with its GPU
// time, its result wins, and attempt 2's Runpod job is canceled.
func TestWebhookRevealsUnlearnedRunpodJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 4, DisableRateLimits: true})
	w := b.webhookWorker(t, "whreveal", &uncertainOnce{Runpod: rp}, nil)

	b.submit(t, "twice", `{"mock_delay":600000}`, 0)
	second := b.waitRecord(t, "twice", 30*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	require.Equal(t, 2, second.Attempts)

	// What attempt 1's lost /run had created, with the URL it carried.
	first, err := rp.Run(t.Context(), workflow.RunRequest{
		Input: json.RawMessage(`{"mock_delay":50,"mock_return":{"from":"attempt-1"}}`), Webhook: w.webhookURL("twice", second.Entry, 1)})
	require.NoError(t, err)

	rec := b.waitState(t, "twice", workflow.StateCompleted, 30*time.Second)
	require.JSONEq(t, `{"from":"attempt-1"}`, string(rec.Output))
	require.Equal(t, first.ID, rec.RunpodID, "the record names the Runpod job that won")
	require.Equal(t, []string{first.ID}, rec.Revealed)
	require.GreaterOrEqual(t, rec.RevealedGPUMs, int64(50), "its GPU time is counted")
	require.Eventually(t, func() bool {
		info, ok := srv.Sim.Job(second.RunpodID)
		return ok && info.Status == workflow.RunpodCancelled
	}, 30*time.Second, 10*time.Millisecond, "the losing attempt is canceled on Runpod")

	evs := b.events(t)["twice"]
	cnt, last := terminalEvents(evs)
	require.Equal(t, 1, cnt)
	require.Equal(t, streams.EventCompleted, last.Type)
	var revealed []streams.Event
	for _, e := range evs {
		if e.Type == streams.EventRunpodJobRevealed {
			revealed = append(revealed, e)
		}
	}
	require.Len(t, revealed, 1)
	require.Equal(t, first.ID, revealed[0].Payload.RunpodID)
	require.Equal(t, 1, revealed[0].Payload.Attempt)
	require.EqualValues(t, 1, w.WebhookStats().Revealed)
}

func TestWebhookConfigValidate(t *testing.T) {
	t.Parallel()
	base := Config{Runpod: newFakeRunpod()}
	for name, tc := range map[string]struct {
		hook Webhook
		want string
	}{
		"relative URL":  {Webhook{URL: "/hook", Key: SecretKey(testWebhookKey)}, "Webhook.URL"},
		"query in URL":  {Webhook{URL: "http://h/hook?x=1", Key: SecretKey(testWebhookKey)}, "Webhook.URL"},
		"short key":     {Webhook{URL: "http://h/hook", Key: SecretKey("short")}, "Webhook.Key"},
		"no key":        {Webhook{URL: "http://h/hook"}, "Webhook.Key"},
		"negative poll": {Webhook{URL: "http://h/hook", Key: SecretKey(testWebhookKey), PollInterval: -1}, "Webhook.PollInterval"},
		"poll too slow": {Webhook{URL: "http://h/hook", Key: SecretKey(testWebhookKey), PollInterval: time.Hour}, "Webhook.PollInterval"},
	} {
		c := base
		c.Webhook = tc.hook
		err := c.WithDefaults().Validate()
		require.Error(t, err, name)
		require.Contains(t, err.Error(), tc.want, name)
		require.NotContains(t, err.Error(), testWebhookKey, name)
	}
	c := base
	c.Webhook = Webhook{URL: "https://h/hook", Key: SecretKey(testWebhookKey)}
	c = c.WithDefaults()
	require.NoError(t, c.Validate())
	require.Equal(t, WebhookPollIntervalDefault, c.Webhook.PollInterval)
	require.Equal(t, WebhookPollIntervalDefault, c.policy().Poll.WebhookFallback)
	for _, s := range []string{fmt.Sprint(c.Webhook.Key), fmt.Sprintf("%v %+v %#v %s %x", c.Webhook, c.Webhook, c.Webhook, c.Webhook.Key, c.Webhook.Key)} {
		require.NotContains(t, s, testWebhookKey)
	}
}

// cancelFailsOnce makes the first /cancel fail as Runpod being unreachable.
type cancelFailsOnce struct {
	*uncertainOnce
	mu      sync.Mutex
	cancels int
}

func (c *cancelFailsOnce) Cancel(ctx context.Context, id string) (workflow.RunpodJob, error) {
	c.mu.Lock()
	c.cancels++
	first := c.cancels == 1
	c.mu.Unlock()
	if first {
		return workflow.RunpodJob{}, &workflow.ActivityError{Op: "cancel", StatusCode: 503, Transient: true,
			Err: errors.New("test: runpod unavailable")}
	}
	return c.uncertainOnce.Cancel(ctx, id)
}

// TestWebhookRevealWinCancelsLoserAfterAFailedCancel: an unlearned Runpod
// job (attempt 1) wins through its webhook, and the first /cancel of the
// recorded one (attempt 2) fails. The losing Runpod job is still canceled:
// it goes through the orphan path (recorded in {ns}:orphans, retried until
// Runpod confirms) instead of being left running on a GPU. Before, the
// cancel was tried once and its failure only logged.
func TestWebhookRevealWinCancelsLoserAfterAFailedCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 4, DisableRateLimits: true})
	w := b.webhookWorker(t, "whloser", &cancelFailsOnce{uncertainOnce: &uncertainOnce{Runpod: rp}}, nil)

	b.submit(t, "loser", `{"mock_delay":600000}`, 0)
	second := b.waitRecord(t, "loser", 30*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	require.Equal(t, 2, second.Attempts)
	first, err := rp.Run(t.Context(), workflow.RunRequest{
		Input: json.RawMessage(`{"mock_delay":50,"mock_return":{"from":"attempt-1"}}`), Webhook: w.webhookURL("loser", second.Entry, 1)})
	require.NoError(t, err)

	rec := b.waitState(t, "loser", workflow.StateCompleted, 30*time.Second)
	require.Equal(t, first.ID, rec.RunpodID)
	// The failed cancel is recorded in {ns}:orphans; the orphan loop's next
	// pass cancels it. Its ticker is 30s away: once the orphan is recorded,
	// nudge the loop instead of waiting for the tick (a loaded box may
	// record it late; the tick is no condition).
	require.Eventually(t, func() bool {
		if info, ok := srv.Sim.Job(second.RunpodID); ok && info.Status == workflow.RunpodCancelled {
			return true
		}
		if recorded, err := b.store.Orphans(t.Context(), 100); err == nil && recorded[second.RunpodID] != "" {
			nudgeOrphanLoop(w)
		}
		return false
	}, 2*time.Minute, 50*time.Millisecond, "the losing Runpod job is canceled although the first /cancel failed")
	require.GreaterOrEqual(t, w.Stats().OrphansCanceled, uint64(1))
}

// nudgeOrphanLoop makes w's orphan loop run a pass now (as a queued orphan
// does) rather than at its next 30s tick.
func nudgeOrphanLoop(w *Worker) {
	select {
	case w.orphanNow <- struct{}{}:
	default:
	}
}
