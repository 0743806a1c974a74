package workflow

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors shared by the activities, the worker and the client.
var (
	// ErrRunpodJobNotFound: /status answered 404. Runpod deletes results 30
	// minutes after completion and jobs whose TTL expired, so this means
	// "job unknown or expired".
	ErrRunpodJobNotFound = errors.New("runpod: job unknown or expired")
	// ErrSubmitUncertain: a /run request may have reached Runpod but no
	// response was read, so whether a Runpod job exists is unknown.
	ErrSubmitUncertain = errors.New("runpod: /run outcome uncertain")
	// ErrCircuitOpen: the endpoint's circuit breaker rejected the call
	// without sending it. Retry later; it says nothing about the job.
	ErrCircuitOpen = errors.New("runpod: circuit breaker open")
	// ErrJobNotFound: no job record exists for the id (never submitted, or
	// expired after its result TTL).
	ErrJobNotFound = errors.New("job not found")
	// ErrWorkerFault: Runpod refused the worker itself, not the job: the API
	// key was rejected (401/403) or the endpoint does not exist (404 outside
	// a job). Every job would fail the same way, so no job is failed for it:
	// the workflow keeps the job (Apply retries it), and the worker stops
	// taking work and hands its jobs to healthy workers.
	ErrWorkerFault = errors.New("runpod: worker misconfigured (API key or endpoint rejected)")
)

// IsWorkerFault reports whether err is a fault of the worker's Runpod
// configuration (ErrWorkerFault) rather than of a job.
func IsWorkerFault(err error) bool { return err != nil && errors.Is(err, ErrWorkerFault) }

// ActivityError describes a failed Runpod call: which operation, the HTTP
// status if any, and whether retrying may help. It never contains the API key.
type ActivityError struct {
	// Op is the operation: "run", "status", "cancel", "stream", "health", ...
	Op string
	// StatusCode is the HTTP status, or 0 for transport errors.
	StatusCode int
	// Transient reports whether the same call may succeed later (network
	// errors, timeouts, 5xx, 429). Permanent errors (400, 401, 403, 404) are not.
	Transient bool
	// RetryAfter is the server's Retry-After hint, or 0.
	RetryAfter time.Duration
	// Err is the underlying cause (may wrap one of the sentinels above).
	Err error
}

func (e *ActivityError) Error() string {
	kind := "permanent"
	if e.Transient {
		kind = "transient"
	}
	if e.StatusCode != 0 {
		return fmt.Sprintf("runpod %s: %s error: HTTP %d: %v", e.Op, kind, e.StatusCode, e.Err)
	}
	return fmt.Sprintf("runpod %s: %s error: %v", e.Op, kind, e.Err)
}

func (e *ActivityError) Unwrap() error { return e.Err }

// IsTransient reports whether err is worth retrying later: a transient
// ActivityError or an open circuit. Context errors are not transient: the
// caller gave up.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrCircuitOpen) {
		return true
	}
	var ae *ActivityError
	if errors.As(err, &ae) {
		return ae.Transient
	}
	return false
}

// RetryAfterHint returns the server-provided delay carried by err, or 0.
func RetryAfterHint(err error) time.Duration {
	var ae *ActivityError
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	return 0
}
