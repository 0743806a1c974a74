package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors of Retry. Match with errors.Is.
var (
	// ErrCompleted: the job completed; its outcome stands and it is not run again.
	ErrCompleted = errors.New("streams: job completed; not retried")
	// ErrNotFinished: the job has no outcome yet; only a finished job is retried.
	ErrNotFinished = errors.New("streams: job not finished; not retried")
	// ErrNoInput: the job's input was not kept (neither persisted in the
	// record nor given by the caller), so it cannot be sent again.
	ErrNoInput = errors.New("streams: job input not kept; cannot retry")
	// ErrAlias: the record is an alias of another job; retry that job.
	ErrAlias = errors.New("streams: alias record; retry the job it names")
)

// RetryResult is what Retry did.
type RetryResult struct {
	Run           int    // the new run's number (the first run is 1)
	Entry         string // the new submission entry
	PreviousState string // the state the previous run ended in
}

// Retry runs a finished (FAILED, TIMED_OUT or CANCELED) job again under the
// same id as a new run (retry.lua). input is the job's input when the
// caller has it (a dead-letter copy); nil uses the record's persisted input.
// now is a test override of the script's clock; the zero time (what the
// client passes) means Redis's own: the new run's deadline is compared by
// every worker.
func (s *Store) Retry(ctx context.Context, jobID string, input []byte, now time.Time) (RetryResult, error) {
	payload, err := EncodePayload(EventPayload{Reason: "retry"})
	if err != nil {
		return RetryResult{}, err
	}
	keys := []string{s.keys.Job(jobID), s.keys.Submissions(), s.keys.Events()}
	// The record's input hash (it never changes) names the dedupe key the
	// new run takes back.
	hash, err := s.rdb.HGet(ctx, s.keys.Job(jobID), recInputHash).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return RetryResult{}, fmt.Errorf("streams: retry %q: read the input hash: %w", jobID, err)
	}
	if hash != "" {
		keys = append(keys, s.keys.Dedupe(hash))
	}
	v, err := s.runScript(ctx, "retry "+jobID, scriptRetry, keys,
		jobID, scriptNow(now), string(input), payload)
	if err != nil {
		return RetryResult{}, err
	}
	r, err := replyStrings("retry", v)
	if err != nil || len(r) == 0 {
		return RetryResult{}, fmt.Errorf("streams: retry %q: bad reply %v", jobID, v)
	}
	switch r[0] {
	case "retried":
		run, _ := strconv.Atoi(r[1])
		return RetryResult{Run: run, Entry: r[2], PreviousState: r[3]}, nil
	case "not_found":
		return RetryResult{}, fmt.Errorf("streams: retry %q: %w", jobID, ErrNotFound)
	case "alias":
		return RetryResult{}, fmt.Errorf("streams: retry %q: %w", jobID, ErrAlias)
	case "completed":
		return RetryResult{}, fmt.Errorf("streams: retry %q: %w", jobID, ErrCompleted)
	case "not_terminal":
		return RetryResult{}, fmt.Errorf("streams: retry %q (state %s): %w", jobID, strings.Join(r[1:], ""), ErrNotFinished)
	case "no_input":
		return RetryResult{}, fmt.Errorf("streams: retry %q: %w", jobID, ErrNoInput)
	}
	return RetryResult{}, fmt.Errorf("streams: retry %q: unknown reply %q", jobID, r[0])
}

// PurgeFinished deletes the records of finished jobs among ids (purge.lua):
// terminal, not an alias, and in states when given (nil = every terminal
// state). A live job's record is never touched. It returns the ids deleted.
func (s *Store) PurgeFinished(ctx context.Context, ids []string, states []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.keys.Job(id)
	}
	v, err := s.runScript(ctx, "purge", scriptPurge, keys, strings.Join(states, ","))
	if err != nil {
		return nil, err
	}
	idx, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("streams: purge: unexpected reply %T", v)
	}
	out := make([]string, 0, len(idx))
	for _, x := range idx {
		if i, ok := x.(int64); ok && i >= 1 && int(i) <= len(ids) {
			out = append(out, ids[i-1])
		}
	}
	return out, nil
}
