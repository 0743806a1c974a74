package activities

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestConnectionsAreReused: after a burst of concurrent calls, as many
// calls at once again reuse the connections of the first burst instead of
// dialing (against Runpod each would be a TCP and TLS handshake). With
// MaxIdleConnsPerHost 128 the client closed every connection beyond 128
// when the burst ended: 300 calls at once dialed 172 connections again
// each time (3,703 TIME_WAIT sockets after a 5,000-job bench run at
// --concurrency 256).
func TestConnectionsAreReused(t *testing.T) {
	t.Parallel()
	const burst = 300
	var dials atomic.Int64
	var arrived atomic.Int64
	var mu sync.Mutex
	release := map[int64]chan struct{}{1: make(chan struct{}), 2: make(chan struct{})}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A barrier: every call of a burst is in flight before any answers,
		// so the burst holds burst connections at once.
		n := arrived.Add(1)
		round := (n-1)/burst + 1
		mu.Lock()
		ch := release[round]
		mu.Unlock()
		if n == round*burst {
			close(ch)
		}
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"rp-1","status":"IN_QUEUE"}`))
	}))
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	c, err := New(Config{APIKey: testKey, EndpointID: "ep", BaseURL: ts.URL,
		Limiter: NewLocalLimiter(map[string]RateLimit{})})
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func() int64 {
		before := dials.Load()
		var wg sync.WaitGroup
		for range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Status(ctx, "rp-1")
				require.NoError(t, err)
			}()
		}
		wg.Wait()
		return dials.Load() - before
	}
	require.EqualValues(t, burst, run(), "the first burst dials one connection per call")
	// A connection goes back to the idle pool just after its caller read
	// the answer, so a few calls of the next burst may still dial; 172 (all
	// but 128) is the closed pool.
	again := run()
	t.Logf("second burst dialed %d connections", again)
	require.Less(t, again, int64(burst/6), "the second burst reuses the first one's connections")
}
