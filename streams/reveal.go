package streams

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Reveal is a Runpod job of a job that its worker never learned the id of
// (an uncertain /run that was sent again), reported by its webhook.
type Reveal struct {
	JobID string
	// Entry is the submission entry of the run the webhook's URL names: a
	// record of another run (a redrive opened since) is left alone
	// (RevealStale).
	Entry    string
	RunpodID string
	// ExecMs is the revealed job's executionTime (its GPU time), added to
	// Record.RevealedGPUMs.
	ExecMs int64
	// Payload is the runpod_job_revealed event's payload (RunpodID,
	// RunpodStatus, ExecMs, Attempt).
	Payload EventPayload
}

// RevealResult says what RevealRunpodJob did.
type RevealResult int

const (
	// RevealKnown: the id is the recorded one or was revealed before;
	// nothing was written (a duplicate delivery).
	RevealKnown RevealResult = iota + 1
	// Revealed: recorded, and a runpod_job_revealed event appended.
	Revealed
	// RevealedTerminal: recorded on a finished job; no event (nothing may
	// follow a terminal event).
	RevealedTerminal
	// RevealStale: the record is another run's (Reveal.Entry is not its
	// entry); nothing was written.
	RevealStale
)

// RevealRunpodJob records r on its job record (fields revealed and
// revealed_gpu_ms) atomically with its event. ErrNotFound if the record is
// gone. It never changes the job's state: whether the revealed job's result
// wins is for Finalize.
func (s *Store) RevealRunpodJob(ctx context.Context, r Reveal, now time.Time) (RevealResult, error) {
	if r.RunpodID == "" || strings.ContainsAny(r.RunpodID, " \t\r\n") {
		return 0, fmt.Errorf("streams: reveal %q: runpod id must be non-empty without whitespace: %w", r.JobID, ErrInvalid)
	}
	payload, err := EncodePayload(r.Payload)
	if err != nil {
		return 0, err
	}
	v, err := s.runScript(ctx, "reveal "+r.JobID, scriptReveal,
		[]string{s.keys.Job(r.JobID), s.keys.Events()},
		r.JobID, r.RunpodID, r.ExecMs, scriptNow(now), payload, r.Entry)
	if err != nil {
		return 0, err
	}
	switch code, _ := v.(string); code {
	case "known":
		return RevealKnown, nil
	case "revealed":
		return Revealed, nil
	case "revealed_terminal":
		return RevealedTerminal, nil
	case "stale":
		return RevealStale, nil
	case "not_found":
		return 0, fmt.Errorf("streams: reveal %q: %w", r.JobID, ErrNotFound)
	default:
		return 0, fmt.Errorf("streams: reveal %q: unexpected script reply %q", r.JobID, code)
	}
}
