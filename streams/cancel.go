package streams

import (
	"context"
	"fmt"
	"time"
)

// CancelOpts tunes Cancel.
type CancelOpts struct {
	// StubTTL: when no job has the id, keep the cancel this long as a stub
	// record, so a raw submission with that id still waiting in the stream
	// ends CANCELED without being sent when a worker admits it (and a later
	// Submit of the id is cancelled too). 0 = no stub: an unknown id is
	// ErrNotFound.
	StubTTL time.Duration
	// Now, when non-zero, fixes the script's clock (tests); zero uses
	// Redis's clock.
	Now time.Time
}

// Cancel requests cancellation: sets the cancel flag on a non-terminal job,
// appends a cancel_requested event (once) and nudges workers on the control
// channel. It returns the job's state; a terminal job is left unchanged, and
// so is an alias record (state ""). For an unknown id it is ErrNotFound, or
// with opts.StubTTL ErrCancelPending (the cancel waits for the id to
// arrive).
func (s *Store) Cancel(ctx context.Context, jobID string, opts CancelOpts) (string, error) {
	payload, err := EncodePayload(EventPayload{})
	if err != nil {
		return "", err
	}
	v, err := s.runScript(ctx, "cancel "+jobID, scriptCancel,
		[]string{s.keys.Job(jobID), s.keys.Events()},
		jobID, msArg(opts.Now), payload, s.keys.Control(), ControlMessage{Kind: ControlCancel, JobID: jobID}.String(),
		opts.StubTTL.Milliseconds())
	if err != nil {
		return "", err
	}
	r, err := replyStrings("cancel", v)
	if err != nil || len(r) == 0 {
		return "", fmt.Errorf("streams: cancel %q: bad reply %v: %w", jobID, v, err)
	}
	switch r[0] {
	case "not_found":
		return "", fmt.Errorf("streams: cancel %q: %w", jobID, ErrNotFound)
	case "pending":
		return "", fmt.Errorf("streams: cancel %q: %w", jobID, ErrCancelPending)
	case "alias":
		return "", nil
	case "terminal", "requested":
		return r[1], nil
	}
	return "", fmt.Errorf("streams: cancel %q: unexpected reply %q", jobID, r[0])
}
