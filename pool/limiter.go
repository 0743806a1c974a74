// Package pool makes every worker process calling one Runpod endpoint one
// polite client: a request budget per operation and a circuit breaker,
// shared by the whole pool through Redis (streams' budget_take.lua and
// budget_report.lua). It implements activities.SharedLimiter, so an
// activities.Client built with it paces and breaks pool-wide without any
// change to its callers.
//
// Each process takes small batches of tokens in one round trip and spends
// them locally; a batch is dropped unspent after BatchTTL, so a token is
// spent at most BatchTTL after the pool's bucket granted it and the bucket's
// bound (Limit per Window) holds for what reaches Runpod within that margin.
package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Defaults of Config.
const (
	// HeadroomDefault is the share of Runpod's published limit the pool
	// uses: the bucket's own bound, plus tokens spent up to BatchTTL after
	// their grant (+BatchTTL/Window of the refill), plus request latency,
	// stays under the limit.
	HeadroomDefault = 0.9
	// BatchDefault is the most tokens one grant gives a process.
	BatchDefault = 8
	// BatchTTLDefault is how long a process may hold granted tokens.
	BatchTTLDefault = 500 * time.Millisecond
	// DecreaseDefault multiplies the budget on a 429 (multiplicative
	// decrease), at most once per DecreaseGapDefault for the pool.
	DecreaseDefault    = 0.5
	DecreaseGapDefault = time.Second
	// MinFactorDefault bounds the decrease: never below 5% of the budget.
	MinFactorDefault = 0.05
	// RecoverDefault is the share of the budget regained per window after
	// a 429 (additive increase: from half to full in five windows).
	RecoverDefault = 0.1
	// StoreRetryDefault is how long a call is deferred when Redis cannot
	// be asked for budget.
	StoreRetryDefault = time.Second
	// storeTimeout bounds one budget round trip.
	storeTimeout = 2 * time.Second
)

// Config configures a Limiter. Store, EndpointID and InstanceID are required.
type Config struct {
	// Store is the namespace's store; every process of the pool must use
	// the same namespace.
	Store *streams.Store
	// EndpointID is the Runpod endpoint the budget and breaker belong to.
	EndpointID string
	// InstanceID names this process (who holds a probe).
	InstanceID string
	// Limits are Runpod's limits per operation. Defaults to
	// activities.DefaultRateLimits. Every process of a pool must use the
	// same limits and headroom (the budget is computed from them at each
	// grant). Operations missing are neither limited nor breaker-guarded.
	Limits map[string]activities.RateLimit
	// Headroom is the share of each limit granted. Defaults to HeadroomDefault.
	Headroom float64
	// Batch is the most tokens taken per round trip. Defaults to BatchDefault.
	Batch int
	// BatchTTL is how long unspent tokens are kept. Defaults to BatchTTLDefault.
	BatchTTL time.Duration
	// Decrease, DecreaseGap, MinFactor and Recover shape the response to
	// 429s (AIMD); see the defaults.
	Decrease    float64
	DecreaseGap time.Duration
	MinFactor   float64
	Recover     float64
	// BreakerFailures consecutive transient failures in the pool open the
	// endpoint's circuit for BreakerOpenTimeout; then a single probe is let
	// through for the whole pool. Defaults to activities' defaults.
	BreakerFailures    int
	BreakerOpenTimeout time.Duration
	// ProbeHold is how long a granted probe keeps others from probing (a
	// probe whose process died frees the slot after it). Defaults to
	// activities.RequestTimeoutDefault.
	ProbeHold time.Duration
	// StoreRetry defers a call when Redis cannot be asked. Defaults to
	// StoreRetryDefault.
	StoreRetry time.Duration
	// OnBreakerStateChange, if set, is called when this process sees the
	// pool's circuit change state. It must not block.
	OnBreakerStateChange func(endpointID, from, to string)
	// OnThrottle, if set, is called after a 429 was reported, with the
	// operation and its new budget factor (0..1]. It must not block.
	OnThrottle func(op string, factor float64)
	// Logger receives warnings about Redis failures. Defaults to a null logger.
	Logger hclog.Logger
	// Now is this process's clock (batch expiry, waits), for tests.
	// Defaults to time.Now. It never stamps the pool's bucket or breaker:
	// other processes compare those times, so they come from Redis (TIME).
	Now func() time.Time
	// SharedNow, for tests only, overrides the clock of the pool's bucket
	// and breaker (every process of the test must use the same). nil:
	// Redis's own clock.
	SharedNow func() time.Time
}

// Limiter is the pool-wide activities.SharedLimiter.
type Limiter struct {
	cfg    Config
	params map[string]streams.BudgetParams
	ops    map[string]*opState // read-only after New

	mu       sync.Mutex // guards the breaker view
	state    string
	failures int
	probeOp  string // "" unless this process holds the probe
}

// opState is one operation's local share: tokens granted to this process.
type opState struct {
	mu        sync.Mutex // one round trip per operation at a time
	tokens    int
	grantedAt time.Time
	notBefore time.Time
	factor    atomic.Uint64 // float64 bits: the budget factor of the last reply
}

var _ activities.SharedLimiter = (*Limiter)(nil)

// New validates cfg (after defaults) and returns a Limiter.
func New(cfg Config) (*Limiter, error) {
	if cfg.Store == nil || cfg.EndpointID == "" || cfg.InstanceID == "" {
		return nil, errors.New("pool: Store, EndpointID and InstanceID are required")
	}
	if cfg.Limits == nil {
		cfg.Limits = activities.DefaultRateLimits
	}
	cfg.Headroom = cmp.Or(cfg.Headroom, HeadroomDefault)
	cfg.Batch = cmp.Or(cfg.Batch, BatchDefault)
	cfg.BatchTTL = cmp.Or(cfg.BatchTTL, BatchTTLDefault)
	cfg.Decrease = cmp.Or(cfg.Decrease, DecreaseDefault)
	cfg.DecreaseGap = cmp.Or(cfg.DecreaseGap, DecreaseGapDefault)
	cfg.MinFactor = cmp.Or(cfg.MinFactor, MinFactorDefault)
	cfg.Recover = cmp.Or(cfg.Recover, RecoverDefault)
	cfg.BreakerFailures = cmp.Or(cfg.BreakerFailures, int(activities.BreakerFailuresDefault))
	cfg.BreakerOpenTimeout = cmp.Or(cfg.BreakerOpenTimeout, activities.BreakerOpenTimeoutDefault)
	cfg.ProbeHold = cmp.Or(cfg.ProbeHold, activities.RequestTimeoutDefault)
	cfg.StoreRetry = cmp.Or(cfg.StoreRetry, StoreRetryDefault)
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.Headroom <= 0 || cfg.Headroom > 1:
		return nil, errors.New("pool: Headroom: must be in (0, 1]")
	case cfg.Batch < 1 || cfg.BatchTTL <= 0:
		return nil, errors.New("pool: Batch and BatchTTL: must be positive")
	}
	l := &Limiter{cfg: cfg, params: map[string]streams.BudgetParams{}, ops: map[string]*opState{},
		state: streams.BreakerClosed}
	for op, lim := range maps.All(cfg.Limits) {
		if lim.Requests <= 0 || lim.Per <= 0 {
			continue
		}
		p := streams.BudgetParams{
			EndpointID: cfg.EndpointID, Op: op,
			Limit: max(1, int(float64(lim.Requests)*cfg.Headroom)), Window: lim.Per,
			Recover: cfg.Recover, Decrease: cfg.Decrease, MinFactor: cfg.MinFactor, DecreaseGap: cfg.DecreaseGap,
			BreakerFailures: cfg.BreakerFailures, BreakerOpen: cfg.BreakerOpenTimeout, ProbeHold: cfg.ProbeHold,
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("pool: limits of %s: %w", op, err)
		}
		l.params[op] = p
		l.ops[op] = &opState{}
		l.ops[op].factor.Store(math.Float64bits(1))
	}
	return l, nil
}

// Reserve implements activities.Limiter: it spends a local token, or takes
// a batch from the pool in one round trip, or says how long to wait (the
// end of a Retry-After, the next refill, the breaker's probe time).
func (l *Limiter) Reserve(ctx context.Context, op string) time.Duration {
	d, _ := l.reserve(ctx, op)
	return d
}

// reserve is Reserve, also reporting whether a refusal is the breaker's.
func (l *Limiter) reserve(ctx context.Context, op string) (time.Duration, bool) {
	s, ok := l.ops[op]
	if !ok {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := l.cfg.Now()
	closed := l.breakerState() == streams.BreakerClosed
	if s.tokens > 0 && closed && now.Sub(s.grantedAt) < l.cfg.BatchTTL {
		s.tokens--
		return 0, false
	}
	s.tokens = 0
	if now.Before(s.notBefore) {
		return s.notBefore.Sub(now), !closed
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	g, err := l.cfg.Store.BudgetTake(tctx, l.params[op], l.cfg.InstanceID, l.cfg.Batch, l.sharedNow())
	cancel()
	if err != nil {
		l.cfg.Logger.Warn("cannot take runpod budget from redis; deferring the call", "op", op, "error", err)
		s.notBefore = now.Add(l.cfg.StoreRetry)
		return l.cfg.StoreRetry, false
	}
	l.seeBreaker(g.Breaker, g.Failures, op, g.Probe)
	s.factor.Store(math.Float64bits(g.Factor))
	if g.Granted == 0 {
		// Wait is relative: the bucket's clock is Redis's, not ours.
		s.notBefore = now.Add(g.Wait)
		return max(time.Millisecond, g.Wait), g.Breaker != streams.BreakerClosed
	}
	s.tokens, s.grantedAt = g.Granted-1, now
	return 0, false
}

// Wait implements activities.Limiter for callers that do not schedule
// themselves: it sleeps until a token is granted, and fails at once while
// the pool's circuit is open (wrapping workflow.ErrCircuitOpen) or when the
// wait would outlast ctx's deadline.
func (l *Limiter) Wait(ctx context.Context, op string) error {
	for {
		d, breaker := l.reserve(ctx, op)
		if d == 0 {
			return nil
		}
		if breaker {
			return fmt.Errorf("pool: %s: %w", op, workflow.ErrCircuitOpen)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return fmt.Errorf("pool: %s: no budget before the deadline (next in %s)", op, d)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pool: %s: %w", op, ctx.Err())
		case <-t.C:
		}
	}
}

// Observe implements activities.SharedLimiter: a 429 lowers the pool's
// budget for op (and drops this process's tokens), a transient failure
// counts for the pool's breaker, and a success resets the count when this
// process knows of failures or holds the probe.
func (l *Limiter) Observe(a activities.Attempt) {
	p, ok := l.params[a.Op]
	if !ok {
		return
	}
	var kind string
	switch a.Outcome {
	case activities.AttemptThrottled:
		kind = streams.ReportThrottled
		s := l.ops[a.Op]
		s.mu.Lock()
		s.tokens = 0
		s.notBefore = later(s.notBefore, l.cfg.Now().Add(a.RetryAfter))
		s.mu.Unlock()
	case activities.AttemptFailed:
		kind = streams.ReportFailure
	case activities.AttemptOK:
		l.mu.Lock()
		need := l.failures > 0 || l.state != streams.BreakerClosed || l.probeOp != ""
		l.mu.Unlock()
		if !need {
			return
		}
		kind = streams.ReportSuccess
	default:
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	st, err := l.cfg.Store.BudgetReport(ctx, p, kind, a.RetryAfter, l.sharedNow())
	if err != nil {
		l.cfg.Logger.Warn("cannot report a runpod answer to redis", "op", a.Op, "kind", kind, "error", err)
		return
	}
	l.mu.Lock()
	l.probeOp = ""
	l.mu.Unlock()
	l.seeBreaker(st.Breaker, st.Failures, "", false)
	if kind == streams.ReportThrottled {
		l.ops[a.Op].factor.Store(math.Float64bits(st.Factor))
		if l.cfg.OnThrottle != nil {
			l.cfg.OnThrottle(a.Op, st.Factor)
		}
	}
}

// Factor returns op's budget factor as this process last saw it: 1 at full
// budget, lower after a 429 (recovering by Recover per window).
func (l *Limiter) Factor(op string) float64 {
	s, ok := l.ops[op]
	if !ok {
		return 1
	}
	return math.Float64frombits(s.factor.Load())
}

// BreakerState implements activities.SharedLimiter: the pool's circuit as
// this process last saw it.
func (l *Limiter) BreakerState() string { return l.breakerState() }

func (l *Limiter) breakerState() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// seeBreaker records the pool's breaker state from a reply and reports a
// change to the hook.
func (l *Limiter) seeBreaker(state string, failures int, op string, probe bool) {
	l.mu.Lock()
	from := l.state
	l.state, l.failures = state, failures
	if probe {
		l.probeOp = op
	}
	l.mu.Unlock()
	if from == state {
		return
	}
	if state == streams.BreakerOpen {
		l.cfg.Logger.Warn("pool circuit breaker state changed", "endpoint_id", l.cfg.EndpointID, "from", from, "to", state)
	} else {
		l.cfg.Logger.Info("pool circuit breaker state changed", "endpoint_id", l.cfg.EndpointID, "from", from, "to", state)
	}
	if l.cfg.OnBreakerStateChange != nil {
		l.cfg.OnBreakerStateChange(l.cfg.EndpointID, from, state)
	}
}

// sharedNow is the time to stamp the pool's bucket and breaker with: the
// zero time (Redis's clock) unless a test set SharedNow.
func (l *Limiter) sharedNow() time.Time {
	if l.cfg.SharedNow == nil {
		return time.Time{}
	}
	return l.cfg.SharedNow()
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
