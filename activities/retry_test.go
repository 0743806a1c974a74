package activities

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// hitLog records when the server saw each request.
type hitLog struct {
	mu    sync.Mutex
	times []time.Time
}

func (h *hitLog) add() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.times = append(h.times, time.Now())
	return len(h.times)
}

func (h *hitLog) all() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.times...)
}

// maxJitter makes backoff deterministic: always the full ceiling.
func maxJitter(ceiling time.Duration) time.Duration { return ceiling }

// noJitter isolates Retry-After from backoff.
func noJitter(time.Duration) time.Duration { return 0 }

// TestRetriesStopAtDeadline: with a 1 h deadline and 25 min waits, the
// client makes attempts at 0, 25 and 50 min, sees that the next wait would
// end past the deadline, and returns the last 503 at once instead of
// sleeping into a context error. The waits run on a fake clock (each sleep
// advances it), so the outcome cannot depend on the machine's speed: the
// real time an attempt takes is negligible next to the minutes.
func TestRetriesStopAtDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(503, `{"error":"busy"}`), func(c *Config) {
		c.MaxAttempts = 100
		c.RetryInitialBackoff = 25 * time.Minute
		c.RetryMaxBackoff = 25 * time.Minute
	})
	b.client.jitter = maxJitter
	var mu sync.Mutex
	fake := time.Now()
	var slept []time.Duration
	b.client.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return fake }
	b.client.sleep = func(ctx context.Context, d time.Duration) bool {
		mu.Lock()
		defer mu.Unlock()
		fake = fake.Add(d)
		slept = append(slept, d)
		return ctx.Err() == nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	_, err := b.client.Status(ctx, "job-1-u1")

	var ae *workflow.ActivityError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 503, ae.StatusCode, "want the last HTTP error, have %v", err)
	require.True(t, ae.Transient)
	require.NotErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, ctx.Err(), "returned after the deadline")
	require.Equal(t, int64(3), b.server.hits.Load())
	require.Equal(t, []time.Duration{25 * time.Minute, 25 * time.Minute}, slept)
	require.Contains(t, b.logs.String(), "retrying")
}

// TestCanceledDuringBackoff: a cancel while waiting to retry ends the call
// at once with context.Canceled, mentioning the last error.
func TestCanceledDuringBackoff(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(503, ``), func(c *Config) {
		c.RetryInitialBackoff = time.Minute
		c.RetryMaxBackoff = time.Minute
	})
	// The backoff is computed once the first attempt's answer is in.
	backingOff := make(chan struct{}, 1)
	b.client.jitter = func(ceiling time.Duration) time.Duration {
		backingOff <- struct{}{}
		return ceiling
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-backingOff; cancel() }()
	start := time.Now()
	_, err := b.client.Status(ctx, "job-1-u1")
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, workflow.IsTransient(err))
	require.Contains(t, err.Error(), "HTTP 503")
	require.Less(t, time.Since(start), 30*time.Second, "must not sleep out the backoff")
	require.Equal(t, int64(1), b.server.hits.Load())
	require.Equal(t, []string{"canceled"}, b.outcomes())
}

// TestRetryAfterHonoured: a 429 with Retry-After: 1 delays the next
// attempt by at least a second (measured at the server), even with zero
// jitter; then the call succeeds.
func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	var hits hitLog
	b := setup(t, func(w http.ResponseWriter, _ *http.Request) {
		if hits.add() == 1 {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, 429, `{"error":"too many requests"}`)
			return
		}
		writeJSON(w, 200, `{"id":"job-1-u1","status":"IN_PROGRESS"}`)
	}, func(c *Config) { c.RetryMaxBackoff = 5 * time.Second })
	b.client.jitter = noJitter

	job, err := b.client.Status(context.Background(), "job-1-u1")
	require.NoError(t, err)
	require.Equal(t, workflow.RunpodInProgress, job.Status)
	times := hits.all()
	require.Len(t, times, 2)
	require.GreaterOrEqual(t, times[1].Sub(times[0]), time.Second)
	require.Equal(t, "closed", b.client.BreakerState())
}

// TestRetryAfterGarbageIgnored: an unparsable Retry-After is no hint: the
// retry follows the (here zero) backoff.
func TestRetryAfterGarbageIgnored(t *testing.T) {
	t.Parallel()
	var hits hitLog
	b := setup(t, func(w http.ResponseWriter, _ *http.Request) {
		if hits.add() == 1 {
			w.Header().Set("Retry-After", "soon, maybe")
			writeJSON(w, 429, ``)
			return
		}
		writeJSON(w, 200, `{"id":"job-1-u1","status":"IN_QUEUE"}`)
	}, nil)
	b.client.jitter = maxJitter
	var slept []time.Duration
	b.client.sleep = func(ctx context.Context, d time.Duration) bool {
		slept = append(slept, d)
		return ctx.Err() == nil
	}

	_, err := b.client.Status(context.Background(), "job-1-u1")
	require.NoError(t, err)
	require.Len(t, hits.all(), 2)
	// The unparsable hint is ignored: the wait is the first backoff's cap,
	// not a hint read as something else.
	require.Equal(t, []time.Duration{b.client.cfg.RetryInitialBackoff}, slept)
}

// TestRetryAfterBeyondLimits: a Retry-After longer than RetryMaxBackoff,
// or one that would end past the deadline, is not slept: the call returns
// at once with the hint for the caller.
func TestRetryAfterBeyondLimits(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		retryAfter string
		maxBackoff time.Duration
		deadline   time.Duration
		wantHint   time.Duration
	}{
		"longer than max backoff": {retryAfter: "120", maxBackoff: 10 * time.Second, wantHint: 120 * time.Second},
		"past the deadline": {retryAfter: "60", maxBackoff: 2 * time.Minute, deadline: 30 * time.Second,
			wantHint: 60 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", tc.retryAfter)
				writeJSON(w, 429, ``)
			}, func(c *Config) { c.RetryMaxBackoff = tc.maxBackoff })
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			start := time.Now()
			_, err := b.client.Status(ctx, "job-1-u1")
			require.True(t, workflow.IsTransient(err))
			require.Equal(t, tc.wantHint, workflow.RetryAfterHint(err))
			// Sleeping the hint would take it (or the deadline, sooner).
			slept := tc.wantHint
			if tc.deadline > 0 {
				slept = min(slept, tc.deadline)
			}
			require.Less(t, time.Since(start), slept)
			require.Equal(t, int64(1), b.server.hits.Load())
		})
	}
}

// TestMaxAttempts: the call stops after MaxAttempts and returns the last
// error; MaxAttempts 1 disables retries.
func TestMaxAttempts(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 4} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			t.Parallel()
			b := setup(t, answer(500, ``), func(c *Config) { c.MaxAttempts = n })
			_, err := b.client.Cancel(context.Background(), "job-1-u1")
			require.True(t, workflow.IsTransient(err))
			require.Equal(t, int64(n), b.server.hits.Load())
		})
	}
}

// TestBackoffCeiling: full jitter stays within the doubling, capped ceiling.
func TestBackoffCeiling(t *testing.T) {
	t.Parallel()
	c, err := New(Config{APIKey: testKey, EndpointID: "e", RetryInitialBackoff: 100 * time.Millisecond, RetryMaxBackoff: time.Second})
	require.NoError(t, err)
	c.jitter = maxJitter
	var have []time.Duration
	for attempt := 1; attempt <= 6; attempt++ {
		have = append(have, c.backoff(attempt))
	}
	ms := time.Millisecond
	require.Equal(t, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1000 * ms, 1000 * ms}, have)

	// The real jitter is uniform in [0, ceiling].
	c2, err := New(Config{APIKey: testKey, EndpointID: "e"})
	require.NoError(t, err)
	sawLow, sawHigh := false, false
	for range 1000 {
		d := c2.backoff(3) // ceiling 1 s
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.LessOrEqual(t, d, time.Second)
		sawLow = sawLow || d < 250*ms
		sawHigh = sawHigh || d > 750*ms
	}
	require.True(t, sawLow && sawHigh, "jitter must spread over the range")
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := map[string]time.Duration{
		"":                                 0,
		"0":                                0,
		"-3":                               0,
		"7":                                7 * time.Second,
		" 2 ":                              2 * time.Second,
		"1.5":                              0,
		"soon":                             0,
		"99999999999":                      24 * time.Hour,
		"Thu, 26 Nov 2026 12:00:30 GMT":    30 * time.Second,
		"Thu, 26 Nov 2026 11:59:00 GMT":    0, // in the past
		"Thursday, 26-Nov-26 12:01:00 GMT": time.Minute,
	}
	for in, want := range tests {
		require.Equal(t, want, parseRetryAfter(in, now), "Retry-After %q", in)
	}
}

// TestLimiterErrorIsTransient: a limiter that cannot grant in time fails
// the call as transient without sending anything.
func TestLimiterErrorIsTransient(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(200, `{}`), func(c *Config) {
		c.Limiter = NewLocalLimiter(map[string]RateLimit{OpPurgeQueue: {Requests: 1, Per: time.Hour}})
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := b.client.PurgeQueue(ctx)
	require.NoError(t, err)
	_, err = b.client.PurgeQueue(ctx) // the next token is an hour away
	require.ErrorIs(t, err, ErrRateLimited)
	require.True(t, workflow.IsTransient(err))
	require.False(t, errors.Is(err, context.DeadlineExceeded))
	require.Equal(t, int64(1), b.server.hits.Load())
}
