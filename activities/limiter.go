package activities

import (
	"context"
	"fmt"
	"maps"
	"time"

	"golang.org/x/time/rate"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Operation names, used for rate limits, errors (workflow.ActivityError.Op),
// logs and the OnCall hook.
const (
	OpRun        = workflow.OpRun
	OpStatus     = workflow.OpStatus
	OpCancel     = workflow.OpCancel
	OpStream     = "stream"
	OpHealth     = "health"
	OpPurgeQueue = "purge-queue"
	OpRetry      = "retry"
)

// Limiter paces requests to Runpod. Wait blocks until one request for op may
// be sent, or returns an error when ctx is done or the wait would outlast
// ctx's deadline. Reserve is its non-blocking form: it takes one request's
// budget and returns 0, or returns how long until one may be available and
// takes nothing. The client calls one of them once per HTTP attempt, so
// retries are paced too: Reserve for a call whose ctx is marked
// workflow.WithReserved (the caller schedules, so nobody waits), Wait
// otherwise. Implementations must be safe for concurrent use; a pool-wide
// implementation (package pool, shared through Redis) can replace the local
// one.
type Limiter interface {
	Wait(ctx context.Context, op string) error
	Reserve(ctx context.Context, op string) time.Duration
}

// Attempt outcomes reported to a SharedLimiter.
const (
	// AttemptOK: Runpod answered (2xx, or a permanent error such as 404).
	AttemptOK = "ok"
	// AttemptThrottled: Runpod answered 429.
	AttemptThrottled = "throttled"
	// AttemptFailed: a transient failure or an uncertain /run; a breaker
	// counts it.
	AttemptFailed = "failed"
	// AttemptCanceled: the caller's context ended; says nothing about Runpod.
	AttemptCanceled = "canceled"
)

// Attempt is what one HTTP attempt tells a SharedLimiter.
type Attempt struct {
	Op         string
	Outcome    string        // one of the Attempt* constants
	RetryAfter time.Duration // Runpod's Retry-After, or 0
}

// SharedLimiter is a Limiter that is also the endpoint's circuit breaker,
// for a whole pool of processes (package pool implements it over Redis). A
// Client whose Limiter implements it has no breaker of its own: its Wait
// and Reserve refuse while the circuit is open (Wait with an error wrapping
// workflow.ErrCircuitOpen; Reserve with the time until the probe), every
// attempt's outcome goes to Observe, which lowers the budget on a 429 and
// counts failures, and BreakerState reports the pool's circuit.
type SharedLimiter interface {
	Limiter
	Observe(a Attempt)
	BreakerState() string
}

// RateLimit allows Requests requests in any window of length Per.
type RateLimit struct {
	Requests int
	Per      time.Duration
}

// DefaultRateLimits are Runpod's published per-endpoint limits
// (docs/runpod-api.md §7). /health and /retry have no published limit; 100/10 s
// is our conservative guess. NewLocalLimiter paces at 95% of each figure.
// Operations missing from the map are not
// limited. NewLocalLimiter copies the map, so changing it later has no
// effect on existing limiters.
var DefaultRateLimits = map[string]RateLimit{
	OpRun:        {Requests: 1000, Per: 10 * time.Second},
	OpStatus:     {Requests: 2000, Per: 10 * time.Second},
	OpCancel:     {Requests: 100, Per: 10 * time.Second},
	OpStream:     {Requests: 2000, Per: 10 * time.Second},
	OpPurgeQueue: {Requests: 2, Per: 10 * time.Second},
	OpHealth:     {Requests: 100, Per: 10 * time.Second},
	OpRetry:      {Requests: 100, Per: 10 * time.Second},
}

// localLimiter is a token bucket per operation, for one process.
type localLimiter struct {
	buckets map[string]*rate.Limiter // read-only after construction
}

// localHeadroom is the share of a published limit the local limiter uses.
// Requests reach Runpod with varying delay, so a client paced at exactly
// the limit still lands a few too many in some fixed window (the simulator
// showed about 10 in 5,000 at full rate); 5% absorbs that jitter.
const localHeadroom = 0.95

// NewLocalLimiter returns a Limiter that keeps this process within limits.
//
// Runpod counts requests in 10-second windows. A token bucket of burst B
// refilling at r admits at most B + r·Per requests in any window of length
// Per, so the bucket is sized to make that sum 95% of Requests (see
// localHeadroom): a burst of a tenth of that budget (at least 1), the rest
// spread evenly. A process therefore stays under the limit in every window,
// however the windows are aligned. Entries with Requests or Per ≤ 0 are
// ignored.
func NewLocalLimiter(limits map[string]RateLimit) Limiter {
	l := &localLimiter{buckets: make(map[string]*rate.Limiter, len(limits))}
	for op, lim := range maps.All(limits) {
		if lim.Requests <= 0 || lim.Per <= 0 {
			continue
		}
		l.buckets[op] = newBucket(lim)
	}
	return l
}

// newBucket sizes a token bucket for lim; see NewLocalLimiter.
func newBucket(lim RateLimit) *rate.Limiter {
	budget := max(1, int(float64(lim.Requests)*localHeadroom))
	burst := max(1, budget/10)
	refill := budget - burst
	if refill < 1 {
		// A budget of 1 per window: one token, refilled once per window.
		refill = 1
	}
	every := lim.Per / time.Duration(refill)
	return rate.NewLimiter(rate.Every(every), burst)
}

// Reserve implements Limiter.
func (l *localLimiter) Reserve(_ context.Context, op string) time.Duration {
	b, ok := l.buckets[op]
	if !ok {
		return 0
	}
	r := b.Reserve()
	if !r.OK() {
		return time.Minute // cannot happen: every bucket has a burst of at least 1
	}
	if d := r.Delay(); d > 0 {
		r.Cancel() // give the token back: the caller comes back later
		return d
	}
	return 0
}

// Wait implements Limiter.
func (l *localLimiter) Wait(ctx context.Context, op string) error {
	b, ok := l.buckets[op]
	if !ok {
		return ctx.Err()
	}
	if err := b.Wait(ctx); err != nil {
		return fmt.Errorf("activities: rate limit %s: %w", op, err)
	}
	return nil
}
