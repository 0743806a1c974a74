package activities

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// transitions records breaker state changes.
type transitions struct {
	mu  sync.Mutex
	all []string
}

func (tr *transitions) record(endpoint, from, to string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.all = append(tr.all, endpoint+":"+from+"->"+to)
}

func (tr *transitions) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.all...)
}

// Server modes for the breaker tests.
const (
	modeFail  int32 = iota // 503
	modeBlock              // wait for release, then 200
	modeOK                 // 200
)

// TestBreakerLifecycle walks the circuit through closed → open (after
// BreakerFailures transient failures) → rejecting without sending →
// half-open with a single probe (a concurrent call is rejected) → closed
// after the probe succeeds, and then through a failed probe → open again.
func TestBreakerLifecycle(t *testing.T) {
	t.Parallel()
	var mode atomic.Int32
	probeArrived := make(chan struct{}, 1)
	release := make(chan struct{})
	var tr transitions
	b := setup(t, func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case modeFail:
			writeJSON(w, 503, ``)
		case modeBlock:
			probeArrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			writeJSON(w, 200, `{"id":"job-1-u1","status":"IN_QUEUE"}`)
		default:
			writeJSON(w, 200, `{"id":"job-1-u1","status":"IN_QUEUE"}`)
		}
	}, func(c *Config) {
		c.BreakerFailures = 3
		c.BreakerOpenTimeout = 150 * time.Millisecond
		c.MaxAttempts = 2 // each call makes two attempts: failures count per attempt
		c.OnBreakerStateChange = tr.record
	})
	c := b.client
	ctx := context.Background()

	// Opening: 2 attempts + 1 attempt reach 3 consecutive failures; the
	// second call's retry is rejected by the now-open circuit.
	_, err := c.Status(ctx, "job-1-u1")
	require.ErrorAs(t, err, new(*workflow.ActivityError))
	require.Equal(t, "closed", c.BreakerState())
	_, err = c.Status(ctx, "job-1-u1")
	require.ErrorIs(t, err, workflow.ErrCircuitOpen)
	require.Contains(t, err.Error(), "HTTP 503", "the rejection keeps the failure that caused it")
	require.Equal(t, "open", c.BreakerState())
	require.Equal(t, int64(3), b.server.hits.Load())

	// Rejecting: nothing is sent while open.
	_, err = c.Run(ctx, workflow.RunRequest{Input: []byte(`{}`)})
	require.ErrorIs(t, err, workflow.ErrCircuitOpen)
	require.True(t, workflow.IsTransient(err))
	require.NotErrorIs(t, err, workflow.ErrSubmitUncertain)
	require.Equal(t, int64(3), b.server.hits.Load())

	// Half-open after the timeout.
	require.Eventually(t, func() bool { return c.BreakerState() == "half-open" },
		2*time.Second, 10*time.Millisecond)

	// Single probe: while it is in flight, another call is rejected.
	mode.Store(modeBlock)
	probeDone := make(chan error, 1)
	go func() {
		_, err := c.Status(ctx, "job-1-u1")
		probeDone <- err
	}()
	select {
	case <-probeArrived:
	case <-time.After(5 * time.Second):
		t.Fatal("probe did not reach the server")
	}
	_, err = c.Status(ctx, "job-1-u1")
	require.ErrorIs(t, err, workflow.ErrCircuitOpen)
	require.Equal(t, int64(4), b.server.hits.Load(), "only the probe was sent")

	// Closing: the probe succeeds.
	close(release)
	require.NoError(t, <-probeDone)
	require.Equal(t, "closed", c.BreakerState())
	mode.Store(modeOK)
	_, err = c.Status(ctx, "job-1-u1")
	require.NoError(t, err)

	// A failed probe reopens the circuit.
	mode.Store(modeFail)
	for range 2 {
		_, _ = c.Status(ctx, "job-1-u1")
	}
	require.Equal(t, "open", c.BreakerState())
	require.Eventually(t, func() bool { return c.BreakerState() == "half-open" },
		2*time.Second, 10*time.Millisecond)
	before := b.server.hits.Load()
	_, err = c.Status(ctx, "job-1-u1")
	require.ErrorIs(t, err, workflow.ErrCircuitOpen, "the probe fails, its retry is rejected")
	require.Equal(t, before+1, b.server.hits.Load(), "the probe itself is sent")
	require.Equal(t, "open", c.BreakerState())

	e := testEndpoint + ":"
	require.Equal(t, []string{
		e + "closed->open", e + "open->half-open", e + "half-open->closed",
		e + "closed->open", e + "open->half-open", e + "half-open->open",
	}, tr.get())
	require.Contains(t, b.logs.String(), "circuit breaker state changed")
	require.Contains(t, b.outcomes(), OutcomeCircuitOpen)
}

// TestBreakerIgnores: permanent errors, 429s and cancellations never open
// the circuit, and a permanent error resets the run of failures.
func TestBreakerIgnores(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		handler http.HandlerFunc
		call    func(*Client) error
	}{
		"404": {handler: answer(404, ``), call: func(c *Client) error {
			_, err := c.Status(context.Background(), "gone")
			return err
		}},
		"400": {handler: answer(400, ``), call: func(c *Client) error {
			_, err := c.Run(context.Background(), workflow.RunRequest{Input: []byte(`{}`)})
			return err
		}},
		"401": {handler: answer(401, ``), call: func(c *Client) error {
			_, err := c.Health(context.Background())
			return err
		}},
		"429": {handler: answer(429, ``), call: func(c *Client) error {
			_, err := c.Status(context.Background(), "job")
			return err
		}},
		"canceled": {handler: hang, call: func(c *Client) error {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := c.Status(ctx, "job")
			return err
		}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.handler, func(c *Config) {
				c.BreakerFailures = 2
				c.MaxAttempts = 1
			})
			for range 5 {
				require.Error(t, tt.call(b.client))
			}
			require.Equal(t, "closed", b.client.BreakerState())
			require.Equal(t, int64(5), b.server.hits.Load())
		})
	}

	t.Run("permanent error resets the failure run", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		b := setup(t, func(w http.ResponseWriter, _ *http.Request) {
			if n.Add(1)%2 == 0 {
				writeJSON(w, 404, ``)
				return
			}
			writeJSON(w, 500, ``)
		}, func(c *Config) {
			c.BreakerFailures = 2
			c.MaxAttempts = 1
		})
		for range 6 { // 500, 404, 500, 404, ...
			_, _ = b.client.Status(context.Background(), "job")
		}
		require.Equal(t, "closed", b.client.BreakerState())
	})
}
