package runpodsim

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// §16.1: nine operations, their methods, empty or {} bodies, 200 + JSON.
func TestRoutesAndMethods(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MockDelay = time.Millisecond })
	id := b.run(t, map[string]any{"x": 1})
	b.eventually(t, id, "COMPLETED")

	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "status/" + id, 200}, {"POST", "status/" + id, 200}, {"PUT", "status/" + id, 405},
		{"GET", "status-sync/" + id + "?wait=1000", 200}, {"POST", "status-sync/" + id + "?wait=1000", 200},
		{"GET", "stream/" + id, 200}, {"POST", "stream/" + id, 200},
		{"GET", "health", 200}, {"POST", "health", 405},
		{"GET", "run", 405}, {"GET", "cancel/" + id, 405},
		{"POST", "nosuchop", 404}, {"GET", "status", 404}, {"POST", "purge-queue/x", 404},
	} {
		r := b.call(t, tc.method, tc.path, nil)
		require.Equal(t, tc.want, r.code, "%s %s: body %s", tc.method, tc.path, r.body)
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		require.True(t, json.Valid(r.body), "%s %s: body %s", tc.method, tc.path, r.body)
	}
	// cancel, retry and purge accept no body and {}.
	for _, body := range []any{nil, []byte("{}")} {
		require.Equal(t, 200, b.call(t, "POST", "cancel/"+id, body).code)
		require.Equal(t, 400, b.call(t, "POST", "retry/"+id, body).code) // COMPLETED: not retryable
		r := b.call(t, "POST", "purge-queue", body)
		require.Equal(t, 200, r.code)
		require.Equal(t, map[string]any{"removed": 0.0, "status": "completed"}, r.obj(t))
	}
}

// §16.2: Bearer and bare keys, 401, 404 on unknown endpoint, error bodies.
func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	url := b.base + "/health"
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"Bearer " + testKey, 200}, {testKey, 200}, {"", 401}, {"Bearer wrong", 401}, {"bearer " + testKey, 401}, {"Bearer", 401},
	} {
		h := http.Header{}
		if tc.auth != "" {
			h.Set("Authorization", tc.auth)
		}
		r := b.raw(t, "GET", url, nil, h)
		require.Equal(t, tc.want, r.code, "auth %q", tc.auth)
		if tc.want == 401 {
			require.Equal(t, map[string]any{"error": "unauthorized"}, r.obj(t))
			require.NotContains(t, string(r.body), testKey)
		}
	}
	r := b.raw(t, "GET", b.root+"/v2/otherendpoint/health", nil, http.Header{"Authorization": {testKey}})
	require.Equal(t, 404, r.code)
	require.Equal(t, "endpoint not found", r.obj(t)["error"])
	st := b.sim.Stats()
	require.EqualValues(t, 4, st.Unauthorized)
	require.EqualValues(t, 1, st.NotFound)

	custom := setup(t, func(c *Config) {
		c.ErrorBodyFunc = func(code int, msg string) []byte { return []byte(`{"message":"` + msg + `"}`) }
	})
	r = custom.raw(t, "GET", custom.root+"/v2/nope/health", nil, http.Header{"Authorization": {testKey}})
	require.Equal(t, 404, r.code)
	require.Equal(t, map[string]any{"message": "endpoint not found"}, r.obj(t))
}

var (
	jobIDRe    = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}-u1$`)
	workerIDRe = regexp.MustCompile(`^[a-z0-9]{14}$`)
)

// §16.3: id shapes, no reuse, no dedupe, unknown keys and Idempotency-Key ignored.
func TestIDsAndNoDedupe(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MockDelay = time.Millisecond })
	body := map[string]any{"input": map[string]any{"same": true}, "unknownKey": 1, "webhookV2": "x", "s3Config": map[string]any{"accessId": "a"}}
	h := http.Header{"Authorization": {testKey}, "Idempotency-Key": {"k1"}}
	seen := map[string]bool{}
	for range 20 {
		r := b.raw(t, "POST", b.base+"/run", body, h)
		require.Equal(t, 200, r.code)
		id := r.obj(t)["id"].(string)
		require.Regexp(t, jobIDRe, id)
		require.False(t, seen[id], "id %s reused", id)
		seen[id] = true
	}
	require.Len(t, b.sim.Jobs(), 20)
	for _, j := range b.sim.Jobs() {
		require.JSONEq(t, `{"same":true}`, string(j.Input))
	}
	r := b.call(t, "POST", "runsync", map[string]any{"input": 1})
	require.Equal(t, 200, r.code)
	m := r.obj(t)
	require.True(t, strings.HasPrefix(m["id"].(string), "sync-"))
	require.Regexp(t, jobIDRe, strings.TrimPrefix(m["id"].(string), "sync-"))
	require.Regexp(t, workerIDRe, m["workerId"])
}

// §16.4: input required, policy ranges, payload size.
func TestSubmitValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxRunBytes = 1000; c.MaxRunsyncBytes = 2000 })
	for _, tc := range []struct {
		name string
		body any
		want int
	}{
		{"no input", map[string]any{"webhook": "http://x"}, 400},
		{"null input", []byte(`{"input":null}`), 400},
		{"not json", []byte(`{"input":`), 400},
		{"empty body", nil, 400},
		{"exec timeout too small", map[string]any{"input": 1, "policy": map[string]any{"executionTimeout": 4999}}, 400},
		{"exec timeout too big", map[string]any{"input": 1, "policy": map[string]any{"executionTimeout": 604800001}}, 400},
		{"ttl too small", map[string]any{"input": 1, "policy": map[string]any{"ttl": 9999}}, 400},
		{"policy ok", map[string]any{"input": 1, "policy": map[string]any{"ttl": 10000, "executionTimeout": 5000, "lowPriority": true}}, 200},
		{"too large", map[string]any{"input": strings.Repeat("x", 1000)}, 413},
	} {
		r := b.call(t, "POST", "run", tc.body)
		require.Equal(t, tc.want, r.code, "%s: %s", tc.name, r.body)
		if tc.want != 200 {
			require.NotEmpty(t, r.obj(t)["error"], tc.name)
		}
	}
	// /runsync has its own, larger cap.
	r := b.call(t, "POST", "runsync?wait=1000", map[string]any{"input": strings.Repeat("x", 1500)})
	require.Equal(t, 200, r.code, "%s", r.body)
	require.EqualValues(t, 2, b.sim.Stats().JobsCreated)

	b400 := setup(t, func(c *Config) { c.MaxRunBytes = 10; c.PayloadTooLargeStatus = 400 })
	require.Equal(t, 400, b400.call(t, "POST", "run", map[string]any{"input": "0123456789"}).code)
}

// §16.6 and §16.14: fields per state, progress output, delayTime from the
// queue, exact numbers on the manual clock.
func TestStatusFieldsPerState(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c); c.GPUWorkers = 1 })
	first := b.run(t, map[string]any{"mock_delay": 1000, "mock_progress": []any{"p1", "p2", "p3"}, "mock_return": map[string]any{"ok": 1}})
	second := b.run(t, map[string]any{"mock_delay": 500})

	// The first job started at once; the second waits for the only worker.
	m := b.status(t, first)
	require.ElementsMatch(t, []string{"id", "status", "delayTime", "workerId"}, keys(m))
	require.Equal(t, "IN_PROGRESS", m["status"])
	require.EqualValues(t, 0, m["delayTime"])
	require.Regexp(t, workerIDRe, m["workerId"])
	require.Equal(t, map[string]any{"id": second, "status": "IN_QUEUE"}, b.status(t, second))

	mc.Advance(250)
	mc.Advance(250 * time.Millisecond)
	require.Equal(t, "p1", b.status(t, first)["output"])
	mc.Advance(250 * time.Millisecond)
	require.Equal(t, "p2", b.status(t, first)["output"])
	mc.Advance(500 * time.Millisecond)
	m = b.status(t, first)
	require.ElementsMatch(t, []string{"id", "status", "delayTime", "executionTime", "workerId", "output"}, keys(m))
	require.Equal(t, "COMPLETED", m["status"])
	require.EqualValues(t, 1000, m["executionTime"])
	require.Equal(t, map[string]any{"ok": 1.0}, m["output"])

	m = b.status(t, second)
	require.Equal(t, "IN_PROGRESS", m["status"])
	require.EqualValues(t, 1000, m["delayTime"])
	mc.Advance(500 * time.Millisecond)
	m = b.status(t, second)
	require.Equal(t, "COMPLETED", m["status"])
	require.EqualValues(t, 500, m["executionTime"])
	// Default output echoes the input.
	require.Equal(t, map[string]any{"mock_delay": 500.0}, m["output"])

	info, ok := b.sim.Job(second)
	require.True(t, ok)
	require.Equal(t, time.Second, info.StartedAt.Sub(info.CreatedAt))
	require.Equal(t, 1, info.Executions)
	require.Equal(t, 404, b.call(t, "GET", "status/nonexistent-u1", nil).code)
}

// §16.14: mock_error, mock_crash always/once, malformed mock values, jobs
// that never finish.
func TestMockBehaviour(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MockDelay = time.Millisecond; c.GPUWorkers = 2 })

	failed := b.run(t, map[string]any{"mock_error": "CUDA out of memory", "mock_delay": 1})
	m := b.eventually(t, failed, "FAILED")
	require.NotContains(t, m, "output")
	var pyErr map[string]string
	require.NoError(t, json.Unmarshal([]byte(m["error"].(string)), &pyErr), "error must be a JSON string")
	require.Equal(t, "CUDA out of memory", pyErr["error_message"])
	require.Equal(t, "<class 'Exception'>", pyErr["error_type"])
	require.Equal(t, m["workerId"], pyErr["worker_id"])
	require.Contains(t, pyErr, "error_traceback")

	always := b.run(t, map[string]any{"mock_crash": true, "mock_delay": 1})
	m = b.eventually(t, always, "FAILED")
	require.EqualValues(t, 1, m["retries"])
	require.Contains(t, m["error"], "exited unexpectedly")
	info, _ := b.sim.Job(always)
	require.Equal(t, 2, info.Executions)
	require.Equal(t, 2, info.Crashes)

	once := b.run(t, map[string]any{"mock_crash": "once", "mock_delay": 1, "mock_return": "done"})
	m = b.eventually(t, once, "COMPLETED")
	require.Equal(t, "done", m["output"])
	require.EqualValues(t, 1, m["retries"])
	info, _ = b.sim.Job(once)
	require.Equal(t, 2, info.Executions)

	bad := b.run(t, map[string]any{"mock_delay": "soon"})
	m = b.eventually(t, bad, "FAILED")
	require.Contains(t, m["error"], "mock_delay")

	forever := b.run(t, map[string]any{"mock_delay": 1e15})
	require.Equal(t, "IN_PROGRESS", b.eventually(t, forever, "IN_PROGRESS")["status"])

	st := b.sim.Stats()
	require.EqualValues(t, 3, st.Crashes)
	require.EqualValues(t, 2, st.Retried)
	require.EqualValues(t, 1, st.Running)

	noRerun := setup(t, func(c *Config) { c.MockDelay = time.Millisecond; c.CrashRetries = -1 })
	id := noRerun.run(t, map[string]any{"mock_crash": 1})
	m = noRerun.eventually(t, id, "FAILED")
	require.NotContains(t, m, "retries")
}

// §16.14: cold starts show in delayTime and in /health.
func TestColdStart(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) {
		mc = manual(c)
		c.GPUWorkers = 1
		c.ColdStart = 2 * time.Second
		c.IdleTimeout = 5 * time.Second
	})
	id := b.run(t, map[string]any{"mock_delay": 100})
	require.Equal(t, "IN_QUEUE", b.status(t, id)["status"])
	h := b.call(t, "GET", "health", nil).obj(t)
	require.EqualValues(t, 1, h["workers"].(map[string]any)["initializing"])
	require.EqualValues(t, 1, h["jobs"].(map[string]any)["inQueue"])
	mc.Advance(2 * time.Second)
	m := b.status(t, id)
	require.Equal(t, "IN_PROGRESS", m["status"])
	require.EqualValues(t, 2000, m["delayTime"])
	mc.Advance(100 * time.Millisecond)
	require.Equal(t, "COMPLETED", b.status(t, id)["status"])

	// A warm worker starts the next job at once; after IdleTimeout it is cold again.
	warm := b.run(t, map[string]any{"mock_delay": 100})
	require.Equal(t, "IN_PROGRESS", b.status(t, warm)["status"])
	mc.Advance(100 * time.Millisecond)
	mc.Advance(6 * time.Second)
	cold := b.run(t, map[string]any{"mock_delay": 100})
	require.Equal(t, "IN_QUEUE", b.status(t, cold)["status"])
	mc.Advance(2 * time.Second)
	require.EqualValues(t, 2000, b.status(t, cold)["delayTime"])
}

// §16.9: cancel queued, running (late results dropped), the lost race, and
// cancel on terminal jobs.
func TestCancel(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c); c.GPUWorkers = 1 })
	running := b.run(t, map[string]any{"mock_delay": 1000, "mock_return": "late"})
	queued := b.run(t, map[string]any{"mock_delay": 1000})
	next := b.run(t, map[string]any{"mock_delay": 1000})

	r := b.call(t, "POST", "cancel/"+queued, nil)
	require.Equal(t, 200, r.code)
	require.Equal(t, map[string]any{"id": queued, "status": "CANCELLED"}, r.obj(t))
	require.Equal(t, "CANCELLED", b.status(t, queued)["status"])

	mc.Advance(400 * time.Millisecond)
	r = b.call(t, "POST", "cancel/"+running, []byte("{}"))
	require.Equal(t, 200, r.code)
	require.Equal(t, "CANCELLED", r.obj(t)["status"])
	// The worker is free: the next queued job (not the cancelled one) starts.
	m := b.status(t, next)
	require.Equal(t, "IN_PROGRESS", m["status"])
	require.EqualValues(t, 400, m["delayTime"])
	mc.Advance(2 * time.Second) // the cancelled execution's end timer would have fired
	m = b.status(t, running)
	require.Equal(t, "CANCELLED", m["status"])
	require.NotContains(t, m, "output")
	require.EqualValues(t, 400, m["executionTime"])
	require.Equal(t, "COMPLETED", b.status(t, next)["status"])

	// Cancel on a terminal job: 200 with its status by default, configurable.
	r = b.call(t, "POST", "cancel/"+next, nil)
	require.Equal(t, map[string]any{"id": next, "status": "COMPLETED"}, r.obj(t))
	require.Equal(t, 404, b.call(t, "POST", "cancel/unknown", nil).code)
	require.EqualValues(t, 2, b.sim.Stats().JobsCancelled)

	strict := setup(t, func(c *Config) { c.CancelTerminalStatus = 400; c.MockDelay = time.Millisecond })
	id := strict.run(t, 1)
	strict.eventually(t, id, "COMPLETED")
	require.Equal(t, 400, strict.call(t, "POST", "cancel/"+id, nil).code)
}

func TestCancelRaceCompletionWins(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c); c.CancelRaceProb = 1 })
	id := b.run(t, map[string]any{"mock_delay": 1000, "mock_return": "won"})
	r := b.call(t, "POST", "cancel/"+id, nil)
	require.Equal(t, map[string]any{"id": id, "status": "CANCELLED"}, r.obj(t))
	require.Equal(t, "IN_PROGRESS", b.status(t, id)["status"])
	mc.Advance(time.Second)
	m := b.status(t, id)
	require.Equal(t, "COMPLETED", m["status"])
	require.Equal(t, "won", m["output"])
	info, _ := b.sim.Job(id)
	require.True(t, info.CancelLost)
	require.EqualValues(t, 1, b.sim.Stats().CancelsLost)
}

// §16.10: /retry and /purge-queue.
func TestRetryAndPurge(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c); c.GPUWorkers = 1 })
	failed := b.run(t, map[string]any{"mock_delay": 100, "mock_error": "boom"})
	mc.Advance(100 * time.Millisecond)
	require.Equal(t, "FAILED", b.status(t, failed)["status"])

	r := b.call(t, "POST", "retry/"+failed, nil)
	require.Equal(t, 200, r.code)
	require.Equal(t, map[string]any{"id": failed, "status": "IN_QUEUE"}, r.obj(t))
	m := b.status(t, failed)
	require.Equal(t, "IN_PROGRESS", m["status"])
	require.NotContains(t, m, "error")
	require.EqualValues(t, 1, m["retries"])
	require.EqualValues(t, 1, b.call(t, "GET", "health", nil).obj(t)["jobs"].(map[string]any)["retried"])

	// Non-retryable states: 400 by default.
	require.Equal(t, 400, b.call(t, "POST", "retry/"+failed, nil).code)
	require.Equal(t, 404, b.call(t, "POST", "retry/unknown", nil).code)

	q1 := b.run(t, 1)
	q2 := b.run(t, 2)
	r = b.call(t, "POST", "purge-queue", nil)
	require.Equal(t, map[string]any{"removed": 2.0, "status": "completed"}, r.obj(t))
	require.Equal(t, "CANCELLED", b.status(t, q1)["status"])
	require.Equal(t, "CANCELLED", b.status(t, q2)["status"])
	require.Equal(t, "IN_PROGRESS", b.status(t, failed)["status"], "purge leaves running jobs alone")
	require.EqualValues(t, 2, b.sim.Stats().JobsPurged)

	del := setup(t, func(c *Config) {
		manual(c)
		c.GPUWorkers = 1
		c.PurgeOutcome = OutcomeDelete
		c.RetryInvalidStatus = 404
	})
	busy := del.run(t, map[string]any{"mock_delay": 1000})
	require.Equal(t, 404, del.call(t, "POST", "retry/"+busy, nil).code, "RetryInvalidStatus")
	q := del.run(t, 1)
	require.Equal(t, 1.0, del.call(t, "POST", "purge-queue", nil).obj(t)["removed"])
	require.Equal(t, 404, del.call(t, "GET", "status/"+q, nil).code)
	info, ok := del.sim.Job(q)
	require.True(t, ok)
	require.Equal(t, "purged", info.Removed)
}

// §16.11: /health counters follow the queue.
func TestHealth(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c); c.GPUWorkers = 2 })
	for range 3 {
		b.run(t, map[string]any{"mock_delay": 100})
	}
	b.run(t, map[string]any{"mock_delay": 50, "mock_error": "x"})
	r := b.call(t, "GET", "health", nil)
	require.JSONEq(t, `{"jobs":{"completed":0,"failed":0,"inProgress":2,"inQueue":2,"retried":0},
		"workers":{"idle":0,"initializing":0,"ready":0,"running":2,"throttled":0,"unhealthy":0}}`, string(r.body))
	mc.Advance(100 * time.Millisecond)
	r = b.call(t, "GET", "health", nil)
	require.JSONEq(t, `{"jobs":{"completed":2,"failed":0,"inProgress":2,"inQueue":0,"retried":0},
		"workers":{"idle":0,"initializing":0,"ready":0,"running":2,"throttled":0,"unhealthy":0}}`, string(r.body))
	mc.Advance(100 * time.Millisecond)
	r = b.call(t, "GET", "health", nil)
	require.JSONEq(t, `{"jobs":{"completed":3,"failed":1,"inProgress":0,"inQueue":0,"retried":0},
		"workers":{"idle":2,"initializing":0,"ready":2,"running":0,"throttled":0,"unhealthy":0}}`, string(r.body))
}

// §16.16: the same seed gives the same ids and worker ids.
func TestDeterministicSeed(t *testing.T) {
	t.Parallel()
	ids := func(seed int64) []string {
		b := setup(t, func(c *Config) { manual(c); c.Seed = seed })
		var out []string
		for i := range 3 {
			id := b.run(t, i)
			out = append(out, id, b.status(t, id)["workerId"].(string))
		}
		return out
	}
	require.Equal(t, ids(42), ids(42))
	require.NotEqual(t, ids(42), ids(43))
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{APIKey: "k"},
		{EndpointID: "e"},
		{EndpointID: "e", APIKey: "k", GPUWorkers: -1},
		{EndpointID: "e", APIKey: "k", ExecutionTimeoutOutcome: "CANCELLED"},
		{EndpointID: "e", APIKey: "k", RateLimits: map[string]int{"bogus": 1}},
		{EndpointID: "e", APIKey: "k", TimeScale: -2},
	} {
		_, err := New(cfg)
		require.ErrorIs(t, err, ErrConfig)
		require.NotContains(t, err.Error(), "k\"")
	}
}
