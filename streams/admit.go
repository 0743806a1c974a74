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

// NewAdmitRequest decodes a delivered entry into an AdmitRequest: Sub on
// success, otherwise Poison (the reason) with Sub.JobID set when the entry
// names a usable job id, so Admit fails that job.
func NewAdmitRequest(msg redis.XMessage, maxInput int) AdmitRequest {
	sub, err := DecodeSubmission(msg, maxInput)
	if err == nil {
		return AdmitRequest{Entry: msg, Sub: sub}
	}
	var pe *PoisonError
	if errors.As(err, &pe) {
		return AdmitRequest{Entry: msg, Sub: Submission{JobID: pe.JobID}, Poison: pe.Reason}
	}
	return AdmitRequest{Entry: msg, Poison: err.Error()}
}

// Admit takes ownership of delivered entries in one script call: creates
// the record for a raw submission, refuses duplicates, bumps the epoch, sets
// the owner, counts deliveries and fails poison entries. results[i] answers
// reqs[i]. An Admitted record carries the entry's input even when it is not
// persisted, so the worker needs no other read to run the job.
func (s *Store) Admit(ctx context.Context, reqs []AdmitRequest, opts AdmitOpts) ([]AdmitResult, error) {
	results := make([]AdmitResult, len(reqs))
	todo := make([]int, len(reqs))
	for i := range reqs {
		todo[i] = i
	}
	// aliases: per request index, the alias holder the script reported, so
	// the next pass passes its record and the script can drop a stale alias.
	aliases := map[int]string{}
	// Each pass admits what it can; entries whose dedupe key changed between
	// our read and the script ("retry"), or whose record is an alias not
	// checked yet ("retry_alias"), go round again.
	for range dedupeRetries {
		if len(todo) == 0 {
			return results, nil
		}
		retry, err := s.admitPass(ctx, reqs, todo, results, aliases, opts)
		if err != nil {
			return nil, err
		}
		todo = retry
	}
	if len(todo) == 0 {
		return results, nil
	}
	return nil, fmt.Errorf("streams: admit: %w", ErrDedupeContention)
}

// admitJob returns the job id and input hash Admit should use for r.
func admitJob(r AdmitRequest) (jobID, hash string) {
	if r.Foreign {
		return "", "" // its record and dedupe key belong to another partition
	}
	if r.Poison == "" {
		return r.Sub.JobID, r.Sub.InputHash
	}
	jobID = r.Sub.JobID
	if jobID == "" {
		if id, ok := r.Entry.Values[FieldJobID].(string); ok && id != "" && checkToken(id, MaxJobIDLen) == "" {
			jobID = id
		}
	}
	// The hash lets a poisoned job release a dedupe key it may hold.
	if h, ok := r.Entry.Values[FieldInputHash].(string); ok && h != "" && checkToken(h, MaxInputHashLen) == "" {
		hash = h
	}
	return jobID, hash
}

func (s *Store) admitPass(ctx context.Context, reqs []AdmitRequest, todo []int, results []AdmitResult,
	aliases map[int]string, opts AdmitOpts) (retry []int, err error) {
	// Read the dedupe keys of the entries that may need one, in one round trip.
	seen := make(map[int]*redis.StringCmd)
	if opts.Dedupe {
		pipe := s.rdb.Pipeline()
		for _, i := range todo {
			if r := reqs[i]; r.Poison == "" && r.Sub.InputHash != "" {
				seen[i] = pipe.Get(ctx, s.keys.Dedupe(r.Sub.InputHash))
			}
		}
		if len(seen) > 0 {
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return nil, fmt.Errorf("streams: admit: read dedupe keys: %w", err)
			}
		}
	}

	keys := []string{s.keys.Submissions(), s.keys.Events(), s.keys.Dead()}
	addKey := func(k string) int {
		keys = append(keys, k)
		return len(keys) // Lua index, 1-based
	}
	args := []any{s.group, opts.Consumer, msArg(opts.Now), opts.MaxDeliveries, boolArg(opts.PersistInput),
		opts.DefaultTimeout.Milliseconds(), opts.ResultTTL.Milliseconds(), boolArg(opts.Dedupe), len(todo)}
	for _, i := range todo {
		r := reqs[i]
		jobID, hash := admitJob(r)
		kJob, kDedupe, kHolder, holder := 0, 0, 0, ""
		if jobID != "" {
			kJob = addKey(s.keys.Job(jobID))
		}
		if hash != "" {
			kDedupe = addKey(s.keys.Dedupe(hash))
		}
		if cmd, ok := seen[i]; ok {
			holder = cmd.Val() // "" on redis.Nil
			if holder != "" {
				kHolder = addKey(s.keys.Job(holder))
			}
		}
		input, timeout := "", ""
		if r.Poison == "" {
			if opts.PersistInput {
				input = string(r.Sub.Input)
			}
			if r.Sub.TimeoutMs > 0 {
				timeout = fmt.Sprint(r.Sub.TimeoutMs)
			}
		}
		kAlias := 0
		if a := aliases[i]; a != "" {
			kAlias = addKey(s.keys.Job(a))
		}
		held := ""
		if r.HeldEpoch > 0 {
			held = strconv.FormatInt(r.HeldEpoch, 10)
		}
		args = append(args, r.Entry.ID, jobID, r.Poison, kJob, kDedupe, kHolder, holder, input, hash, timeout,
			aliases[i], kAlias, held)
	}

	lo, hi := reqs[todo[0]].Entry.ID, reqs[todo[0]].Entry.ID
	for _, i := range todo[1:] {
		if id := reqs[i].Entry.ID; compareEntryIDs(id, lo) < 0 {
			lo = id
		} else if compareEntryIDs(id, hi) > 0 {
			hi = id
		}
	}
	args = append(args, lo, hi)

	v, err := s.runScript(ctx, "admit", scriptAdmit, keys, args...)
	if err != nil {
		return nil, err
	}
	replies, ok := v.([]any)
	if !ok || len(replies) != len(todo)+1 {
		return nil, fmt.Errorf("streams: admit: bad reply %T (%d entries sent)", v, len(todo))
	}
	redisNow, err := msReply(replies[0])
	if err != nil {
		return nil, fmt.Errorf("streams: admit: bad time in reply: %w", err)
	}
	for n, i := range todo {
		results[i].RedisNow = redisNow
		if arr, ok := replies[n+1].([]any); ok && len(arr) == 3 && arr[0] == "admitted" {
			vals, err := replyStrings("admit", arr[1])
			prev, ok := arr[2].(string)
			if err != nil || !ok {
				return nil, fmt.Errorf("streams: admit entry %s: bad admitted reply: %v", reqs[i].Entry.ID, err)
			}
			jobID, _ := admitJob(reqs[i])
			rec, err := admittedRecord(jobID, prev, vals)
			if err != nil {
				// Only this entry: failing the batch would leave its
				// batch-mates admitted (epoch bumped) but never run.
				results[i] = AdmitResult{Status: Unreadable, Err: err, RedisNow: redisNow}
				continue
			}
			if rec.Input == nil {
				rec.Input = reqs[i].Sub.Input
			}
			results[i].Status, results[i].Record = Admitted, rec
			continue
		}
		r, err := replyStrings("admit", replies[n+1])
		if err != nil || len(r) == 0 {
			return nil, fmt.Errorf("streams: admit entry %s: bad reply: %v", reqs[i].Entry.ID, err)
		}
		switch r[0] {
		case "duplicate":
			results[i].Status = Duplicate
		case "finished":
			results[i].Status = Finished
		case "poisoned":
			results[i].Status = Poisoned
		case "deduplicated":
			results[i].Status = Deduplicated
		case "lost":
			results[i].Status = Lost
		case "canceled":
			results[i].Status = Canceled
		case "error":
			results[i].Status, results[i].Err = Errored, fmt.Errorf("streams: admit entry %s: %s", reqs[i].Entry.ID, strings.Join(r[1:], " "))
		case "retry":
			retry = append(retry, i)
		case "retry_alias":
			if len(r) < 2 || r[1] == "" {
				return nil, fmt.Errorf("streams: admit entry %s: bad retry_alias reply %q", reqs[i].Entry.ID, r)
			}
			aliases[i] = r[1]
			retry = append(retry, i)
		default:
			return nil, fmt.Errorf("streams: admit entry %s: unexpected reply %q", reqs[i].Entry.ID, r[0])
		}
	}
	return retry, nil
}

// admitReplyFields are the record fields of admit.lua's admitted reply, by
// position (its READ_FIELDS, in the same order): the fields an admit
// decides on and those a worker resumes a job from, after the update. The
// script does not convert the rest of the record for every admit; Get
// reads it.
var admitReplyFields = []string{recState, recStep, recEpoch, recOwner, recEntry, recRunpodID, recRunpodStatus,
	recAttempts, recUncertainAt, recDeliveries, recInputHash, recInput, recCancel, recAliasOf, recDeadlineMs,
	recCreatedMs, recResult, recStub, "handoff", recChunks, recRun}

// admittedRecord builds an admitted job's Record from the script's
// positional values and the owner before the admit.
func admittedRecord(jobID, prevOwner string, vals []string) (Record, error) {
	if len(vals) != len(admitReplyFields) {
		return Record{}, fmt.Errorf("streams: job %q: admitted reply has %d values, want %d", jobID, len(vals), len(admitReplyFields))
	}
	m := make(map[string]string, len(vals)+1)
	for i, v := range vals {
		if v != "" {
			m[admitReplyFields[i]] = v
		}
	}
	m[recPrevOwner] = prevOwner
	return parseRecord(jobID, m)
}

// msArg is a script's time override: "" lets the script read Redis's
// clock (TIME), a non-zero t fixes the time (tests).
func msArg(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

// msReply parses a unix-ms time a script returned.
func msReply(v any) (time.Time, error) {
	var ms int64
	switch t := v.(type) {
	case string:
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return time.Time{}, err
		}
		ms = n
	case int64:
		ms = t
	default:
		return time.Time{}, fmt.Errorf("unexpected %T", v)
	}
	return time.UnixMilli(ms), nil
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
