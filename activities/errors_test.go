package activities

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// answer returns a handler that always answers status with body.
func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, status, body) }
}

// TestErrorClasses checks how each failure of a read (Status) and of a
// submit (Run) is classified, and how many HTTP attempts it costs.
func TestErrorClasses(t *testing.T) {
	t.Parallel()

	const attempts = 3
	tests := []struct {
		name    string
		handler http.HandlerFunc // nil: connection refused
		timeout time.Duration    // per attempt; 0 = a minute (no answer is slow enough to hit it)

		// Status expectations.
		statusCode      int
		statusTransient bool
		statusHits      int64
		statusIs        error

		// Run expectations.
		runTransient bool
		runHits      int64
		runUncertain bool
		runIs        error
	}{
		{name: "400", handler: answer(400, `{"error":"bad input"}`), statusCode: 400,
			statusHits: 1, runHits: 1},
		{name: "401", handler: answer(401, `{"error":"unauthorized"}`), statusCode: 401,
			statusHits: 1, statusIs: ErrUnauthorized, runHits: 1, runIs: ErrUnauthorized},
		{name: "403", handler: answer(403, ``), statusCode: 403,
			statusHits: 1, statusIs: ErrUnauthorized, runHits: 1, runIs: ErrUnauthorized},
		{name: "404", handler: answer(404, `{"message":"Not Found"}`), statusCode: 404,
			statusHits: 1, statusIs: workflow.ErrRunpodJobNotFound, runHits: 1},
		{name: "408", handler: answer(408, ``), statusCode: 408, statusTransient: true,
			statusHits: attempts, runTransient: true, runHits: attempts},
		{name: "429", handler: answer(429, `{"error":"rate limited"}`), statusCode: 429, statusTransient: true,
			statusHits: attempts, runTransient: true, runHits: attempts},
		{name: "500", handler: answer(500, `{"error":"boom"}`), statusCode: 500, statusTransient: true,
			statusHits: attempts, runHits: 1, runUncertain: true},
		{name: "502", handler: answer(502, `<html>bad gateway</html>`), statusCode: 502, statusTransient: true,
			statusHits: attempts, runHits: 1, runUncertain: true},
		{name: "503", handler: answer(503, ``), statusCode: 503, statusTransient: true,
			statusHits: attempts, runTransient: true, runHits: attempts},
		{name: "504", handler: answer(504, ``), statusCode: 504, statusTransient: true,
			statusHits: attempts, runHits: 1, runUncertain: true},
		{name: "truncated 200 body", handler: answer(200, `{"id":"x","sta`), statusCode: 200, statusTransient: true,
			statusHits: attempts, statusIs: ErrBadResponse, runHits: 1, runUncertain: true, runIs: ErrBadResponse},
		{name: "200 without id", handler: answer(200, `{"status":"IN_QUEUE"}`), statusCode: 0,
			statusHits: 1, runHits: 1, runUncertain: true, runIs: ErrBadResponse},
		// The hung request's attempts time out once the server holds them
		// (expireOnArrival), not after a real delay that could end before
		// the request arrived.
		{name: "hung request", handler: hang, timeout: 100 * time.Millisecond, statusTransient: true,
			statusHits: attempts, statusIs: ErrAttemptTimeout, runHits: 1, runUncertain: true, runIs: ErrAttemptTimeout},
		{name: "dropped connection", handler: dropConnection, statusTransient: true,
			statusHits: attempts, runHits: 1, runUncertain: true},
		{name: "connection refused", handler: nil, statusTransient: true, runTransient: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			handler := tt.handler
			var arrived chan struct{}
			if tt.timeout != 0 {
				arrived = make(chan struct{})
				handler = func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.ReadAll(r.Body)
					select {
					case arrived <- struct{}{}:
					case <-r.Context().Done():
					}
					tt.handler(w, r)
				}
			}
			b := setup(t, handler, func(c *Config) {
				c.MaxAttempts = attempts
				// Only the hung request may time out: on a loaded machine an
				// answered request can take seconds, and a timeout would change
				// its class (ErrAttemptTimeout, an uncertain /run).
				c.RequestTimeout = time.Minute
				if tt.timeout != 0 {
					c.RequestTimeout = tt.timeout
				}
				if tt.handler == nil {
					c.BaseURL = refusedURL(t)
				}
			})
			if arrived != nil {
				expireOnArrival(b.client, arrived)
			}
			hits := func() int64 {
				if b.server == nil {
					return 0
				}
				return b.server.hits.Swap(0)
			}
			ctx := context.Background()

			job, err := b.client.Status(ctx, "job-1-u1")
			var ae *workflow.ActivityError
			if tt.name == "200 without id" {
				// A status answer without an id is still a job object.
				require.NoError(t, err)
				require.Equal(t, workflow.RunpodInQueue, job.Status)
			} else {
				require.ErrorAs(t, err, &ae)
				require.Equal(t, OpStatus, ae.Op)
				require.Equal(t, tt.statusCode, ae.StatusCode)
				require.Equal(t, tt.statusTransient, ae.Transient, "status transient: %v", err)
				require.Equal(t, tt.statusTransient, workflow.IsTransient(err))
				require.NotErrorIs(t, err, workflow.ErrSubmitUncertain)
				if tt.statusIs != nil {
					require.ErrorIs(t, err, tt.statusIs)
				}
			}
			require.Equal(t, tt.statusHits, hits(), "status attempts")

			_, err = b.client.Run(ctx, workflow.RunRequest{Input: json.RawMessage(`{}`)})
			require.ErrorAs(t, err, &ae)
			require.Equal(t, OpRun, ae.Op)
			require.Equal(t, tt.runTransient, ae.Transient, "run transient: %v", err)
			require.Equal(t, tt.runUncertain, errors.Is(err, workflow.ErrSubmitUncertain), "run uncertain: %v", err)
			if tt.runUncertain {
				require.False(t, workflow.IsTransient(err), "an uncertain submit must not look retryable")
			}
			if tt.runIs != nil {
				require.ErrorIs(t, err, tt.runIs)
			}
			require.Equal(t, tt.runHits, hits(), "run attempts")

			requireNoKey(t, err.Error())
			requireNoKey(t, b.logs.String())
		})
	}
}

// TestNotFoundOnJobOperations: every job-scoped 404 means "job unknown or
// expired"; on /health it means the endpoint is wrong.
func TestNotFoundOnJobOperations(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(404, `{"message":"Not Found"}`), nil)
	ctx := context.Background()
	_, err := b.client.Status(ctx, "gone-u1")
	require.ErrorIs(t, err, workflow.ErrRunpodJobNotFound)
	require.Contains(t, err.Error(), "job unknown or expired")
	_, err = b.client.Cancel(ctx, "gone-u1")
	require.ErrorIs(t, err, workflow.ErrRunpodJobNotFound)
	_, err = b.client.Stream(ctx, "gone-u1")
	require.ErrorIs(t, err, workflow.ErrRunpodJobNotFound)
	_, err = b.client.Retry(ctx, "gone-u1")
	require.ErrorIs(t, err, workflow.ErrRunpodJobNotFound)
	_, err = b.client.Health(ctx)
	require.NotErrorIs(t, err, workflow.ErrRunpodJobNotFound)
	require.Contains(t, err.Error(), "endpoint "+testEndpoint+" not found")
	require.Equal(t, int64(5), b.server.hits.Load(), "404 is never retried")
	require.Equal(t, []string{"permanent", "permanent", "permanent", "permanent", "permanent"}, b.outcomes())
}

// TestRunRetriedWhenNothingWasCreated: /run is retried after a 503 (Runpod
// refused it) and then succeeds; the caller sees the one job created.
func TestRunRetriedWhenNothingWasCreated(t *testing.T) {
	t.Parallel()
	var b *testBundle
	b = setup(t, func(w http.ResponseWriter, _ *http.Request) {
		if b.server.hits.Load() == 1 {
			writeJSON(w, 503, ``)
			return
		}
		writeJSON(w, 200, `{"id":"job-9-u1","status":"IN_QUEUE"}`)
	}, nil)
	job, err := b.client.Run(context.Background(), workflow.RunRequest{Input: json.RawMessage(`{}`)})
	require.NoError(t, err)
	require.Equal(t, "job-9-u1", job.ID)
	require.Equal(t, int64(2), b.server.hits.Load())
	require.Equal(t, []string{"ok"}, b.outcomes())
}

// TestCanceledInFlight: cancelling the caller's context mid-request ends
// the call promptly with a non-transient error matching context.Canceled
// and the cause; for /run after the write it is also uncertain.
func TestCanceledInFlight(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 2)
	b := setup(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		hang(w, r)
	}, nil)
	stopping := errors.New("worker stopping")

	ctx, cancel := context.WithCancelCause(context.Background())
	go func() { <-arrived; cancel(stopping) }()
	_, err := b.client.Status(ctx, "job-1-u1")
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, err, stopping)
	require.False(t, workflow.IsTransient(err))
	require.NotErrorIs(t, err, workflow.ErrSubmitUncertain)

	ctx, cancel = context.WithCancelCause(context.Background())
	go func() { <-arrived; cancel(stopping) }()
	_, err = b.client.Run(ctx, workflow.RunRequest{Input: json.RawMessage(`{}`)})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, err, workflow.ErrSubmitUncertain)
	require.False(t, workflow.IsTransient(err))

	require.Equal(t, int64(2), b.server.hits.Load())
	require.Equal(t, []string{"canceled", "uncertain"}, b.outcomes())
	require.Equal(t, "closed", b.client.BreakerState())
}

// TestWorkerFaultClasses: 401/403 on any call and 404 outside a job are the
// worker's fault (workflow.ErrWorkerFault); a 404 on a job is not.
func TestWorkerFaultClasses(t *testing.T) {
	t.Parallel()
	for _, code := range []int{401, 403} {
		b := setup(t, answer(code, `{"error":"unauthorized"}`), nil)
		_, err := b.client.Status(t.Context(), "job-1")
		require.ErrorIs(t, err, workflow.ErrWorkerFault, "status %d", code)
		require.ErrorIs(t, err, ErrUnauthorized)
		_, err = b.client.Run(t.Context(), workflow.RunRequest{Input: []byte(`{}`)})
		require.ErrorIs(t, err, workflow.ErrWorkerFault, "run %d", code)
		require.ErrorIs(t, b.client.CheckEndpoint(t.Context()), workflow.ErrWorkerFault)
	}
	b := setup(t, answer(404, `{"error":"not found"}`), nil)
	_, err := b.client.Run(t.Context(), workflow.RunRequest{Input: []byte(`{}`)})
	require.ErrorIs(t, err, workflow.ErrWorkerFault, "404 on /run: the endpoint")
	require.ErrorIs(t, b.client.CheckEndpoint(t.Context()), workflow.ErrWorkerFault, "404 on /health: the endpoint")
	_, err = b.client.Status(t.Context(), "job-1")
	require.ErrorIs(t, err, workflow.ErrRunpodJobNotFound)
	require.NotErrorIs(t, err, workflow.ErrWorkerFault, "404 on a job: the job (the worker confirms with CheckEndpoint)")
}

// expireOnArrival makes each of c's attempts time out (cause
// ErrAttemptTimeout) as soon as the server signals on arrived that it holds
// the request, never before: a real 100 ms timeout could expire while the
// request was still being dialed or read on a loaded machine, so the server
// would count fewer hits and a /run would not be uncertain.
func expireOnArrival(c *Client, arrived <-chan struct{}) {
	c.attemptContext = func(ctx context.Context, _ time.Duration) (context.Context, context.CancelFunc) {
		actx, cancel := context.WithCancelCause(ctx)
		go func() {
			select {
			case <-arrived:
				cancel(ErrAttemptTimeout)
			case <-actx.Done():
			}
		}()
		return actx, func() { cancel(context.Canceled) }
	}
}
