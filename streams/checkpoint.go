package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrInvalid: a call's arguments are malformed (a terminal state given to
// Checkpoint, a non-terminal one to Finalize). A programming error.
var ErrInvalid = errors.New("streams: invalid argument")

// terminalStates are the states Finalize accepts and Checkpoint refuses.
var terminalStates = map[string]string{
	"COMPLETED": EventCompleted,
	"FAILED":    EventFailed,
	"TIMED_OUT": EventTimedOut,
	"CANCELED":  EventCanceled,
}

// Checkpoint applies cp atomically with its event, if the job is not
// terminal and the record names cp.Owner at cp.Epoch. ErrNotFound, ErrTerminal, ErrFenced,
// ErrCancelRequested are checked in that order; a refusal writes nothing.
// ErrCancelRequested refuses only a Step SUBMITTING checkpoint (the /run
// intent) on a job whose cancel flag is set. Terminal states go
// through Finalize (ErrInvalid here).
func (s *Store) Checkpoint(ctx context.Context, cp Checkpoint, now time.Time) error {
	if now.IsZero() {
		now = time.Now()
	}
	if _, ok := terminalStates[cp.State]; ok {
		return fmt.Errorf("streams: checkpoint %q: state %s is terminal, use Finalize: %w", cp.JobID, cp.State, ErrInvalid)
	}
	var result []byte
	if cp.Output != nil {
		var err error
		if result, err = EncodeResult(cp.Output, ""); err != nil {
			return err
		}
	}
	etype, payload := "", []byte(nil)
	if cp.Event != nil {
		var err error
		etype = cp.Event.Type
		if payload, err = EncodePayload(cp.Event.Payload); err != nil {
			return err
		}
	}
	run := s.runScript
	if cp.Durable && s.dur.On() {
		run = s.runDurable
	}
	v, err := run(ctx, "checkpoint "+cp.JobID, scriptCheckpoint,
		[]string{s.keys.Job(cp.JobID), s.keys.Events()},
		cp.JobID, strconv.FormatInt(cp.Epoch, 10), now.UnixMilli(), cp.Step, cp.State,
		cp.RunpodID, cp.RunpodStatus, attemptsArg(cp.Attempts), result, etype, payload, cp.Owner,
		attemptsArg(cp.UncertainAttempt))
	if err != nil && (v == nil || !errors.Is(err, ErrNotDurable)) {
		return err
	}
	code, _ := v.(string)
	if cerr := codeErr(code); cerr != nil {
		return fmt.Errorf("streams: checkpoint %q at epoch %d: %w", cp.JobID, cp.Epoch, cerr)
	}
	return err // nil, or applied but ErrNotDurable
}

// attemptsArg is ARGV[8] of checkpoint.lua: "" leaves attempts unchanged.
func attemptsArg(n int) string {
	if n <= 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// codeErr maps a script's refusal code to its sentinel.
func codeErr(code string) error {
	switch code {
	case "ok":
		return nil
	case "not_found":
		return ErrNotFound
	case "terminal":
		return ErrTerminal
	case "fenced":
		return ErrFenced
	case "canceled":
		return ErrCancelRequested
	}
	return fmt.Errorf("unexpected script reply %q", code)
}
