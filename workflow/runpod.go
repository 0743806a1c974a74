package workflow

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
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
	// Error is the failure text, readable (RunpodError): Runpod's string,
	// or the message of an error object (the Python worker's JSON-encoded
	// exception gives "ValueError: bad prompt").
	Error string `json:"error,omitempty"`
	// ErrorJSON is Runpod's error as a JSON value when it is an object or
	// an array, or a string holding one (RunpodError); nil otherwise.
	ErrorJSON json.RawMessage `json:"-"`
	Retries   int             `json:"retries,omitempty"`
}

// RunpodError reads the "error" value of a Runpod job object. Runpod
// documents a string, but the official Python worker sends an uncaught
// exception as a JSON-encoded object inside that string, and a handler
// that returns {"error": {...}} makes it an object. So:
//
//   - value is the error as JSON when it is an object or array, or a
//     string whose text is one (decoded: an object, not JSON inside a
//     string); nil for a plain string, a number, null or absent;
//   - text is readable: the string itself, or for an object its
//     "error_message" (with the Python exception class: "ValueError: bad
//     prompt"), "message" or "error" string, else the value's JSON text.
func RunpodError(raw json.RawMessage) (text string, value json.RawMessage) {
	raw = json.RawMessage(bytes.TrimSpace(raw))
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return string(raw), nil
		}
		inner := bytes.TrimSpace([]byte(s))
		if len(inner) == 0 || (inner[0] != '{' && inner[0] != '[') || !json.Valid(inner) {
			return s, nil
		}
		raw = inner
	}
	if raw[0] != '{' && raw[0] != '[' {
		return string(raw), nil
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return string(raw), nil
	}
	value = buf.Bytes()
	return errorSummary(value), value
}

// errorSummary is the readable text of an error object (see RunpodError).
func errorSummary(value json.RawMessage) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(value, &obj) != nil {
		return string(value)
	}
	str := func(k string) string {
		var s string
		if json.Unmarshal(obj[k], &s) != nil {
			return ""
		}
		return s
	}
	if msg := str("error_message"); msg != "" {
		typ := strings.TrimSuffix(strings.TrimPrefix(str("error_type"), "<class '"), "'>")
		if typ != "" {
			return typ + ": " + msg
		}
		return msg
	}
	for _, k := range []string{"message", "error", "detail"} {
		if s := str(k); s != "" {
			return s
		}
	}
	return string(value)
}

// Redactor is implemented by a Runpod activity that knows the secrets
// (activities.Client: the API key and its extra secrets). RedactJSON
// returns the JSON text b with every secret replaced, keeping its form
// otherwise. The worker passes what Runpod sends it outside a call (webhook
// deliveries) through it, as the client does for its own answers.
type Redactor interface {
	RedactJSON(b []byte) []byte
}

// Operation names of the Runpod calls the workflow makes; implementations
// use them for rate budgets and errors (ActivityError.Op).
const (
	OpRun    = "run"
	OpStatus = "status"
	OpCancel = "cancel"
	OpStream = "stream"
)

// RunpodStream is one answer of /stream/{id}: the chunks a generator job
// yielded since the previous call (Runpod hands each out once) and the
// job's status then.
type RunpodStream struct {
	Status RunpodStatus
	// Outputs are the chunks' outputs, in the order they were yielded.
	Outputs []json.RawMessage
}

// Streamer is implemented by a Runpod activity that can read /stream
// (activities.Client). A worker with streaming on uses it for jobs Runpod
// runs (ActStream); without it, jobs are polled with Status only.
type Streamer interface {
	// StreamChunks calls /stream/{id}; it may hold the request for a while
	// when nothing is buffered.
	StreamChunks(ctx context.Context, runpodID string) (RunpodStream, error)
}

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
