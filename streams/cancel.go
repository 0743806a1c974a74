package streams

import (
	"context"
	"fmt"
	"time"
)

// Cancel requests cancellation: sets the cancel flag on a non-terminal job,
// appends a cancel_requested event (once) and nudges workers on the control
// channel. It returns the job's state; a terminal job is left unchanged, and
// so is an alias record (state ""). ErrNotFound if absent.
func (s *Store) Cancel(ctx context.Context, jobID string, now time.Time) (string, error) {
	if now.IsZero() {
		now = time.Now()
	}
	payload, err := EncodePayload(EventPayload{})
	if err != nil {
		return "", err
	}
	v, err := s.runScript(ctx, "cancel "+jobID, scriptCancel,
		[]string{s.keys.Job(jobID), s.keys.Events()},
		jobID, now.UnixMilli(), payload, s.keys.Control(), ControlMessage{Kind: ControlCancel, JobID: jobID}.String())
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
	case "alias":
		return "", nil
	case "terminal", "requested":
		return r[1], nil
	}
	return "", fmt.Errorf("streams: cancel %q: unexpected reply %q", jobID, r[0])
}
