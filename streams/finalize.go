package streams

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Finalize writes terminal outcomes, one script call per batch: for each,
// if the job is not terminal and the record names o.Owner at o.Epoch, set the state and
// result, append the terminal event, XACK and XDEL the submission, expire
// the record after ResultTTL and release the dedupe key of a job that did
// not complete. errs[i] is nil, ErrFenced, ErrTerminal or ErrNotFound (the
// last two still acknowledge and delete the entry, so it cannot loop). An
// outcome already written by an earlier try of the same write (its reply
// lost: the record holds the outcome's FinalizeID) is
// nil too, so a retry after an ambiguous timeout counts it as written; the
// same outcome written by another writer (another FinalizeID) is
// ErrTerminal.
// Outcomes without InputHash (and not InputHashKnown) cost one pipelined
// read of the records first.
func (s *Store) Finalize(ctx context.Context, outs []Outcome, opts FinalizeOpts) (errs []error, err error) {
	if len(outs) == 0 {
		return nil, nil
	}
	for _, o := range outs {
		if _, ok := terminalStates[o.State]; !ok {
			return nil, fmt.Errorf("streams: finalize %q: state %q is not terminal: %w", o.JobID, o.State, ErrInvalid)
		}
	}

	// Learn the input hashes the caller did not give, so the script gets the
	// dedupe keys in KEYS.
	hashes := make([]string, len(outs))
	cmds := make(map[int]*redis.StringCmd)
	pipe := s.rdb.Pipeline()
	for i, o := range outs {
		hashes[i] = o.InputHash
		if o.InputHash == "" && !o.InputHashKnown {
			cmds[i] = pipe.HGet(ctx, s.keys.Job(o.JobID), recInputHash)
		}
	}
	if len(cmds) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("streams: finalize: read input hashes: %w", err)
		}
		for i, c := range cmds {
			hashes[i] = c.Val()
		}
	}

	keys := []string{s.keys.Submissions(), s.keys.Events(), s.keys.Dead(), s.keys.GPU()}
	args := []any{s.group, scriptNow(opts.Now), opts.ResultTTL.Milliseconds(), len(outs)}
	for i, o := range outs {
		result, err := encodeResult(o.Output, o.Error, o.ErrorJSON)
		if err != nil {
			return nil, err
		}
		payload, err := EncodePayload(EventPayload{RunpodID: o.RunpodID, RunpodStatus: o.RunpodStatus,
			Output: o.Output, Error: o.Error, Reason: o.DeadLetter,
			DelayMs: o.DelayMs, ExecMs: o.ExecMs, RunpodWorkerID: o.RunpodWorkerID, FinalizedBy: o.Owner,
			ErrorJSON: o.ErrorJSON})
		if err != nil {
			return nil, err
		}
		fid := o.FinalizeID
		if fid == "" {
			fid = derivedFinalizeID(o, result)
		}
		keys = append(keys, s.keys.Job(o.JobID))
		kJob, kDedupe := len(keys), 0
		if hashes[i] != "" {
			keys = append(keys, s.keys.Dedupe(hashes[i]))
			kDedupe = len(keys)
		}
		args = append(args, o.JobID, o.Entry, strconv.FormatInt(o.Epoch, 10), o.State, result,
			o.RunpodID, o.RunpodStatus, payload, o.DeadLetter, kJob, kDedupe, o.Owner,
			durMsArg(o.DelayMs), durMsArg(o.ExecMs), o.RunpodWorkerID, o.Endpoint, fid)
	}
	run := s.runScript
	if s.dur.On() {
		// An outcome is reported written only once it is durable; a short
		// wait fails the batch (applied: the retry is answered "ours").
		run = s.runDurable
	}
	v, err := run(ctx, "finalize", scriptFinalize, keys, args...)
	if err != nil {
		return nil, err
	}
	codes, err := replyStrings("finalize", v)
	if err != nil || len(codes) != len(outs) {
		return nil, fmt.Errorf("streams: finalize: bad reply %v: %w", v, err)
	}
	errs = make([]error, len(outs))
	for i, c := range codes {
		if c == "ours" {
			continue
		}
		if e := codeErr(c); e != nil {
			errs[i] = fmt.Errorf("streams: finalize %q at epoch %d: %w", outs[i].JobID, outs[i].Epoch, e)
		}
	}
	return errs, nil
}

// derivedFinalizeID names a write by what it writes and under which fence:
// the same outcome sent again by the same caller gets the same id.
func derivedFinalizeID(o Outcome, result []byte) string {
	h := sha256.New()
	for _, p := range []string{o.Owner, strconv.FormatInt(o.Epoch, 10), o.State, string(result)} {
		_, _ = h.Write([]byte(strconv.Itoa(len(p)) + ":" + p))
	}
	return "d:" + hex.EncodeToString(h.Sum(nil)[:12])
}

// NewFinalizeID returns a random Outcome.FinalizeID.
func NewFinalizeID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// durMsArg is a millisecond figure for a script: "" when unknown (0 or less).
func durMsArg(ms int64) string {
	if ms <= 0 {
		return ""
	}
	return strconv.FormatInt(ms, 10)
}
