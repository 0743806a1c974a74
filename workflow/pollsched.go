package workflow

import "time"

// Runpod keeps a finished /run job's result this long, then answers 404
// (runpod-api.md §3.1). A job must be polled at least once in that window
// after it ends, or work that was done and paid for ends FAILED "unknown or
// expired".
const RunpodResultRetention = 30 * time.Minute

// Defaults of the poll scheduler's PollPolicy fields.
const (
	// PollQueueMaxDefault caps the wait between polls of a job Runpod still
	// has IN_QUEUE: nothing can finish there, so it is polled slower. It is
	// 2×PollMaxDefault; PollPolicy.WithDefaults uses 2×Max.
	PollQueueMaxDefault = 2 * PollMaxDefault
	// PollHorizonDefault is the longest wait between two polls of any job,
	// jitter included: a third of Runpod's result retention, so a poll
	// deferred twice by the rate budget still sees the result.
	PollHorizonDefault = 10 * time.Minute
	// PollFloor is the shortest wait the scheduler plans (apart from the
	// jitter), so a job at its expected end is not polled back to back.
	PollFloor = 250 * time.Millisecond
)

// ExecEstimator tells the poll scheduler how long the endpoint's jobs run:
// typically the median of the executionTime Runpod reported for its recent
// jobs. ok is false while nothing is known. It must be safe for concurrent
// use and must not block (the worker's implementation reads a few numbers
// under a mutex).
type ExecEstimator interface {
	ExpectedExecution() (d time.Duration, ok bool)
}

// TurnaroundEstimator is an ExecEstimator that also knows how long the
// endpoint's jobs take from /run to their end: Runpod's delayTime (time in
// its queue, cold start included) plus executionTime, typically the median
// over recent jobs. Policy.Expect may implement it; FirstPoll uses it.
type TurnaroundEstimator interface {
	ExpectedTurnaround() (d time.Duration, ok bool)
}

// FirstPoll returns the wait before the first /status poll of a job that
// /run just queued. With an expected turnaround (> 0) the poll is planned
// where the endpoint's jobs are usually finished, so a typical job costs
// one poll and its outcome is seen soon after it ends, whatever
// p.Initial says: at least min(p.Initial, PollFloor), at most p.Horizon.
// Without an estimate it is p.Initial; with webhooks on, the fallback
// interval as for every poll (NextPoll). Each is spread by ±Jitter.
func FirstPoll(p PollPolicy, turnaround time.Duration, rnd Rand) time.Duration {
	d := p.Initial
	switch {
	case p.WebhookFallback > 0:
		d = p.WebhookFallback
	case turnaround > 0:
		d = max(turnaround, min(p.Initial, PollFloor))
	}
	if rnd != nil && p.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + p.Jitter*(2*rnd.Float64()-1)))
	}
	return min(d, p.Horizon)
}

// firstPoll is FirstPoll with the policy's estimator.
func (p Policy) firstPoll(rnd Rand) time.Duration {
	var turnaround time.Duration
	if te, ok := p.Expect.(TurnaroundEstimator); ok {
		if d, ok := te.ExpectedTurnaround(); ok {
			turnaround = d
		}
	}
	return FirstPoll(p.Poll, turnaround, rnd)
}

// NextPoll returns the wait before the next /status poll of j, which was
// just polled (or just submitted) at now. It spends polls where a status
// change is likely:
//
//   - webhooks on (p.WebhookFallback > 0): the webhook reports the end, so
//     polls are only a slow fallback, every WebhookFallback;
//   - IN_QUEUE (StateQueued): nothing can finish there: the usual backoff
//     from Initial, capped at QueueMax;
//   - IN_PROGRESS with an expected execution time and before it: the next
//     poll is at the expected end (RunningSince + expected);
//   - IN_PROGRESS past the expected end, or with no estimate: the wait grows
//     with the overrun (overrun × (Multiplier−1)), between Initial and Max;
//     with no estimate the overrun is the whole time running;
//   - IN_PROGRESS with RunningSince unknown (a takeover): the usual backoff
//     by Polls, capped at Max.
//
// Every wait is spread by ±Jitter and never exceeds Horizon, jitter
// included, so a finished result is always seen within Runpod's retention.
// p must have its defaults; expected ≤ 0 means unknown.
func NextPoll(p PollPolicy, j Job, now time.Time, expected time.Duration, rnd Rand) time.Duration {
	var d time.Duration
	switch {
	case p.WebhookFallback > 0:
		d = p.WebhookFallback
	case j.State != StateInProgress:
		d = growth(p.Initial, p.QueueMax, p.Multiplier, j.Polls)
	case j.RunningSince.IsZero():
		d = growth(p.Initial, p.Max, p.Multiplier, j.Polls)
	default:
		elapsed := now.Sub(j.RunningSince)
		if expected > 0 && elapsed < expected {
			d = max(expected-elapsed, PollFloor)
			break
		}
		over := elapsed - max(expected, 0)
		d = time.Duration(float64(over) * (p.Multiplier - 1))
		d = min(max(d, p.Initial), p.Max)
	}
	if rnd != nil && p.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + p.Jitter*(2*rnd.Float64()-1)))
	}
	return min(d, p.Horizon)
}

// nextPoll is NextPoll with the policy's estimator.
func (p Policy) nextPoll(j Job, now time.Time, rnd Rand) time.Duration {
	var expected time.Duration
	if p.Expect != nil {
		if d, ok := p.Expect.ExpectedExecution(); ok {
			expected = d
		}
	}
	return NextPoll(p.Poll, j, now, expected, rnd)
}
