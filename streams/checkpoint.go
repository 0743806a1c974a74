package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
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
//
// Concurrent calls on one Store are written together: a call that finds
// one in flight waits and goes in the next script call with every other
// call that arrived meanwhile (group commit: no timer, so a lone call costs
// what it did alone). Each checkpoint is still checked and applied on its
// own. A call whose ctx ends before its batch is sent writes nothing; one
// whose ctx ends while its batch is in flight returns ctx's error and may
// have applied, as any write whose reply is lost.
func (s *Store) Checkpoint(ctx context.Context, cp Checkpoint, now time.Time) error {
	req, err := s.checkpointReq(ctx, cp, now)
	if err != nil {
		return err
	}
	return s.cps.do(s, req)
}

// CheckpointMany writes cps in one checkpoint.lua call, as a group commit
// of that many concurrent Checkpoint calls would; errs[i] answers cps[i] as
// Checkpoint would. For callers that batch themselves: the bench's
// per-script profile (internal/bench.ProfileScripts) sends fixed batches so
// its instruction counts repeat.
func (s *Store) CheckpointMany(ctx context.Context, cps []Checkpoint, now time.Time) []error {
	batch := make([]*cpReq, 0, len(cps))
	for _, cp := range cps {
		req, err := s.checkpointReq(ctx, cp, now)
		if err != nil {
			errs := make([]error, len(cps))
			for i := range errs {
				errs[i] = err
			}
			return errs
		}
		batch = append(batch, req)
	}
	return s.writeCheckpoints(batch)
}

// checkpointReq validates cp and builds its checkpoint.lua arguments.
func (s *Store) checkpointReq(ctx context.Context, cp Checkpoint, now time.Time) (*cpReq, error) {
	if _, ok := terminalStates[cp.State]; ok {
		return nil, fmt.Errorf("streams: checkpoint %q: state %s is terminal, use Finalize: %w", cp.JobID, cp.State, ErrInvalid)
	}
	var result []byte
	if cp.Output != nil {
		var err error
		if result, err = EncodeResult(cp.Output, ""); err != nil {
			return nil, err
		}
	}
	etype, payload := "", []byte(nil)
	if cp.Event != nil {
		var err error
		etype = cp.Event.Type
		if payload, err = EncodePayload(cp.Event.Payload); err != nil {
			return nil, err
		}
	}
	return &cpReq{ctx: ctx, cp: cp, durable: cp.Durable && s.dur.On(), wake: make(chan struct{}, 1),
		args: []any{cp.JobID, strconv.FormatInt(cp.Epoch, 10), scriptNow(now), cp.Step, cp.State,
			cp.RunpodID, cp.RunpodStatus, attemptsArg(cp.Attempts), result, etype, payload, cp.Owner,
			attemptsArg(cp.UncertainAttempt)}}, nil
}

// checkpointBatch coalesces concurrent Checkpoint calls. At most one batch
// is in flight per Store; the caller that finds none in flight leads: it
// sends everything queued (its own call included), then hands the lead to
// the first call queued meanwhile, so no caller waits for more than the
// batch before its own.
type checkpointBatch struct {
	mu      sync.Mutex
	queue   []*cpReq
	leading bool
}

// maxCheckpointBatch bounds one script call (13 arguments per checkpoint).
const maxCheckpointBatch = 256

type cpReq struct {
	ctx     context.Context
	cp      Checkpoint
	args    []any
	durable bool
	wake    chan struct{} // signalled once: the result is in, or lead
	lead    bool          // guarded by mu: woken to send the next batch
	done    bool          // guarded by mu: err is final
	sent    bool          // guarded by mu: taken into a batch
	err     error
}

func (b *checkpointBatch) do(s *Store, req *cpReq) error {
	b.mu.Lock()
	b.queue = append(b.queue, req)
	if !b.leading {
		b.leading, req.lead = true, true
	}
	b.mu.Unlock()
	for {
		b.mu.Lock()
		lead, done, err := req.lead, req.done, req.err
		b.mu.Unlock()
		if done {
			return err
		}
		if lead {
			s.flushCheckpoints(b)
			continue
		}
		select {
		case <-req.wake:
		case <-req.ctx.Done():
			b.mu.Lock()
			if req.done || req.lead {
				b.mu.Unlock()
				continue
			}
			if !req.sent {
				// Not sent: leave the queue, nothing written.
				b.queue = slices.DeleteFunc(b.queue, func(r *cpReq) bool { return r == req })
			} // else in flight: its outcome is unknown to us.
			b.mu.Unlock()
			return fmt.Errorf("streams: checkpoint %q: %w", req.cp.JobID, context.Cause(req.ctx))
		}
	}
}

// flushCheckpoints sends one batch (the leader's own call is in it, as it
// was queued before it led), answers its calls, and passes the lead to the
// first call still queued, or ends the lead.
func (s *Store) flushCheckpoints(b *checkpointBatch) {
	b.mu.Lock()
	var batch []*cpReq
	rest := b.queue[:0]
	for _, r := range b.queue {
		switch {
		case r.ctx.Err() != nil:
			// Its caller is leaving (or left, or is this leader): never sent.
			r.done, r.err = true, fmt.Errorf("streams: checkpoint %q: %w", r.cp.JobID, context.Cause(r.ctx))
			signal(r.wake)
		case len(batch) < maxCheckpointBatch:
			r.sent = true
			batch = append(batch, r)
		default:
			rest = append(rest, r)
		}
	}
	b.queue = rest
	b.mu.Unlock()

	errs := s.writeCheckpoints(batch)

	b.mu.Lock()
	for i, r := range batch {
		r.done, r.err, r.lead = true, errs[i], false
		signal(r.wake)
	}
	if len(b.queue) > 0 {
		next := b.queue[0]
		next.lead = true
		signal(next.wake)
	} else {
		b.leading = false
	}
	b.mu.Unlock()
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// writeCheckpoints runs checkpoint.lua once for batch and returns each
// call's error. The call's ctx is no caller's own (a caller leaving must not
// fail its batch-mates): it ends at the latest deadline among them, if all
// have one.
func (s *Store) writeCheckpoints(batch []*cpReq) []error {
	errs := make([]error, len(batch))
	if len(batch) == 0 {
		return errs
	}
	ctx := context.WithoutCancel(batch[0].ctx)
	var latest time.Time
	for _, r := range batch {
		d, ok := r.ctx.Deadline()
		if !ok {
			latest = time.Time{}
			break
		}
		if d.After(latest) {
			latest = d
		}
	}
	durable := slices.ContainsFunc(batch, func(r *cpReq) bool { return r.durable })
	if !latest.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, latest)
		defer cancel()
	}
	keys := make([]string, 1, len(batch)+1)
	keys[0] = s.keys.Events()
	args := make([]any, 1, 1+13*len(batch))
	args[0] = len(batch)
	for _, r := range batch {
		keys = append(keys, s.keys.Job(r.cp.JobID))
		args = append(args, r.args...)
	}
	op := "checkpoint " + batch[0].cp.JobID
	if len(batch) > 1 {
		op = fmt.Sprintf("checkpoint of %d jobs", len(batch))
	}
	run := s.runScript
	if durable {
		run = s.runDurable
	}
	v, err := run(ctx, op, scriptCheckpoint, keys, args...)
	if err != nil && (v == nil || !errors.Is(err, ErrNotDurable)) {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	replies, ok := v.([]any)
	if !ok || len(replies) != len(batch) {
		for i := range errs {
			errs[i] = fmt.Errorf("streams: %s: bad reply %T", op, v)
		}
		return errs
	}
	for i, r := range batch {
		cp := r.cp
		switch c := replies[i].(type) {
		case string:
			if cerr := codeErr(c); cerr != nil {
				errs[i] = fmt.Errorf("streams: checkpoint %q at epoch %d: %w", cp.JobID, cp.Epoch, cerr)
				continue
			}
			errs[i] = err // nil, or applied but ErrNotDurable
		default:
			parts, _ := replyStrings(op, c)
			errs[i] = fmt.Errorf("streams: checkpoint %q at epoch %d: %s", cp.JobID, cp.Epoch, strings.Join(parts, " "))
		}
	}
	return errs
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
