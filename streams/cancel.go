package streams

import (
	"context"
	"errors"
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

// ErrHintNotPublished: a cancel was recorded (flag and event written) but
// its hint to the workers could not be published (an ACL user without the
// namespace's control channel). The owner still acts on the flag at its
// next periodic check of the record.
var ErrHintNotPublished = errors.New("streams: cancel recorded, but the hint to the workers was not published")

// CancelResult is what CancelJob did.
type CancelResult struct {
	// State is the job's state ("" for an alias record).
	State string
	// Requested: the job was not terminal, so its cancel flag is set (now
	// or by an earlier cancel). False for a terminal job or an alias.
	Requested bool
	// Receivers is how many subscribers the hint reached: 0 means no worker
	// is subscribed right now (none running, or reconnecting). In Redis
	// Cluster it counts the subscribers of the node that ran the script.
	Receivers int64
	// HintError is why the hint could not be published ("" when it was).
	HintError string
}

// Cancel is CancelJob returning the job's state. A recorded cancel whose
// hint failed returns the state and an error wrapping ErrHintNotPublished.
func (s *Store) Cancel(ctx context.Context, jobID string, opts CancelOpts) (string, error) {
	r, err := s.CancelJob(ctx, jobID, opts)
	if err != nil {
		return "", err
	}
	if r.HintError != "" {
		return r.State, fmt.Errorf("streams: cancel %q: %w: %s", jobID, ErrHintNotPublished, r.HintError)
	}
	return r.State, nil
}

// CancelJob requests cancellation: sets the cancel flag on a non-terminal
// job, appends a cancel_requested event (once) and nudges workers on the
// control channel. A terminal job is left unchanged, and so is an alias
// record (State ""). For an unknown id it is ErrNotFound, or with
// opts.StubTTL ErrCancelPending (the cancel waits for the id to arrive). A
// hint that could not be published is reported in the result, not as an
// error: the cancel itself is recorded.
func (s *Store) CancelJob(ctx context.Context, jobID string, opts CancelOpts) (CancelResult, error) {
	payload, err := EncodePayload(EventPayload{})
	if err != nil {
		return CancelResult{}, err
	}
	v, err := s.runScript(ctx, "cancel "+jobID, scriptCancel,
		[]string{s.keys.Job(jobID), s.keys.Events(), s.keys.Cancels()},
		jobID, msArg(opts.Now), payload, s.keys.Control(), ControlMessage{Kind: ControlCancel, JobID: jobID}.String(),
		opts.StubTTL.Milliseconds(), CancelLogRetention.Milliseconds())
	if err != nil {
		return CancelResult{}, err
	}
	r, ok := v.([]any)
	if !ok || len(r) == 0 {
		return CancelResult{}, fmt.Errorf("streams: cancel %q: bad reply %v", jobID, v)
	}
	str := func(i int) string {
		if i < len(r) {
			s, _ := r[i].(string)
			return s
		}
		return ""
	}
	switch code := str(0); code {
	case "not_found":
		return CancelResult{}, fmt.Errorf("streams: cancel %q: %w", jobID, ErrNotFound)
	case "pending":
		return CancelResult{}, fmt.Errorf("streams: cancel %q: %w", jobID, ErrCancelPending)
	case "alias":
		return CancelResult{}, nil
	case "terminal":
		return CancelResult{State: str(1)}, nil
	case "requested":
		res := CancelResult{State: str(1), Requested: true}
		if len(r) > 2 {
			res.Receivers, _ = r[2].(int64)
		}
		if res.Receivers < 0 {
			res.Receivers, res.HintError = 0, str(3)
			if res.HintError == "" {
				res.HintError = "PUBLISH failed"
			}
		}
		return res, nil
	default:
		return CancelResult{}, fmt.Errorf("streams: cancel %q: unexpected reply %q", jobID, code)
	}
}

// CancelLogRetention is how long the cancel log (Keys.Cancels) keeps an
// entry. An owner whose beats fail for longer may miss a cancel there; its
// periodic re-read of the record (and the hint) still sees it.
const CancelLogRetention = time.Hour

// CancelLogRead is one read of the cancel log.
type CancelLogRead struct {
	// JobIDs are the jobs named by the entries read, in log order.
	JobIDs []string
	// Next is the position to read from next: the last entry read, or the
	// position read from when there was nothing.
	Next string
	// Entry says Next is the id of an entry read (pass it as read).
	Entry bool
	// RolledBack reports that the position, an entry the reader had read,
	// is no longer in the log while older entries are (Redis lost writes:
	// a restart from an older snapshot, a promoted replica): the entries
	// were read from the start of the log instead.
	RolledBack bool
}

// CancelsAfter reads up to count entries of the cancel log after position
// after (a stream id; "0-0" = from the start). read says the position is an
// entry the caller read (a Next of an earlier read that returned entries):
// the script then checks it is still in the log (cancels_read.lua), so a
// rollback that lost the log's tail does not hide the cancels logged after
// it under ids below the position.
func (s *Store) CancelsAfter(ctx context.Context, after string, read bool, count int64) (CancelLogRead, error) {
	if after == "" {
		after, read = "0-0", false
	}
	flag := "0"
	if read {
		flag = "1"
	}
	res := CancelLogRead{Next: after, Entry: read}
	raw, err := scriptCancelsRd.Run(ctx, s.rdb, []string{s.keys.Cancels()}, after, count, flag).Slice()
	if err != nil {
		return res, fmt.Errorf("streams: read the cancel log: %w", err)
	}
	if len(raw) == 0 || len(raw)%2 != 1 {
		return res, fmt.Errorf("streams: read the cancel log: unexpected reply of %d values", len(raw))
	}
	if n, _ := raw[0].(int64); n == 1 {
		res.RolledBack, res.Next, res.Entry = true, "0-0", false
	}
	for i := 1; i+1 < len(raw); i += 2 {
		id, _ := raw[i].(string)
		if job, _ := raw[i+1].(string); job != "" {
			res.JobIDs = append(res.JobIDs, job)
		}
		if id != "" {
			res.Next, res.Entry = id, true
		}
	}
	return res, nil
}
