package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The pool-wide Runpod budget and breaker: budget_take.lua grants tokens of
// one operation's budget (and applies the endpoint's breaker) in one round
// trip; budget_report.lua feeds back what Runpod answered. Every worker of a
// namespace that calls the same endpoint shares both.

// Breaker states as stored and reported.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half-open"
)

// Report kinds for BudgetReport.Kind.
const (
	ReportThrottled = "throttled" // Runpod answered 429
	ReportFailure   = "failure"   // a transient failure (the breaker counts it)
	ReportSuccess   = "success"   // Runpod answered (2xx or a permanent error)
)

// BudgetParams are the settings every worker of the pool must share for
// one endpoint and operation.
type BudgetParams struct {
	EndpointID string
	Op         string
	// Limit is the requests allowed per Window at full rate, headroom
	// already applied. Window must be positive.
	Limit  int
	Window time.Duration
	// Recover is the factor regained per Window after a 429 (0 < Recover ≤ 1).
	Recover float64
	// Decrease multiplies the factor on a 429 (0 < Decrease < 1), at most
	// once per DecreaseGap; MinFactor bounds it from below.
	Decrease    float64
	MinFactor   float64
	DecreaseGap time.Duration
	// BreakerFailures consecutive transient failures open the endpoint's
	// circuit for BreakerOpen; then one probe is granted, whose hold lasts
	// ProbeHold (a probe whose holder vanished frees the slot after it).
	BreakerFailures int
	BreakerOpen     time.Duration
	ProbeHold       time.Duration
}

// Validate reports a parameter out of range (BudgetTake and BudgetReport call it).
func (p BudgetParams) Validate() error {
	switch {
	case p.EndpointID == "" || p.Op == "":
		return errors.New("streams: budget: endpoint and operation must be set")
	case p.Limit < 1 || p.Window <= 0:
		return errors.New("streams: budget: limit and window must be positive")
	case p.Recover <= 0 || p.Recover > 1:
		return errors.New("streams: budget: recover must be in (0, 1]")
	case p.Decrease <= 0 || p.Decrease >= 1 || p.MinFactor <= 0 || p.MinFactor > 1:
		return errors.New("streams: budget: decrease must be in (0, 1) and min factor in (0, 1]")
	case p.BreakerFailures < 1 || p.BreakerOpen <= 0 || p.ProbeHold <= 0:
		return errors.New("streams: budget: breaker failures, open time and probe hold must be positive")
	}
	return nil
}

// BudgetGrant is the answer of BudgetTake.
type BudgetGrant struct {
	// Granted tokens, each good for one request; 0 when none was left.
	Granted int
	// RetryAt is when to ask again when nothing was granted, on the
	// bucket's clock (Redis's unless overridden); Wait is how long from
	// now that is, whatever the caller's clock says.
	RetryAt time.Time
	Wait    time.Duration
	// Breaker is the endpoint circuit's state; Failures the pool's
	// consecutive transient failures so far.
	Breaker  string
	Failures int
	// Factor is the share of Limit currently granted (1 unless throttled).
	Factor float64
	// Probe: the single granted token is the half-open probe.
	Probe bool
}

// BudgetState is the answer of BudgetReport.
type BudgetState struct {
	Breaker  string
	Failures int
	Factor   float64 // after a throttled report; 1 otherwise
}

// BudgetTake asks for up to want tokens of p's budget for caller (its
// instance id: who holds a probe). now is a test override of the bucket's
// clock; zero means Redis's own (TIME), which every process of the pool
// must use: the bucket's and the breaker's times are compared pool-wide.
func (s *Store) BudgetTake(ctx context.Context, p BudgetParams, caller string, want int, now time.Time) (BudgetGrant, error) {
	if err := p.Validate(); err != nil {
		return BudgetGrant{}, err
	}
	payload, err := EncodePayload(EventPayload{Reason: breakerReason(p.EndpointID, BreakerOpen, BreakerHalfOpen)})
	if err != nil {
		return BudgetGrant{}, err
	}
	v, err := s.runScript(ctx, "budget take "+p.Op, scriptBudgetTake,
		[]string{s.keys.Budget(p.EndpointID, p.Op), s.keys.Breaker(p.EndpointID), s.keys.Events()},
		scriptNow(now), p.Limit, p.Window.Milliseconds(), max(1, want), fmtFloat(p.Recover),
		caller, p.BreakerOpen.Milliseconds(), p.ProbeHold.Milliseconds(), payload)
	if err != nil {
		return BudgetGrant{}, err
	}
	r, err := replyStrings("budget take", v)
	if err != nil || len(r) != 7 {
		return BudgetGrant{}, fmt.Errorf("streams: budget take: bad reply %v: %w", v, err)
	}
	n := make([]int64, 7)
	for _, i := range []int{0, 2, 3, 4, 5, 6} {
		if n[i], err = strconv.ParseInt(r[i], 10, 64); err != nil {
			return BudgetGrant{}, fmt.Errorf("streams: budget take: bad reply %v", r)
		}
	}
	g := BudgetGrant{Granted: int(n[0]), Breaker: r[1], Failures: int(n[4]), Probe: n[5] == 1,
		Factor: float64(n[3]) / 1000}
	if n[2] > 0 {
		g.RetryAt = time.UnixMilli(n[2])
		g.Wait = time.Duration(max(0, n[2]-n[6])) * time.Millisecond
	}
	if g.Factor == 0 {
		g.Factor = 1 // not computed (the circuit refused first)
	}
	return g, nil
}

// BudgetReport feeds back one outcome (ReportThrottled, ReportFailure or
// ReportSuccess); retryAfter is Runpod's Retry-After on a 429, or 0. now:
// as for BudgetTake (zero: Redis's clock).
func (s *Store) BudgetReport(ctx context.Context, p BudgetParams, kind string, retryAfter time.Duration, now time.Time) (BudgetState, error) {
	if err := p.Validate(); err != nil {
		return BudgetState{}, err
	}
	switch kind {
	case ReportThrottled, ReportFailure, ReportSuccess:
	default:
		return BudgetState{}, fmt.Errorf("streams: budget report: unknown kind %q", kind)
	}
	open, err := EncodePayload(EventPayload{Reason: breakerReason(p.EndpointID, "", BreakerOpen)})
	if err != nil {
		return BudgetState{}, err
	}
	closed, err := EncodePayload(EventPayload{Reason: breakerReason(p.EndpointID, BreakerHalfOpen, BreakerClosed)})
	if err != nil {
		return BudgetState{}, err
	}
	v, err := s.runScript(ctx, "budget report "+p.Op, scriptBudgetRep,
		[]string{s.keys.Budget(p.EndpointID, p.Op), s.keys.Breaker(p.EndpointID), s.keys.Events()},
		scriptNow(now), kind, max(0, retryAfter.Milliseconds()), fmtFloat(p.Decrease), fmtFloat(p.MinFactor),
		p.DecreaseGap.Milliseconds(), p.Window.Milliseconds(), fmtFloat(p.Recover), p.BreakerFailures, open, closed)
	if err != nil {
		return BudgetState{}, err
	}
	r, err := replyStrings("budget report", v)
	if err != nil || len(r) != 3 {
		return BudgetState{}, fmt.Errorf("streams: budget report: bad reply %v: %w", v, err)
	}
	fails, err1 := strconv.Atoi(r[1])
	milli, err2 := strconv.Atoi(r[2])
	if err1 != nil || err2 != nil {
		return BudgetState{}, fmt.Errorf("streams: budget report: bad reply %v", r)
	}
	return BudgetState{Breaker: r[0], Failures: fails, Factor: float64(milli) / 1000}, nil
}

// breakerReason is the reason text of a breaker event.
func breakerReason(endpointID, from, to string) string {
	if from == "" {
		return "endpoint " + endpointID + ": circuit " + to
	}
	return "endpoint " + endpointID + ": circuit " + from + " -> " + to
}

// scriptNow is the "now" ARGV of a script that reads Redis's TIME when it
// is empty: a test override, or "" for the zero time.
func scriptNow(now time.Time) string {
	if now.IsZero() {
		return ""
	}
	return strconv.FormatInt(now.UnixMilli(), 10)
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
