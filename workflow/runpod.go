package workflow

import (
	"context"
	"encoding/json"
	"time"
)

// Runpod is the set of activities the workflow needs from Runpod. The
// activities package implements it over HTTP (with retries, a circuit breaker
// and rate limits); tests may use the simulator behind the same client.
//
// Every method must honour ctx: return promptly with ctx.Err() (wrapped) when
// it is done. Errors are classified with the helpers in errors.go.
type Runpod interface {
	// Run calls POST /run. It is never retried after the request may have
	// reached Runpod: such a failure wraps ErrSubmitUncertain.
	Run(ctx context.Context, req RunRequest) (RunpodJob, error)
	// Status calls /status/{id}. A 404 wraps ErrRunpodJobNotFound.
	Status(ctx context.Context, runpodID string) (RunpodJob, error)
	// Cancel calls POST /cancel/{id}.
	Cancel(ctx context.Context, runpodID string) (RunpodJob, error)
}

// EndpointChecker is implemented by a Runpod activity that can tell
// whether its credentials and endpoint are good (activities.Client does it
// with GET /health). A wrong endpoint id also answers 404 to /status, which
// otherwise means "job unknown": the worker asks CheckEndpoint before it
// fails a job for a 404, and a CheckEndpoint error wrapping ErrWorkerFault
// turns the 404 into a fault of the worker. nil means the endpoint is good.
type EndpointChecker interface {
	CheckEndpoint(ctx context.Context) error
}

// RunRequest is the body of POST /run.
type RunRequest struct {
	// Input is passed to the Runpod handler as job["input"]. Required.
	Input json.RawMessage `json:"input"`
	// Webhook is an optional URL Runpod POSTs the job object to when done.
	Webhook string `json:"webhook,omitempty"`
	// Policy is optional per-job execution policy.
	Policy *RunPolicy `json:"policy,omitempty"`
}

// RunPolicy is Runpod's per-job policy; all durations are milliseconds.
type RunPolicy struct {
	ExecutionTimeoutMs int64 `json:"executionTimeout,omitempty"`
	TTLMs              int64 `json:"ttl,omitempty"`
	LowPriority        bool  `json:"lowPriority,omitempty"`
}

// RunpodJob is Runpod's job object (docs/runpod-api.md §4). Absent fields are zero.
type RunpodJob struct {
	ID            string       `json:"id"`
	Status        RunpodStatus `json:"status"`
	DelayTime     int64        `json:"delayTime,omitempty"`
	ExecutionTime int64        `json:"executionTime,omitempty"`
	WorkerID      string       `json:"workerId,omitempty"`
	// Output is the handler's output on COMPLETED, or its latest progress
	// update while IN_PROGRESS.
	Output json.RawMessage `json:"output,omitempty"`
	// Error is the failure text. Runpod sends a string (often a JSON-encoded
	// object from the Python worker); a non-string value is kept as its JSON text.
	Error   string `json:"error,omitempty"`
	Retries int    `json:"retries,omitempty"`
}

// Operation names of the Runpod calls the workflow makes; implementations
// use them for rate budgets and errors (ActivityError.Op).
const (
	OpRun    = "run"
	OpStatus = "status"
	OpCancel = "cancel"
)

// Pacer is optionally implemented by a Runpod whose calls draw on a rate
// budget (activities.Client does). The worker asks it before each call, so
// a call with no budget left is rescheduled instead of waiting inside one of
// the worker's executor slots, and is not counted as a failure.
type Pacer interface {
	// Reserve takes the budget of one call of op without waiting. It
	// returns 0 when the call may go now; the caller then makes it with a
	// ctx from WithReserved. Otherwise it returns how long to wait before
	// asking again, and nothing was taken.
	Reserve(ctx context.Context, op string) time.Duration
}

type reservedKey struct{}

// WithReserved marks ctx for a call whose budget was taken with
// Pacer.Reserve: the implementation does not take it again for the first
// attempt, and never waits for budget for a later one (it returns the last
// error instead, so the caller reschedules).
func WithReserved(ctx context.Context) context.Context {
	return context.WithValue(ctx, reservedKey{}, true)
}

// Reserved reports whether ctx was marked by WithReserved.
func Reserved(ctx context.Context) bool {
	v, _ := ctx.Value(reservedKey{}).(bool)
	return v
}
