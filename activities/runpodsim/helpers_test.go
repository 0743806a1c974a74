package runpodsim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testEndpoint = "abcdefgh012345"
	testKey      = "rpa_TESTKEY_secret"
)

// testBundle is a simulator behind a real loopback HTTP server and a small
// client that speaks Runpod's API.
type testBundle struct {
	sim   *Sim
	srv   *httptest.Server
	base  string // {root}/v2/{endpoint}
	root  string
	clock *ManualClock // nil unless the config used one
	hc    *http.Client
}

// setup starts a simulator; mutate adjusts the config (may be nil).
func setup(t *testing.T, mutate func(*Config)) *testBundle {
	t.Helper()
	cfg := Config{EndpointID: testEndpoint, APIKey: testKey, Seed: 1, DisableRateLimits: true}
	if mutate != nil {
		mutate(&cfg)
	}
	sim, err := New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(sim)
	hc := &http.Client{Timeout: waitMax, Transport: &http.Transport{}}
	// Cleanups run last-in first-out: the simulator closes first so held
	// requests return before the server waits for them.
	t.Cleanup(srv.Close)
	t.Cleanup(hc.CloseIdleConnections)
	t.Cleanup(sim.Close)
	b := &testBundle{sim: sim, srv: srv, root: srv.URL, base: srv.URL + "/v2/" + testEndpoint, hc: hc}
	if mc, ok := cfg.Clock.(*ManualClock); ok {
		b.clock = mc
	}
	return b
}

func manual(c *Config) *ManualClock {
	mc := NewManualClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	c.Clock = mc
	return mc
}

type result struct {
	code   int
	body   []byte
	header http.Header
}

// obj decodes the body as a JSON object.
func (r result) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body %s", r.body)
	return m
}

// raw sends a request with explicit headers; body may be nil, []byte or a
// value to encode.
func (b *testBundle) raw(t *testing.T, method, url string, body any, header http.Header) result {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(v)
	default:
		enc, err := json.Marshal(v)
		require.NoError(t, err)
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, url, rd)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := b.hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return result{code: resp.StatusCode, body: data, header: resp.Header}
}

// call sends an authorised request to {base}/{path}.
func (b *testBundle) call(t *testing.T, method, path string, body any) result {
	t.Helper()
	return b.raw(t, method, b.base+"/"+path, body, http.Header{"Authorization": {"Bearer " + testKey}})
}

// run submits input with /run and returns the job id.
func (b *testBundle) run(t *testing.T, input any) string {
	t.Helper()
	r := b.call(t, http.MethodPost, "run", map[string]any{"input": input})
	require.Equal(t, http.StatusOK, r.code, "body %s", r.body)
	m := r.obj(t)
	require.Equal(t, "IN_QUEUE", m["status"])
	return m["id"].(string)
}

func (b *testBundle) status(t *testing.T, id string) map[string]any {
	t.Helper()
	r := b.call(t, http.MethodGet, "status/"+id, nil)
	require.Equal(t, http.StatusOK, r.code, "body %s", r.body)
	return r.obj(t)
}

// eventually polls /status until the job has the wanted status.
func (b *testBundle) eventually(t *testing.T, id, want string) map[string]any {
	t.Helper()
	var last map[string]any
	require.Eventually(t, func() bool {
		last = b.status(t, id)
		return last["status"] == want
	}, waitMax, 2*time.Millisecond, "job %s never reached %s", id, want)
	return last
}

// async runs a request in the background (for long polls).
func (b *testBundle) async(t *testing.T, method, path string) <-chan result {
	t.Helper()
	return b.asyncPost(t, method+" "+path, "")
}

// asyncPost runs a POST with body in the background; path may start with
// "METHOD " to use another method.
func (b *testBundle) asyncPost(t *testing.T, path, body string) <-chan result {
	t.Helper()
	method := http.MethodPost
	if m, p, ok := strings.Cut(path, " "); ok {
		method, path = m, p
	}
	ch := make(chan result, 1)
	go func() {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, b.base+"/"+path, rd)
		req.Header.Set("Authorization", testKey)
		resp, err := b.hc.Do(req)
		if err != nil {
			ch <- result{code: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		ch <- result{code: resp.StatusCode, body: data, header: resp.Header}
	}()
	return ch
}

// waitMax bounds every wait of these tests for something that must happen
// (a goroutine reaching its point, a request returning). It is generous
// on purpose: a loaded 2-core CI box may take seconds to schedule one, and
// a wait that passes never waits this long.
const waitMax = time.Minute

// waitTimers waits until the manual clock has at least n pending timers, so
// a long poll has registered its wait before the test advances time.
func (b *testBundle) waitTimers(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return b.clock.PendingTimers() >= n }, waitMax, time.Millisecond)
}

func recv(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitMax):
		t.Fatal("request did not return")
		return result{}
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
