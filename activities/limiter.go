package activities

import (
	"context"
	"fmt"
	"maps"
	"time"

	"golang.org/x/time/rate"
)

// Operation names, used for rate limits, errors (workflow.ActivityError.Op),
// logs and the OnCall hook.
const (
	OpRun        = "run"
	OpStatus     = "status"
	OpCancel     = "cancel"
	OpStream     = "stream"
	OpHealth     = "health"
	OpPurgeQueue = "purge-queue"
	OpRetry      = "retry"
)

// Limiter paces requests to Runpod. Wait blocks until one request for op may
// be sent, or returns an error when ctx is done or the wait would outlast
// ctx's deadline. The client calls it once per HTTP attempt, so retries are
// paced too. Implementations must be safe for concurrent use; a pool-wide
// implementation (shared through Redis) can replace the local one.
type Limiter interface {
	Wait(ctx context.Context, op string) error
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
