package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// dedupeRetries bounds the optimistic dedupe loop: the scripts may only touch
// keys passed in KEYS, so the caller reads the dedupe key first, passes the
// holder's record key, and the script refuses ("retry") if the dedupe key
// changed meanwhile. Each retry means another submit won a race, so a few
// are plenty.
const dedupeRetries = 5

// Submit creates a job atomically (record, submission entry, submitted
// event), or returns the existing job for a known id, or (Dedupe) the live or
// completed job holding the same input hash. The submission is validated as
// a worker would (DecodeSubmission rules, opts.MaxInput); a refusal is a
// *PoisonError and nothing is written. A known id that is an alias record
// answers with its target (Deduped true) while the target is live or
// COMPLETED; an alias whose target is gone or ended otherwise is deleted and
// the id submitted as a new job.
//
// With the store's Durability (SetDurability) the answer waits for it; short
// of it the result comes with an error wrapping ErrNotDurable. An answer
// about an existing record waits for that record too.
func (s *Store) Submit(ctx context.Context, sub Submission, opts SubmitOpts) (SubmitResult, error) {
	if err := ValidateSubmission(sub, opts.MaxInput); err != nil {
		return SubmitResult{}, fmt.Errorf("streams: submit: %w", err)
	}
	payload, err := EncodePayload(EventPayload{})
	if err != nil {
		return SubmitResult{}, err
	}
	dedupe := opts.Dedupe && sub.InputHash != ""
	timeout := ""
	if sub.TimeoutMs > 0 {
		timeout = strconv.FormatInt(sub.TimeoutMs, 10)
	}
	persist := "0"
	if opts.PersistInput {
		persist = "1"
	}
	// aliasSeen: the alias holder the script reported on a previous pass;
	// passing it (and its record) lets the script drop a stale alias.
	aliasSeen := ""
	for range dedupeRetries {
		aliasKey := s.keys.Job(sub.JobID) // placeholder when no alias was seen
		if aliasSeen != "" {
			aliasKey = s.keys.Job(aliasSeen)
		}
		keys := []string{s.keys.Submissions(), s.keys.Events(), s.keys.Job(sub.JobID), aliasKey}
		seen := ""
		if dedupe {
			keys = append(keys, s.keys.Dedupe(sub.InputHash))
			seen, err = s.rdb.Get(ctx, keys[4]).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return SubmitResult{}, fmt.Errorf("streams: submit %q: read dedupe key: %w", sub.JobID, err)
			}
			if seen != "" {
				keys = append(keys, s.keys.Job(seen))
			}
		}
		run, durable := s.runScript, "0"
		if s.dur.On() {
			run, durable = s.runDurable, "1"
		}
		v, err := run(ctx, "submit "+sub.JobID, scriptSubmit, keys,
			sub.JobID, string(sub.Input), sub.InputHash, timeout, msArg(opts.Now), persist, seen, payload, aliasSeen, durable)
		if err != nil && (v == nil || !errors.Is(err, ErrNotDurable)) {
			return SubmitResult{}, err
		}
		notDurable := err // applied, not confirmed: answered with the result
		r, err := replyStrings("submit", v)
		if err != nil || len(r) == 0 {
			return SubmitResult{}, fmt.Errorf("streams: submit %q: bad reply %v: %w", sub.JobID, v, err)
		}
		switch r[0] {
		case "retry":
			continue
		case "created":
			return SubmitResult{JobID: r[1], Created: true, State: r[2], Entry: r[3]}, notDurable
		case "deduped":
			return SubmitResult{JobID: r[1], Deduped: true, State: r[2], Entry: r[3]}, notDurable
		case "exists":
			if alias := r[4]; alias != "" {
				if alias != aliasSeen {
					// Not checked yet: pass the holder's record so the
					// script can tell a live alias from a stale one.
					aliasSeen = alias
					continue
				}
				res := SubmitResult{JobID: alias, Deduped: true}
				rec, err := s.Get(ctx, alias)
				if err == nil {
					res.State, res.Entry = rec.State, rec.Entry
				} else if !errors.Is(err, ErrNotFound) {
					return SubmitResult{}, err
				}
				return res, notDurable
			}
			return SubmitResult{JobID: r[1], State: r[2], Entry: r[3]}, notDurable
		default:
			return SubmitResult{}, fmt.Errorf("streams: submit %q: unexpected reply %q", sub.JobID, r[0])
		}
	}
	return SubmitResult{}, fmt.Errorf("streams: submit %q: %w", sub.JobID, ErrDedupeContention)
}
