package runpodsim

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// §16.13: scripted statuses, Retry-After on injected 429s, pass-through.
func TestFaultScript(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	require.NoError(t, b.sim.SetFaults(OpHealth, Faults{Script: []int{500, 502, 0, 503, 504, 429}, Retry429After: "3"}))
	var codes []int
	for range 7 {
		r := b.call(t, "GET", "health", nil)
		codes = append(codes, r.code)
		if r.code == 429 {
			require.Equal(t, "3", r.header.Get("Retry-After"))
		}
		require.True(t, json.Valid(r.body))
	}
	require.Equal(t, []int{500, 502, 200, 503, 504, 429, 200}, codes)
	st := b.sim.Stats()
	require.EqualValues(t, 5, st.Faults[OpHealth])
	require.EqualValues(t, 7, st.Requests[OpHealth])
	require.EqualValues(t, 1, st.FaultsInjected["429"])

	// Without Retry-After, and garbage.
	require.NoError(t, b.sim.SetFaults(OpHealth, Faults{Script: []int{429}}))
	r := b.call(t, "GET", "health", nil)
	require.Equal(t, 429, r.code)
	require.Empty(t, r.header.Get("Retry-After"))
	require.NoError(t, b.sim.SetFaults(OpHealth, Faults{Script: []int{429}, Retry429After: "soon-ish"}))
	require.Equal(t, "soon-ish", b.call(t, "GET", "health", nil).header.Get("Retry-After"))

	// Faults are per operation; "*" covers the rest.
	b.sim.ClearFaults()
	require.NoError(t, b.sim.SetFaults(AllOps, Faults{Status: map[int]float64{503: 1}}))
	require.NoError(t, b.sim.SetFaults(OpHealth, Faults{}))
	require.Equal(t, 200, b.call(t, "GET", "health", nil).code)
	require.Equal(t, 503, b.call(t, "GET", "status/x", nil).code)
	require.Zero(t, b.sim.Stats().JobsCreated)
	require.Equal(t, 503, b.call(t, "POST", "run", map[string]any{"input": 1}).code)
	require.Zero(t, b.sim.Stats().JobsCreated, "a fault before the operation creates nothing")
}

// §16.13 and §16.16: probabilities are seeded, so the sequence repeats.
func TestFaultProbabilitySeeded(t *testing.T) {
	t.Parallel()
	seq := func(seed int64) []int {
		b := setup(t, func(c *Config) { c.Seed = seed })
		require.NoError(t, b.sim.SetFaults(OpHealth, Faults{Status: map[int]float64{500: 0.2, 503: 0.2, 429: 0.1}}))
		var out []int
		for range 200 {
			out = append(out, b.call(t, "GET", "health", nil).code)
		}
		return out
	}
	a := seq(5)
	require.Equal(t, a, seq(5))
	count := map[int]int{}
	for _, c := range a {
		count[c]++
	}
	// 50% faults in expectation; allow generous slack but demand each code.
	require.InDelta(t, 100, count[200], 30, "counts %v", count)
	for _, c := range []int{500, 503, 429} {
		require.Positive(t, count[c], "counts %v", count)
	}
}

// §16.13: "after" faults: the operation takes effect, the client sees an error.
func TestFaultAfterOperation(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	require.NoError(t, b.sim.SetFaults(OpRun, Faults{Script: []int{502, ScriptDrop}, After: true}))
	require.Equal(t, 502, b.call(t, "POST", "run", map[string]any{"input": "a"}).code)
	req, _ := http.NewRequest("POST", b.base+"/run", strings.NewReader(`{"input":"b"}`))
	req.Header.Set("Authorization", testKey)
	_, err := b.hc.Do(req)
	require.Error(t, err, "dropped connection")
	jobs := b.sim.Jobs()
	require.Len(t, jobs, 2, "both jobs were created although the client saw errors")
	require.JSONEq(t, `"a"`, string(jobs[0].Input))
	require.JSONEq(t, `"b"`, string(jobs[1].Input))
}

// §16.13: dropped connections, hung requests, invalid JSON, latency.
func TestFaultNetwork(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MockDelay = time.Millisecond })
	id := b.run(t, 1)
	b.eventually(t, id, "COMPLETED")

	require.NoError(t, b.sim.SetFaults(OpStatus, Faults{Script: []int{ScriptDrop}}))
	// Go's transport silently retries an idempotent request whose reused
	// connection was closed, so use a fresh connection to see the drop.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	_, err := fresh.Do(authed(t, "GET", b.base+"/status/"+id))
	require.Error(t, err)
	var urlErr interface{ Timeout() bool }
	require.True(t, errors.As(err, &urlErr))
	require.False(t, urlErr.Timeout(), "a drop is not a timeout: %v", err)

	require.NoError(t, b.sim.SetFaults(OpStatus, Faults{Script: []int{ScriptHang}}))
	seen := b.sim.Stats().Requests[OpStatus]
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = b.hc.Do(authed(t, "GET", b.base+"/status/"+id).WithContext(ctx))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
	// On a loaded machine the client can give up before the request reaches
	// the simulator; the script entry must be consumed by this request, not
	// by the next one.
	require.Eventually(t, func() bool { return b.sim.Stats().Requests[OpStatus] > seen }, 30*time.Second, 5*time.Millisecond)

	require.NoError(t, b.sim.SetFaults(OpStatus, Faults{Script: []int{ScriptInvalidJSON}}))
	r := b.call(t, "GET", "status/"+id, nil)
	require.Equal(t, 200, r.code)
	require.False(t, json.Valid(r.body), "body %s", r.body)

	require.NoError(t, b.sim.SetFaults(OpStatus, Faults{Latency: 80 * time.Millisecond, Jitter: 10 * time.Millisecond}))
	start = time.Now()
	require.Equal(t, 200, b.call(t, "GET", "status/"+id, nil).code)
	require.GreaterOrEqual(t, time.Since(start), 80*time.Millisecond)

	st := b.sim.Stats()
	require.EqualValues(t, 1, st.FaultsInjected["drop"])
	require.EqualValues(t, 1, st.FaultsInjected["hang"])
	require.EqualValues(t, 1, st.FaultsInjected["invalid_json"])
	require.EqualValues(t, 1, st.FaultsInjected["latency"])
}

// A hung request is released when the simulator closes.
func TestHangReleasedOnClose(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	require.NoError(t, b.sim.SetFaults(OpHealth, Faults{HangProb: 1}))
	ch := b.async(t, "GET", "health")
	require.Eventually(t, func() bool { return b.sim.Stats().FaultsInjected["hang"] == 1 }, waitMax, time.Millisecond)
	b.sim.Close()
	r := recv(t, ch)
	require.NotEqual(t, 200, r.code)
	require.Equal(t, 503, b.call(t, "GET", "health", nil).code, "closed simulator")
}

func authed(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	return req
}

// Faults at run time over HTTP.
func TestFaultsOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	r := b.raw(t, "POST", b.root+"/_sim/faults", []byte(`{"health":{"script":[503,0],"latency":"5ms"},"run":{"status":{"500":0.5},"after":true}}`), nil)
	require.Equal(t, 200, r.code, "%s", r.body)
	got := b.sim.Faults()
	require.Equal(t, []int{503, 0}, got[OpHealth].Script)
	require.Equal(t, 5*time.Millisecond, got[OpHealth].Latency)
	require.Equal(t, 0.5, got[OpRun].Status[500])
	require.True(t, got[OpRun].After)
	require.Equal(t, 503, b.call(t, "GET", "health", nil).code)

	r = b.raw(t, "GET", b.root+"/_sim/faults", nil, nil)
	require.Contains(t, string(r.body), `"latency":"5ms"`)
	require.Equal(t, 400, b.raw(t, "POST", b.root+"/_sim/faults", []byte(`{"bogus":{}}`), nil).code)
	require.Equal(t, 400, b.raw(t, "POST", b.root+"/_sim/faults", []byte(`{"run":{"status":{"500":7}}}`), nil).code)
	require.Equal(t, 200, b.raw(t, "DELETE", b.root+"/_sim/faults", nil, nil).code)
	require.Empty(t, b.sim.Faults())
}

func TestParseFaultSpec(t *testing.T) {
	t.Parallel()
	op, f, err := ParseFaultSpec("status:500=0.1,429=0.2,retry-after=7,latency=20ms,jitter=5ms,hang=0.01,drop=0.02,invalid-json=0.03,script=500/pass/hang/drop/invalid-json/503,after")
	require.NoError(t, err)
	require.Equal(t, OpStatus, op)
	require.Equal(t, Faults{
		Status: map[int]float64{500: 0.1, 429: 0.2}, Retry429After: "7", Latency: 20 * time.Millisecond, Jitter: 5 * time.Millisecond,
		HangProb: 0.01, DropProb: 0.02, InvalidJSONProb: 0.03,
		Script: []int{500, ScriptPass, ScriptHang, ScriptDrop, ScriptInvalidJSON, 503}, After: true,
	}, f)
	op, _, err = ParseFaultSpec("*:503=1")
	require.NoError(t, err)
	require.Equal(t, AllOps, op)
	for _, bad := range []string{"", "status", "status:", "nope:500=0.1", "run:500=1.5", "run:abc=0.1", "run:latency=fast", "run:script=500/x", "run:99=0.1", "run:hang=-1"} {
		_, _, err := ParseFaultSpec(bad)
		require.Error(t, err, bad)
	}
}

// §16.12: per-operation windows of 10 s (simulated), Retry-After modes,
// shared status bucket, concurrency caps, the dynamic bonus and queue limit.
func TestRateLimits(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) {
		mc = manual(c)
		c.DisableRateLimits = false
		c.RateLimits = map[string]int{OpRun: 3, OpStatus: 2}
		c.RateLimitRetryAfter = "auto"
	})
	for range 3 {
		b.run(t, map[string]any{"mock_delay": 1e9})
	}
	mc.Advance(4 * time.Second)
	r := b.call(t, "POST", "run", map[string]any{"input": 1})
	require.Equal(t, 429, r.code)
	require.Equal(t, "6", r.header.Get("Retry-After"))
	require.Len(t, b.sim.Jobs(), 3, "a rate-limited /run creates nothing")
	// Other operations have their own buckets; status-sync shares status's.
	id := b.sim.Jobs()[0].ID
	require.Equal(t, 200, b.call(t, "GET", "status/"+id, nil).code)
	require.Equal(t, 200, b.call(t, "GET", "status/"+id, nil).code)
	require.Equal(t, 429, b.call(t, "GET", "status-sync/"+id, nil).code)
	require.Equal(t, 200, b.call(t, "GET", "health", nil).code, "health is unlimited")
	// The next window.
	mc.Advance(6 * time.Second)
	require.Equal(t, 200, b.call(t, "POST", "run", map[string]any{"input": 1}).code)
	st := b.sim.Stats()
	require.EqualValues(t, 1, st.RateLimited[OpRun])
	require.EqualValues(t, 1, st.RateLimited[OpStatusSync])

	// Defaults are Runpod's numbers: /purge-queue allows 2 per window.
	d := setup(t, func(c *Config) { manual(c); c.DisableRateLimits = false; c.RateLimitRetryAfter = "garbage!" })
	require.Equal(t, 200, d.call(t, "POST", "purge-queue", nil).code)
	require.Equal(t, 200, d.call(t, "POST", "purge-queue", nil).code)
	r = d.call(t, "POST", "purge-queue", nil)
	require.Equal(t, 429, r.code)
	require.Equal(t, "garbage!", r.header.Get("Retry-After"))

	// Dynamic limit: running workers × per-worker bonus; and the queue limit.
	dyn := setup(t, func(c *Config) {
		manual(c)
		c.DisableRateLimits = false
		c.GPUWorkers = 2
		c.RateLimits = map[string]int{OpRun: 1}
		c.RateLimitPerWorker = 2
		c.QueueLimit = 1
	})
	dyn.run(t, map[string]any{"mock_delay": 1e9}) // 1 running: limit max(1, 2) = 2
	dyn.run(t, map[string]any{"mock_delay": 1e9}) // 2 running: limit 4
	dyn.run(t, map[string]any{"mock_delay": 1e9}) // queued
	r = dyn.call(t, "POST", "run", map[string]any{"input": 1})
	require.Equal(t, 429, r.code, "queue limit")
	require.Empty(t, r.header.Get("Retry-After"))
}

func TestConcurrencyCap(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.DisableRateLimits = false
		c.ConcurrencyLimits = map[string]int{OpStatusSync: 0, OpStatus: 1}
		c.MockDelay = time.Hour
	})
	id := b.run(t, 1)
	ch := b.async(t, "GET", "status-sync/"+id+"?wait=60000")
	require.Eventually(t, func() bool {
		r := b.call(t, "GET", "status/"+id, nil)
		return r.code == 429
	}, waitMax, time.Millisecond, "a held status-sync occupies the status bucket's only slot")
	b.sim.Close()
	recv(t, ch)
}
