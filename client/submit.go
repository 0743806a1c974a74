package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Limits on SubmitOptions, the same as the wire format's (streams).
const (
	// MaxClientJobIDBytes is the longest ClientJobID accepted.
	MaxClientJobIDBytes = streams.MaxJobIDLen
	// MaxInputHashBytes is the longest InputHash accepted.
	MaxInputHashBytes = streams.MaxInputHashLen
)

// SubmitOptions describes one job to submit.
type SubmitOptions struct {
	// ClientJobID names the job and is its idempotency key: submitting the
	// same id again returns the existing job. Required; at most
	// MaxClientJobIDBytes of UTF-8 without whitespace or control characters.
	ClientJobID string
	// Input is the Runpod handler's input (job["input"]). Any Go value is
	// marshalled to JSON; a json.RawMessage is used as is and must be valid
	// JSON. Required (not JSON null); at most Config.MaxInputBytes.
	Input any
	// InputHash is an optional dedupe key (for example "sha256:<hex>" of the
	// input). With Config.Dedupe, a live or completed job holding the same
	// hash answers instead of a new job.
	InputHash string
	// Timeout is the job's deadline, counted from its creation; the worker
	// cancels it on Runpod and ends it TIMED_OUT. Zero means the workers'
	// default.
	Timeout time.Duration
	// WaitAccepted makes Submit wait until Runpod accepted the job (its
	// "queued" event) and return the Runpod job id. Bound the wait with ctx.
	WaitAccepted bool
}

// SubmitResult says which job answers a submission.
type SubmitResult struct {
	// ClientJobID is the answering job: the submitted id, or with
	// Deduplicated the job that holds the same input hash.
	ClientJobID string `json:"clientJobId"`
	// RunpodJobID is Runpod's job id; set with WaitAccepted, or when an
	// existing job already had one.
	RunpodJobID string `json:"runpodJobId,omitempty"`
	// State is the answering job's state when Submit returned.
	State workflow.State `json:"state"`
	// Deduplicated: another job holds the same input hash and answers.
	Deduplicated bool `json:"deduplicated,omitempty"`
	// Existing: the ClientJobID was already known; nothing new was created.
	Existing bool `json:"existing,omitempty"`
}

// Submit creates a job, or returns the one that already answers for its id
// or (with Config.Dedupe) its input hash. Creating the record, appending the
// submission for the workers and the "submitted" event is one atomic step.
//
// Invalid options are refused with an error naming the field. With
// WaitAccepted, Submit then waits for Runpod to accept the job; if the job
// ends first, it returns the filled SubmitResult together with an error
// matching ErrNotAccepted.
func (c *Client) Submit(ctx context.Context, opts SubmitOptions) (SubmitResult, error) {
	input, err := c.checkSubmit(opts)
	if err != nil {
		return SubmitResult{}, err
	}
	if err := c.checkParts(ctx); err != nil {
		return SubmitResult{}, err
	}
	sub := streams.Submission{
		JobID:     opts.ClientJobID,
		Input:     input,
		InputHash: opts.InputHash,
		TimeoutMs: opts.Timeout.Milliseconds(),
	}
	var w *waiter
	if opts.WaitAccepted {
		// Register before submitting, so the queued event cannot slip by
		// between the submission and the wait.
		if w, err = c.hubFor(opts.ClientJobID).register(ctx, opts.ClientJobID, accepted); err != nil {
			return SubmitResult{}, fmt.Errorf("client: submit %q: %w", opts.ClientJobID, err)
		}
	}
	sr, err := c.store(sub.JobID).Submit(ctx, sub, streams.SubmitOpts{
		Dedupe:       c.cfg.Dedupe && opts.InputHash != "",
		PersistInput: c.cfg.PersistInput,
		MaxInput:     c.cfg.MaxInputBytes,
	})
	res := SubmitResult{
		ClientJobID:  sr.JobID,
		State:        workflow.State(sr.State),
		Deduplicated: sr.Deduped,
		Existing:     !sr.Created && !sr.Deduped,
	}
	if err != nil {
		if w != nil {
			w.h.unregister(w)
		}
		if errors.Is(err, streams.ErrNotDurable) {
			// The job exists on the primary: say what is known, and how to
			// confirm it (the same id again waits again).
			return res, fmt.Errorf("client: submit %q: the job exists but a failover could lose it; submit the same id again to confirm it: %w", opts.ClientJobID, err)
		}
		return SubmitResult{}, fmt.Errorf("client: submit %q: %w", opts.ClientJobID, err)
	}
	if !opts.WaitAccepted {
		if !sr.Created {
			// An existing job may already be on Runpod; say so when cheap.
			if job, err := c.Get(ctx, sr.JobID); err == nil {
				res.RunpodJobID, res.State = job.RunpodID, job.State
			}
		}
		return res, nil
	}
	return c.waitAccepted(ctx, w, res)
}

// accepted matches the event that ends a WaitAccepted wait: Runpod's id is
// known, or the job ended without one.
func accepted(ev streams.Event) bool {
	return ev.Type == streams.EventQueued || ev.Payload.RunpodID != "" ||
		workflow.State(ev.State).Terminal()
}

// waitAccepted finishes a Submit with WaitAccepted; w is registered for the
// submitted id.
func (c *Client) waitAccepted(ctx context.Context, w *waiter, res SubmitResult) (SubmitResult, error) {
	if res.ClientJobID != w.jobID {
		// Deduplicated onto another job: wait for that one instead.
		w.h.unregister(w)
		var err error
		if w, err = c.hubFor(res.ClientJobID).register(ctx, res.ClientJobID, accepted); err != nil {
			return res, fmt.Errorf("client: submit: wait for %q: %w", res.ClientJobID, err)
		}
	}
	job, err := c.Get(ctx, res.ClientJobID)
	if err != nil {
		w.h.unregister(w)
		return res, fmt.Errorf("client: submit: wait: %w", err)
	}
	res.State = job.State
	if job.RunpodID != "" || job.State.Terminal() {
		w.h.unregister(w)
		return acceptedResult(res, job.RunpodID)
	}
	ev, rec, err := c.waitOrRecheck(ctx, w, res.ClientJobID, func(j Job) bool { return j.RunpodID != "" || j.State.Terminal() })
	if err != nil {
		return res, fmt.Errorf("client: submit: wait for %q to be accepted: %w", res.ClientJobID, err)
	}
	if rec != nil {
		res.State = rec.State
		return acceptedResult(res, rec.RunpodID)
	}
	res.State = workflow.State(ev.State)
	runpodID := ev.Payload.RunpodID
	if runpodID == "" {
		// The queued event should carry the id; the record always does.
		if job, err := c.Get(ctx, res.ClientJobID); err == nil {
			runpodID = job.RunpodID
		}
	}
	return acceptedResult(res, runpodID)
}

func acceptedResult(res SubmitResult, runpodID string) (SubmitResult, error) {
	res.RunpodJobID = runpodID
	if runpodID == "" && res.State.Terminal() {
		return res, fmt.Errorf("client: submit %q: %w (state %s)", res.ClientJobID, ErrNotAccepted, res.State)
	}
	return res, nil
}

// checkSubmit validates opts and returns the input as JSON text.
func (c *Client) checkSubmit(opts SubmitOptions) ([]byte, error) {
	if err := checkToken("ClientJobID", opts.ClientJobID, MaxClientJobIDBytes, true); err != nil {
		return nil, err
	}
	if err := checkToken("InputHash", opts.InputHash, MaxInputHashBytes, false); err != nil {
		return nil, err
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("client: submit: Timeout: %v is negative", opts.Timeout)
	}
	if opts.Timeout > 0 && opts.Timeout < time.Millisecond {
		return nil, fmt.Errorf("client: submit: Timeout: %v is under a millisecond", opts.Timeout)
	}
	var input []byte
	switch v := opts.Input.(type) {
	case nil:
		return nil, errors.New("client: submit: Input: required")
	case json.RawMessage:
		if !json.Valid(v) {
			return nil, errors.New("client: submit: Input: not valid JSON")
		}
		input = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("client: submit: Input: %w", err)
		}
		input = b
	}
	if string(bytes.TrimSpace(input)) == "null" {
		return nil, errors.New("client: submit: Input: must not be JSON null")
	}
	if len(input) > c.cfg.MaxInputBytes {
		return nil, fmt.Errorf("client: submit: Input: %d bytes, over MaxInputBytes %d", len(input), c.cfg.MaxInputBytes)
	}
	return input, nil
}

// checkToken applies the wire format's rules for identifiers to a field.
func checkToken(field, s string, maxLen int, required bool) error {
	switch {
	case s == "" && required:
		return fmt.Errorf("client: submit: %s: required", field)
	case len(s) > maxLen:
		return fmt.Errorf("client: submit: %s: %d bytes, at most %d allowed", field, len(s), maxLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("client: submit: %s: not valid UTF-8", field)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("client: submit: %s %q: contains whitespace or control characters", field, s)
		}
	}
	return nil
}
