package activities

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/syncbuf"
)

// testKey is distinctive so that any leak of it is found by substring.
const testKey = "rpa_SECRETKEY_0123456789abcdefLEAKCHECK"

const testEndpoint = "ep_test-123"

// testServer is an httptest server that counts requests.
type testServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newTestServer(t *testing.T, h http.HandlerFunc) *testServer {
	t.Helper()
	ts := &testServer{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts
}

// callRecord is one OnCall invocation.
type callRecord struct {
	op, outcome string
}

type testBundle struct {
	client *Client
	server *testServer
	logs   *syncbuf.Buffer
	mu     sync.Mutex
	calls  []callRecord
}

func (b *testBundle) outcomes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.calls))
	for _, c := range b.calls {
		out = append(out, c.outcome)
	}
	return out
}

// setup starts a server with h and a client for it with fast retries, no
// rate limit, a breaker that does not trip, and trace logging to a buffer.
// mutate may adjust the config before New.
func setup(t *testing.T, h http.HandlerFunc, mutate func(*Config)) *testBundle {
	t.Helper()
	b := &testBundle{logs: &syncbuf.Buffer{}}
	if h != nil {
		b.server = newTestServer(t, h)
	}
	cfg := Config{
		APIKey:              testKey,
		EndpointID:          testEndpoint,
		BaseURL:             "http://127.0.0.1:1/v2",
		RequestTimeout:      2 * time.Second,
		RetryInitialBackoff: time.Millisecond,
		RetryMaxBackoff:     5 * time.Millisecond,
		BreakerFailures:     1000,
		Limiter:             NewLocalLimiter(nil),
		Logger: hclog.New(&hclog.LoggerOptions{
			Output: b.logs, Level: hclog.Trace, DisableTime: true,
		}),
		OnCall: func(op, outcome string, _ time.Duration) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.calls = append(b.calls, callRecord{op, outcome})
		},
	}
	if b.server != nil {
		cfg.BaseURL = b.server.URL + "/v2"
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)
	b.client = c
	return b
}

// writeJSON answers with status and a raw JSON body.
func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// dropConnection closes the connection without an answer, after reading
// the whole request (so the client has certainly written it).
func dropConnection(w http.ResponseWriter, r *http.Request) {
	_, _ = io.ReadAll(r.Body)
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	_ = conn.Close()
}

// hang blocks until the client goes away. It reads the body first: the
// server only notices a client hang-up once the body is consumed.
func hang(_ http.ResponseWriter, r *http.Request) {
	_, _ = io.ReadAll(r.Body)
	<-r.Context().Done()
}

// refusedURL returns a base URL on which nothing listens.
func refusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr + "/v2"
}

// requireNoKey fails if the API key appears in s.
func requireNoKey(t *testing.T, s string) {
	t.Helper()
	require.False(t, strings.Contains(s, testKey), "API key leaked into: %s", s)
}
