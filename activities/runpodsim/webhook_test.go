package runpodsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// receiver is a webhook endpoint answering a scripted sequence of statuses
// (200 once the script runs out) and recording bodies.
type receiver struct {
	mu     sync.Mutex
	codes  []int
	bodies []map[string]any
	srv    *httptest.Server
}

func newReceiver(t *testing.T, codes ...int) *receiver {
	t.Helper()
	rc := &receiver{codes: codes}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(data, &m)
		rc.mu.Lock()
		rc.bodies = append(rc.bodies, m)
		code := 200
		if len(rc.codes) > 0 {
			code, rc.codes = rc.codes[0], rc.codes[1:]
		}
		rc.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) received() []map[string]any {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]map[string]any(nil), rc.bodies...)
}

// §16.15: POST the job object on completion; non-200 is a failure retried
// twice, 10 s (simulated) apart; every attempt is recorded.
func TestWebhookRetries(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c) })
	rc := newReceiver(t, 500, 204) // 204 is not 200: also a failure
	r := b.call(t, "POST", "run", map[string]any{"input": map[string]any{"mock_delay": 100, "mock_return": "hi"}, "webhook": rc.srv.URL + "/hook"})
	id := r.obj(t)["id"].(string)
	mc.Advance(100 * time.Millisecond)

	require.Eventually(t, func() bool { return len(b.sim.Webhooks()) == 1 }, waitMax, time.Millisecond)
	// The retry waits 10 s of simulated time.
	require.Eventually(t, func() bool { mc.Advance(0); return mc.PendingTimers() >= 3 }, waitMax, time.Millisecond)
	mc.Advance(9 * time.Second)
	require.Len(t, b.sim.Webhooks(), 1)
	mc.Advance(time.Second)
	require.Eventually(t, func() bool { return len(b.sim.Webhooks()) == 2 }, waitMax, time.Millisecond)
	require.Eventually(t, func() bool { return mc.PendingTimers() >= 3 }, waitMax, time.Millisecond)
	mc.Advance(10 * time.Second)
	require.Eventually(t, func() bool { return len(b.sim.Webhooks()) == 3 }, waitMax, time.Millisecond)

	ds := b.sim.Webhooks()
	require.Equal(t, []int{500, 204, 200}, []int{ds[0].Status, ds[1].Status, ds[2].Status})
	require.Equal(t, []bool{false, false, true}, []bool{ds[0].OK, ds[1].OK, ds[2].OK})
	require.Equal(t, 10*time.Second, ds[1].At.Sub(ds[0].At))
	require.Equal(t, 10*time.Second, ds[2].At.Sub(ds[1].At))
	body := rc.received()[2]
	require.Equal(t, id, body["id"])
	require.Equal(t, "COMPLETED", body["status"])
	require.Equal(t, "hi", body["output"])
	require.EqualValues(t, 100, body["executionTime"])
	st := b.sim.Stats()
	require.EqualValues(t, 3, st.WebhookAttempts)
	require.EqualValues(t, 1, st.WebhooksDelivered)
}

func TestWebhookGivesUpAfterThreeAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.TimeScale = 1000; c.MockDelay = time.Millisecond })
	rc := newReceiver(t, 500, 500, 500, 500)
	b.call(t, "POST", "run", map[string]any{"input": map[string]any{"mock_error": "x"}, "webhook": rc.srv.URL})
	require.Eventually(t, func() bool { return b.sim.Stats().WebhooksFailed == 1 }, waitMax, time.Millisecond)
	require.Len(t, b.sim.Webhooks(), 3)
	require.Equal(t, "FAILED", rc.received()[0]["status"], "FAILED jobs fire webhooks")
}

// CANCELLED and TIMED_OUT webhooks are off by default and switchable.
func TestWebhookOutcomes(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{false, true} {
		b := setup(t, func(c *Config) {
			c.WebhookOnCancelled, c.WebhookOnTimedOut = on, on
			c.MockDelay = time.Hour
			c.ExecutionTimeout = 200 * time.Second // 200 ms of wall time
			c.TimeScale = 1000
		})
		rc := newReceiver(t)
		r := b.call(t, "POST", "run", map[string]any{"input": 1, "webhook": rc.srv.URL})
		cancelled := r.obj(t)["id"].(string)
		b.call(t, "POST", "run", map[string]any{"input": 2, "webhook": rc.srv.URL})
		require.Equal(t, 200, b.call(t, "POST", "cancel/"+cancelled, nil).code)
		require.Eventually(t, func() bool { return b.sim.Stats().JobsTimedOut == 1 }, waitMax, time.Millisecond)
		if !on {
			b.sim.Close() // waits for deliveries: none may have started
			require.Empty(t, b.sim.Webhooks())
			continue
		}
		require.Eventually(t, func() bool { return len(rc.received()) == 2 }, waitMax, time.Millisecond)
		got := map[string]bool{}
		for _, m := range rc.received() {
			got[m["status"].(string)] = true
		}
		require.Equal(t, map[string]bool{"CANCELLED": true, "TIMED_OUT": true}, got)
	}
}

// WebhookDropProb 1 sends nothing; WebhookDupProb 1 delivers each webhook
// twice.
func TestWebhookDropAndDuplicate(t *testing.T) {
	t.Parallel()
	t.Run("drop", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *Config) { c.WebhookDropProb = 1; c.MockDelay = time.Millisecond; c.TimeScale = 100 })
		rc := newReceiver(t)
		for range 3 {
			b.call(t, "POST", "run", map[string]any{"input": 1, "webhook": rc.srv.URL})
		}
		require.Eventually(t, func() bool { return b.sim.Stats().JobsCompleted == 3 }, waitMax, time.Millisecond)
		b.sim.Close() // waits for deliveries: none may have started
		require.Empty(t, rc.received())
		require.EqualValues(t, 3, b.sim.Stats().WebhooksDropped)
	})
	t.Run("duplicate", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *Config) { c.WebhookDupProb = 1; c.MockDelay = time.Millisecond; c.TimeScale = 100 })
		rc := newReceiver(t)
		id := b.call(t, "POST", "run", map[string]any{"input": 1, "webhook": rc.srv.URL}).obj(t)["id"].(string)
		require.Eventually(t, func() bool { return len(rc.received()) == 2 }, waitMax, time.Millisecond)
		for _, m := range rc.received() {
			require.Equal(t, id, m["id"])
		}
		// The receiver sees a body before the simulator records the attempt.
		require.Eventually(t, func() bool { return len(b.sim.Webhooks()) == 2 }, waitMax, time.Millisecond)
		ds := b.sim.Webhooks()
		require.Equal(t, []bool{false, true}, []bool{ds[0].Duplicate, ds[1].Duplicate})
		st := b.sim.Stats()
		require.EqualValues(t, 1, st.WebhooksDuplicated)
		require.EqualValues(t, 2, st.WebhooksDelivered)
	})
}

// PeakQueued is the deepest the queue ever was.
func TestPeakQueued(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.GPUWorkers = 1; c.MockDelay = time.Hour })
	for range 4 {
		b.call(t, "POST", "run", map[string]any{"input": 1})
	}
	st := b.sim.Stats()
	require.Equal(t, 3, st.PeakQueued, "one runs, three wait")
	require.Equal(t, 3, st.Queued)
}
