package workflow

import (
	"errors"
	"fmt"
	"time"
)

// SubmitUncertainPolicy decides what happens when a /run may have created a
// Runpod job whose id was never recorded: a takeover that finds a job at
// StepSubmitting without a Runpod id, or a /run that failed with
// ErrSubmitUncertain. Runpod's /run has no idempotency key, so neither choice
// is free: resubmitting may run the job twice on a GPU, failing may give up on
// a job that was never sent.
type SubmitUncertainPolicy string

const (
	// SubmitUncertainResubmit calls /run again (the default): at-least-once
	// execution, a duplicate GPU job at worst.
	SubmitUncertainResubmit SubmitUncertainPolicy = "resubmit"
	// SubmitUncertainFail ends the job FAILED with "submit outcome
	// uncertain": at-most-once execution, a lost job at worst.
	SubmitUncertainFail SubmitUncertainPolicy = "fail"
	// SubmitUncertainDefault is used when the policy is left empty.
	SubmitUncertainDefault = SubmitUncertainResubmit
)

// Valid reports whether p is empty (the default) or one of the named policies.
func (p SubmitUncertainPolicy) Valid() bool {
	switch p {
	case "", SubmitUncertainResubmit, SubmitUncertainFail:
		return true
	}
	return false
}

// Defaults of PollPolicy (the seed's polling defaults) and RetryPolicy.
const (
	PollInitialDefault    = 2 * time.Second
	PollMaxDefault        = 10 * time.Second
	PollJitterDefault     = 0.2
	PollMultiplierDefault = 1.5

	RetryInitialDefault    = 500 * time.Millisecond
	RetryMaxDefault        = 30 * time.Second
	RetryMultiplierDefault = 2.0

	MaxCancelAttemptsDefault = 5
)

// PollPolicy is the backoff between /status polls of one Runpod job. The
// n-th poll after the last status change waits
// min(Initial·Multiplier^n, Max), spread by ±Jitter. A status change resets n,
// so a job that just started running is looked at again soon, and a job that
// sits in the queue is polled at most every Max.
type PollPolicy struct {
	// Initial is the first delay. Defaults to PollInitialDefault (2s).
	Initial time.Duration
	// Max caps the delay. Defaults to PollMaxDefault (10s).
	Max time.Duration
	// Jitter spreads each delay uniformly by ±Jitter·delay, so polls of
	// jobs submitted together drift apart. 0 means the default (0.2); use
	// -1 for no jitter. At most 1.
	Jitter float64
	// Multiplier is the growth factor per poll. Defaults to 1.5, which
	// reaches Max from Initial in four polls (2, 3, 4.5, 6.75, 10 s).
	Multiplier float64
	// QueueMax caps the delay while Runpod has the job IN_QUEUE (see
	// NextPoll). Defaults to 2×Max (20s with the default Max); at least Max.
	QueueMax time.Duration
	// Horizon is the longest wait between two polls of a job, jitter
	// included. Defaults to PollHorizonDefault (10m), or to QueueMax or
	// WebhookFallback when longer; at least both. Keep it well under
	// RunpodResultRetention (30m), or a result may expire unseen.
	Horizon time.Duration
	// WebhookFallback, when positive, is the fixed slow poll interval used
	// because Runpod reports each job's end by webhook: polls only catch a
	// webhook that never arrived. 0 means webhooks are off.
	WebhookFallback time.Duration
}

// WithDefaults fills zero fields with their defaults.
func (p PollPolicy) WithDefaults() PollPolicy {
	if p.Initial == 0 {
		p.Initial = PollInitialDefault
	}
	if p.Max == 0 {
		p.Max = PollMaxDefault
	}
	if p.Jitter == 0 {
		p.Jitter = PollJitterDefault
	}
	if p.Multiplier == 0 {
		p.Multiplier = PollMultiplierDefault
	}
	if p.QueueMax == 0 {
		p.QueueMax = 2 * p.Max
	}
	if p.Horizon == 0 {
		p.Horizon = max(PollHorizonDefault, p.QueueMax, p.WebhookFallback)
	}
	return p
}

// Validate reports the first bad field, named.
func (p PollPolicy) Validate() error {
	switch {
	case p.Initial <= 0:
		return errors.New("Initial: must be positive")
	case p.Max < p.Initial:
		return fmt.Errorf("Max: %s is less than Initial %s", p.Max, p.Initial)
	case p.Jitter != -1 && (p.Jitter < 0 || p.Jitter > 1):
		return fmt.Errorf("Jitter: %v is outside [0, 1] (use -1 for none)", p.Jitter)
	case p.Multiplier < 1:
		return fmt.Errorf("Multiplier: %v is less than 1", p.Multiplier)
	case p.QueueMax < p.Max:
		return fmt.Errorf("QueueMax: %s is less than Max %s", p.QueueMax, p.Max)
	case p.WebhookFallback < 0:
		return errors.New("WebhookFallback: must not be negative")
	case p.Horizon < p.QueueMax || p.Horizon < p.WebhookFallback:
		return fmt.Errorf("Horizon: %s is less than QueueMax or WebhookFallback", p.Horizon)
	}
	return nil
}

// RetryPolicy is the backoff for retrying an activity that failed
// transiently (network error, 5xx, 429, open circuit). The n-th retry waits a
// uniformly random time in [0, min(Initial·Multiplier^n, Max)] ("full
// jitter", which spreads a pool's retries after a shared outage best), but
// never less than the server's Retry-After hint.
type RetryPolicy struct {
	// Initial is the cap of the first retry delay. Defaults to 500ms.
	Initial time.Duration
	// Max caps every delay. Defaults to 30s.
	Max time.Duration
	// Multiplier is the growth factor per retry. Defaults to 2.
	Multiplier float64
}

// WithDefaults fills zero fields with their defaults.
func (p RetryPolicy) WithDefaults() RetryPolicy {
	if p.Initial == 0 {
		p.Initial = RetryInitialDefault
	}
	if p.Max == 0 {
		p.Max = RetryMaxDefault
	}
	if p.Multiplier == 0 {
		p.Multiplier = RetryMultiplierDefault
	}
	return p
}

// Validate reports the first bad field, named.
func (p RetryPolicy) Validate() error {
	switch {
	case p.Initial <= 0:
		return errors.New("Initial: must be positive")
	case p.Max < p.Initial:
		return fmt.Errorf("Max: %s is less than Initial %s", p.Max, p.Initial)
	case p.Multiplier < 1:
		return fmt.Errorf("Multiplier: %v is less than 1", p.Multiplier)
	}
	return nil
}

// Policy holds every decision knob of the step function. The zero value is
// usable after WithDefaults.
type Policy struct {
	// Poll is the /status backoff.
	Poll PollPolicy
	// Retry is the backoff for transient activity errors.
	Retry RetryPolicy
	// SubmitUncertain decides an uncertain /run. Defaults to resubmit.
	SubmitUncertain SubmitUncertainPolicy
	// MaxCancelAttempts is how many /cancel calls for one job (each
	// followed by a /status read; a job still live, or a failed read, is
	// cancelled again) back off further; after that they repeat at the
	// backoff's cap. The job is never finalized until Runpod confirms a
	// terminal state: ending it on an unconfirmed cancel would leave its
	// GPU job running, or lose the output of a job that had COMPLETED.
	// Defaults to 5.
	MaxCancelAttempts int
	// Expect, when set, tells the poll scheduler how long the endpoint's
	// jobs run (NextPoll). nil: no estimate.
	Expect ExecEstimator
}

// WithDefaults fills zero fields with their defaults.
func (p Policy) WithDefaults() Policy {
	p.Poll = p.Poll.WithDefaults()
	p.Retry = p.Retry.WithDefaults()
	if p.SubmitUncertain == "" {
		p.SubmitUncertain = SubmitUncertainDefault
	}
	if p.MaxCancelAttempts == 0 {
		p.MaxCancelAttempts = MaxCancelAttemptsDefault
	}
	return p
}

// Validate reports the first bad field, named with its path, e.g.
// "workflow: Poll.Max: 1s is less than Initial 2s". Call it after WithDefaults.
func (p Policy) Validate() error {
	if err := p.Poll.Validate(); err != nil {
		return fmt.Errorf("workflow: Poll.%w", err)
	}
	if err := p.Retry.Validate(); err != nil {
		return fmt.Errorf("workflow: Retry.%w", err)
	}
	if p.SubmitUncertain == "" || !p.SubmitUncertain.Valid() {
		return fmt.Errorf("workflow: SubmitUncertain: %q is not %q or %q",
			p.SubmitUncertain, SubmitUncertainResubmit, SubmitUncertainFail)
	}
	if p.MaxCancelAttempts < 1 {
		return fmt.Errorf("workflow: MaxCancelAttempts: %d is less than 1", p.MaxCancelAttempts)
	}
	return nil
}
