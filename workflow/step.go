package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"
)

// Job is the in-memory state of one job's workflow: what the record says
// (state, step, Runpod id, attempts, cancel flag, deadline) plus the
// scheduling counters that need not survive a takeover (a new owner restarts
// them, which only makes it poll a little sooner). It is a value: Next and
// Apply never mutate their argument.
//
// It is kept small on purpose (no input, no output bytes: only a hash of the
// last progress output), because a worker holds up to 100,000 of them.
type Job struct {
	// ID is the caller's clientJobId.
	ID string
	// State is the job's current (non-terminal) state.
	State State
	// Step is where the workflow stands.
	Step Step
	// RunpodID is the Runpod job id once /run returned it ("" before).
	RunpodID string
	// RunpodStatus is the last status Runpod reported.
	RunpodStatus RunpodStatus
	// Attempts counts /run intents recorded (BeginSubmit), across owners.
	Attempts int
	// UncertainAttempt is the latest /run attempt whose unknown outcome
	// (it may have created a Runpod job whose id nobody learned) is
	// recorded on the job (event submit_uncertain); 0 if none.
	UncertainAttempt int
	// CancelRequested mirrors the record's cancel flag.
	CancelRequested bool
	// Deadline is when the job ends TIMED_OUT; zero means none.
	Deadline time.Time

	// NextAt is the earliest time of the next action (a poll after its
	// backoff, a retry after its backoff); zero means now.
	NextAt time.Time
	// Polls counts /status polls since the last status change; it drives
	// the poll backoff.
	Polls int
	// RunningSince is when a poll first saw the job IN_PROGRESS (zero
	// before, after a re-queue, or after a takeover); it tells the poll
	// scheduler how near the job's expected end is.
	RunningSince time.Time
	// Retries counts consecutive transient failures of the current action;
	// it drives the retry backoff and resets on success.
	Retries int
	// CancelAttempts counts /cancel calls made for this job.
	CancelAttempts int
	// Stopping is the terminal state a /cancel under way is for (CANCELED
	// or TIMED_OUT), so a retried /cancel keeps its reason; "" otherwise.
	Stopping State
	// CancelSent: a /cancel was sent (whatever it answered) and /status has
	// not been read since. /cancel's answer carries no output, so the
	// outcome is only ever built from the /status that follows it.
	CancelSent bool
	// CancelErr is the last /cancel or confirming /status error, noted in
	// the outcome if the cancel gives up.
	CancelErr string
	// OutputSum is SumOutput of the last recorded progress output.
	OutputSum uint64
	// Streaming: read the job's /stream chunks while Runpod runs it
	// (ActStream) instead of only polling /status. Chunks counts the chunks
	// recorded (the record's `chunks`): the index the next one gets.
	Streaming bool
	Chunks    int
	// StreamDone: /stream reported a terminal status (its last chunks
	// recorded); StreamOff: /stream refused the job (a permanent error).
	// Either way /status decides the outcome from then on.
	StreamDone, StreamOff bool
	// Outcome is the terminal outcome once decided. From then on Next
	// always returns Finalize with it and Apply changes nothing.
	Outcome *Outcome
}

// Outcome is a job's terminal result, to be written once by the worker.
type Outcome struct {
	State        State           // COMPLETED, FAILED, TIMED_OUT or CANCELED
	Output       json.RawMessage // handler output (COMPLETED; sometimes FAILED)
	Error        string          // reason for the other states; never a secret
	RunpodStatus RunpodStatus    // Runpod's last status, if it was asked
	// DelayMs and ExecMs are Runpod's delayTime and executionTime (ms) and
	// RunpodWorkerID its workerId, from the answer that decided the
	// outcome; 0 or "" when Runpod did not report them.
	DelayMs, ExecMs int64
	RunpodWorkerID  string
	// ErrorJSON is Runpod's error as a JSON value (RunpodJob.ErrorJSON),
	// beside the readable Error; nil when Runpod sent none or plain text.
	ErrorJSON json.RawMessage
	// OutputFromChunks: a streaming job whose final output from Runpod is
	// empty (no aggregate: the Python worker reports []) ends with its
	// recorded chunks as the output; the worker reads them from the record
	// when it writes the outcome.
	OutputFromChunks bool
}

// withTimings returns o with rj's delayTime, executionTime and workerId.
func (o Outcome) withTimings(rj RunpodJob) Outcome {
	o.DelayMs, o.ExecMs, o.RunpodWorkerID = rj.DelayTime, rj.ExecutionTime, rj.WorkerID
	return o
}

// ActionKind is what the worker must do next for a job.
type ActionKind int

const (
	// ActNone: nothing to do; the job is already terminal or done. Drop it.
	ActNone ActionKind = iota
	// ActSubmit: call BeginSubmit, checkpoint step SUBMITTING with one more
	// attempt, then call Runpod.Run and Apply its result.
	ActSubmit
	// ActPoll: call Runpod.Status(RunpodID) and Apply its result.
	ActPoll
	// ActCancel: call Runpod.Cancel(RunpodID) and Apply its result.
	ActCancel
	// ActFinalize: write Action.Outcome (streams.Finalize). Nothing to Apply.
	ActFinalize
	// ActStream (below) reads /stream for a streaming job.

	// ActRecordUncertain: /run attempt Action.Attempt may have created a
	// Runpod job whose id was never learned (an uncertain answer, or a
	// takeover inside the /run window). Record it on the job (event
	// submit_uncertain, counted once per attempt), then RecordedUncertain.
	// Nothing to Apply.
	ActRecordUncertain
	// ActStream: call the Streamer's StreamChunks(RunpodID) and Apply its
	// result (Result.Stream); record Effect.Chunks (streams.AppendChunks).
	ActStream
)

var actionNames = [...]string{"none", "submit", "poll", "cancel", "finalize", "record_uncertain", "stream"}

func (k ActionKind) String() string {
	if k >= 0 && int(k) < len(actionNames) {
		return actionNames[k]
	}
	return fmt.Sprintf("action(%d)", int(k))
}

// Action is the decision of Next.
type Action struct {
	Kind ActionKind
	// At is when the action is due; the worker waits until then and asks
	// Next again (a cancel or the deadline may have changed the answer).
	At time.Time
	// Reason is, for ActCancel, the terminal state the cancel is for.
	Reason State
	// Outcome is, for ActFinalize, what to write.
	Outcome Outcome
	// Attempt is, for ActRecordUncertain, the /run attempt to record.
	Attempt int
}

// Result is the outcome of an activity (ActSubmit, ActPoll, ActCancel).
type Result struct {
	Job RunpodJob
	// Stream is the answer of an ActStream.
	Stream RunpodStream
	Err    error
}

// EventKind is the non-terminal event an Effect asks the worker to append.
type EventKind int

const (
	EventNone     EventKind = iota // no event
	EventQueued                    // Runpod accepted the job: its id is known
	EventProgress                  // status or progress output changed
)

// Effect tells the worker what to persist after Apply. When Checkpoint is
// true the worker writes the returned Job's State, Step, RunpodID and
// RunpodStatus (and Output if non-nil) with the event, fenced by its epoch,
// before doing anything else with the job.
type Effect struct {
	Checkpoint bool
	Event      EventKind
	// Output is the new progress output to record; nil means unchanged.
	Output json.RawMessage
	// Chunks are new /stream chunks to record, the first at index
	// ChunkBase (streams.AppendChunks, one progress event each).
	Chunks    []json.RawMessage
	ChunkBase int
}

// Reasons written as the error of non-COMPLETED outcomes decided here.
const (
	ReasonSubmitUncertain  = "submit outcome uncertain"
	ReasonRunpodJobUnknown = "runpod job unknown or expired"
	ReasonCanceledUnsent   = "canceled before submission to runpod"
	ReasonCanceled         = "canceled by request"
	ReasonDeadline         = "job deadline exceeded"
	ReasonDeadlineUnsent   = "job deadline exceeded before submission to runpod"
	// A job found at SUBMITTING without a Runpod id (a takeover inside the
	// /run window) may exist on Runpod under an id nobody learned: never
	// claim it was not sent.
	ReasonCanceledUncertain = "canceled; a /run may have been sent before the takeover (" + ReasonSubmitUncertain + ")"
	ReasonDeadlineUncertain = "job deadline exceeded; a /run may have been sent before the takeover (" + ReasonSubmitUncertain + ")"
	ReasonRunpodFailed      = "runpod job failed"
	ReasonRunpodTimedOut    = "runpod job timed out"
	ReasonRunpodCanceled    = "runpod job was canceled on runpod"
	ReasonRunpodNoID        = "runpod /run returned no job id"
	reasonCancelFailedInfix = "; runpod /cancel failed: "
	reasonCancelIgnored     = "; runpod still reports %s after %d /cancel calls"
)

// SumOutput is the hash Job.OutputSum keeps of a progress output (FNV-1a),
// so a Job can notice a new output without holding its bytes.
func SumOutput(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write(b)
	return h.Sum64()
}

// RecordedUncertain returns j once the worker has recorded that /run
// attempt `attempt` has an unknown outcome (ActRecordUncertain).
func RecordedUncertain(j Job, attempt int) Job {
	j.UncertainAttempt = max(j.UncertainAttempt, attempt)
	return j
}

// BeginSubmit returns j as it must be checkpointed before /run: step
// SUBMITTING, one more attempt. From here until the Runpod id is recorded, a
// crash leaves the outcome of /run uncertain.
func BeginSubmit(j Job) Job {
	j.Step = StepSubmitting
	j.Attempts++
	return j
}

// Next decides what to do for j at time now. The rules, in order:
//
//  1. an outcome is decided → Finalize it; a terminal state or StepDone →
//     None; a /run attempt with an unknown outcome not yet recorded (step
//     SUBMITTING without a Runpod id: an uncertain answer, or a takeover
//     inside the /run window) → RecordUncertain, before anything else, so
//     every Runpod job that may run untracked is visible;
//  2. a /cancel is under way (Stopping) → Poll at once after a /cancel was
//     sent (what Runpod really finished as decides the outcome, never
//     /cancel's answer), else Cancel again at NextAt;
//  3. the deadline passed → Cancel (reason TIMED_OUT) when the job is on
//     Runpod, else Finalize TIMED_OUT;
//  4. a cancel was requested → Cancel (reason CANCELED) when the job is on
//     Runpod, else Finalize CANCELED without sending it (a job taken over at
//     SUBMITTING may exist on Runpod under an unknown id: nothing can cancel
//     it, so it ends CANCELED with ReasonCanceledUncertain, never "before
//     submission"; likewise a deadline, ReasonDeadlineUncertain);
//  5. a Runpod id is known → Poll at NextAt;
//  6. SUBMIT (or no step yet) → Submit at NextAt;
//  7. SUBMITTING without a Runpod id (a takeover: the previous /run's outcome
//     is unknown) → Submit again under SubmitUncertainResubmit, else
//     Finalize FAILED "submit outcome uncertain".
//
// Waiting actions are due no later than the deadline, so a deadline is acted
// on at once rather than at the next poll. p must have its defaults.
func Next(j Job, now time.Time, p Policy) Action {
	if j.Outcome != nil {
		return Action{Kind: ActFinalize, At: now, Outcome: *j.Outcome}
	}
	if j.State.Terminal() || j.Step == StepDone {
		return Action{Kind: ActNone, At: now}
	}
	if j.RunpodID == "" && (j.Step == StepSubmitting || j.Step == StepPoll) && j.UncertainAttempt < j.Attempts {
		return Action{Kind: ActRecordUncertain, At: now, Attempt: j.Attempts}
	}
	if j.Stopping != "" && j.RunpodID != "" {
		if j.CancelSent {
			return Action{Kind: ActPoll, At: j.due(now), Reason: j.Stopping}
		}
		return Action{Kind: ActCancel, At: j.due(now), Reason: j.Stopping}
	}
	if j.deadlinePassed(now) {
		if j.RunpodID != "" {
			return Action{Kind: ActCancel, At: now, Reason: StateTimedOut}
		}
		return finalize(now, Outcome{State: StateTimedOut, Error: j.unsentReason(ReasonDeadlineUnsent, ReasonDeadlineUncertain)})
	}
	if j.CancelRequested {
		if j.RunpodID != "" {
			return Action{Kind: ActCancel, At: now, Reason: StateCanceled}
		}
		return finalize(now, Outcome{State: StateCanceled, Error: j.unsentReason(ReasonCanceledUnsent, ReasonCanceledUncertain)})
	}
	if j.RunpodID != "" {
		if j.streams() {
			return Action{Kind: ActStream, At: j.due(now)}
		}
		return Action{Kind: ActPoll, At: j.due(now)}
	}
	switch j.Step {
	case StepSubmit, "":
		return Action{Kind: ActSubmit, At: j.due(now)}
	case StepSubmitting, StepPoll:
		// StepPoll without an id cannot be written by the worker (the id and
		// the step are checkpointed together); treat it like SUBMITTING.
		if p.SubmitUncertain == SubmitUncertainFail {
			return finalize(now, Outcome{State: StateFailed, Error: fmt.Sprintf(
				"%s: a previous /run (attempt %d) may have created a Runpod job whose id was not recorded",
				ReasonSubmitUncertain, j.Attempts)})
		}
		return Action{Kind: ActSubmit, At: j.due(now)}
	}
	return finalize(now, Outcome{State: StateFailed, Error: fmt.Sprintf("corrupt job record: unknown step %q", j.Step)})
}

// unsentReason is the reason for ending j, which has no Runpod id, without
// sending it: unsent when no /run intent is recorded, uncertain when one is
// (step SUBMITTING: a /run may have created a Runpod job).
func (j Job) unsentReason(unsent, uncertain string) string {
	if j.Step == StepSubmitting || j.Step == StepPoll {
		return uncertain
	}
	return unsent
}

// streams reports whether j's next read is /stream: streaming is on, and
// Runpod runs the job (chunks come while it runs) or has just finished it
// (the chunks not handed out yet are drained before /status decides).
func (j Job) streams() bool {
	return j.Streaming && !j.StreamOff && !j.StreamDone &&
		(j.RunpodStatus == RunpodInProgress || j.RunpodStatus.Terminal())
}

func finalize(now time.Time, o Outcome) Action {
	return Action{Kind: ActFinalize, At: now, Outcome: o}
}

// due is NextAt, no earlier than now and no later than the deadline.
func (j Job) due(now time.Time) time.Time {
	at := j.NextAt
	if at.Before(now) {
		at = now
	}
	if !j.Deadline.IsZero() && j.Deadline.Before(at) && j.Stopping == "" {
		at = j.Deadline
	}
	return at
}

func (j Job) deadlinePassed(now time.Time) bool {
	return !j.Deadline.IsZero() && !now.Before(j.Deadline)
}

// Apply feeds the result of action a (ActSubmit, ActPoll or ActCancel) into
// j and returns the new job and what to persist. rnd supplies the jitter
// (nil: none). Errors are classified as follows:
//
//   - /run: ErrSubmitUncertain → the job stays at SUBMITTING (a Runpod job
//     may exist): Next records the uncertain attempt, then applies the
//     SubmitUncertain policy (resubmit after a backoff, or FAILED);
//     transient → retry with backoff; any other error → FAILED with its text
//     (activity errors never carry secrets);
//   - /status: ErrRunpodJobNotFound → FAILED "runpod job unknown or
//     expired"; any other error → retry with backoff, because the job exists
//     on Runpod and only the deadline may give up on it;
//   - /cancel: ErrRunpodJobNotFound → the cancel's outcome (nothing left to
//     cancel); any other answer, success or error (Runpod may refuse to
//     cancel a job that has just finished), is confirmed by a /status
//     read (an ActPoll with the cancel's Reason): a terminal status is the
//     outcome (CANCELLED → the cancel's reason; COMPLETED, FAILED or
//     TIMED_OUT as Runpod finished it, with its output or error); a live
//     one, or a failed read, sends /cancel again after a backoff, and the
//     job is never finalized until Runpod confirms a terminal state.
//
// Once an outcome is decided Apply returns j unchanged.
func Apply(j Job, a Action, r Result, now time.Time, p Policy, rnd Rand) (Job, Effect) {
	if j.Outcome != nil || j.State.Terminal() {
		return j, Effect{}
	}
	if IsWorkerFault(r.Err) {
		// Not the job's fault: keep it as it is (a /run refused this way
		// created nothing) and try again later, or elsewhere.
		if a.Kind == ActSubmit && j.RunpodID == "" {
			j.Step = StepSubmit
		}
		return j.retry(r.Err, now, p, rnd), Effect{}
	}
	switch a.Kind {
	case ActSubmit:
		return applySubmit(j, r, now, p, rnd)
	case ActPoll:
		if j.Stopping != "" {
			return applyConfirm(j, r, now, p, rnd)
		}
		return applyPoll(j, r, now, p, rnd)
	case ActCancel:
		return applyCancel(j, a.Reason, r, now, p, rnd)
	case ActStream:
		return applyStream(j, r, now, p, rnd)
	}
	return j, Effect{}
}

// applyStream records a /stream answer: new chunks (to record, in order),
// the status. A terminal status ends streaming: /status then decides the
// outcome. A permanent error (a job or endpoint /stream does not serve)
// turns streaming off for the job; a transient one retries with backoff.
func applyStream(j Job, r Result, now time.Time, p Policy, rnd Rand) (Job, Effect) {
	if r.Err != nil {
		if IsTransient(r.Err) {
			return j.retry(r.Err, now, p, rnd), Effect{}
		}
		j.StreamOff = true
		j.NextAt = now
		return j, Effect{}
	}
	j.Retries = 0
	var eff Effect
	if n := len(r.Stream.Outputs); n > 0 {
		eff.Chunks, eff.ChunkBase = r.Stream.Outputs, j.Chunks
		j.Chunks += n
	}
	if r.Stream.Status.Terminal() {
		j.StreamDone = true
		j.NextAt = now
		return j, eff
	}
	j2, e2 := j.observe(RunpodJob{Status: r.Stream.Status}, now)
	eff.Checkpoint, eff.Event = e2.Checkpoint, e2.Event
	if len(eff.Chunks) > 0 {
		// More may be buffered: ask again at once (Runpod holds an empty
		// /stream for its wait, which paces the loop).
		j2.Polls = 0
		j2.NextAt = now
	} else {
		j2.NextAt = now.Add(p.nextPoll(j2, now, rnd))
	}
	return j2, eff
}

// emptyOutput reports a final output that carries nothing: absent, null,
// or the [] a generator handler reports without return_aggregate_stream.
func emptyOutput(b json.RawMessage) bool {
	s := strings.TrimSpace(string(b))
	return s == "" || s == "null" || strings.ReplaceAll(s, " ", "") == "[]"
}

// terminalFor is terminalOutcome for j: a streaming job whose final output
// is empty ends with its recorded chunks.
func (j Job) terminalFor(rj RunpodJob) Outcome {
	o := terminalOutcome(rj)
	if j.Streaming && j.Chunks > 0 && o.State == StateCompleted && emptyOutput(o.Output) {
		o.OutputFromChunks = true
	}
	return o
}

func (j Job) decide(o Outcome) Job {
	j.Outcome = &o
	return j
}

// Decide returns j with its outcome fixed to a.Outcome when a is an
// ActFinalize (else j unchanged). The worker calls it as soon as Next answers
// ActFinalize, so the decision stays the same while the write is batched or
// retried after a Redis error, whatever cancel or deadline arrives meanwhile,
// and any late activity result is ignored by Apply.
func Decide(j Job, a Action) Job {
	if a.Kind != ActFinalize || j.Outcome != nil {
		return j
	}
	return j.decide(a.Outcome)
}

func (j Job) retry(err error, now time.Time, p Policy, rnd Rand) Job {
	j.NextAt = now.Add(RetryDelay(p.Retry, j.Retries, RetryAfterHint(err), rnd))
	j.Retries++
	return j
}

func applySubmit(j Job, r Result, now time.Time, p Policy, rnd Rand) (Job, Effect) {
	if j.RunpodID != "" {
		return j, Effect{} // a stale result: the id is already recorded
	}
	if r.Err != nil {
		// Whatever happens next starts from SUBMIT in memory; the record
		// keeps SUBMITTING until the next attempt, which is the safe reading
		// for a takeover in between.
		j.Step = StepSubmit
		switch {
		case errors.Is(r.Err, ErrSubmitUncertain):
			// As after a takeover inside the /run window: the record says
			// SUBMITTING and that is the truth.
			j.Step = StepSubmitting
			return j.retry(r.Err, now, p, rnd), Effect{}
		case IsTransient(r.Err):
			return j.retry(r.Err, now, p, rnd), Effect{}
		}
		return j.decide(Outcome{State: StateFailed, Error: r.Err.Error()}), Effect{}
	}
	if r.Job.ID == "" {
		j.Step = StepSubmit
		return j.decide(Outcome{State: StateFailed, Error: ReasonRunpodNoID}), Effect{}
	}
	j.RunpodID = r.Job.ID
	j.Step = StepPoll
	j.State = StateQueued
	j.RunpodStatus = r.Job.Status
	if j.RunpodStatus == "" {
		j.RunpodStatus = RunpodInQueue
	}
	j.Retries, j.Polls = 0, 0
	if j.Streaming && !j.StreamOff {
		// Its chunks are wanted while it runs: look for the start as usual,
		// not at the usual end.
		j.NextAt = now.Add(p.nextPoll(j, now, rnd))
	} else {
		j.NextAt = now.Add(p.firstPoll(rnd))
	}
	return j, Effect{Checkpoint: true, Event: EventQueued}
}

// terminalOutcome maps a terminal Runpod job to our outcome.
func terminalOutcome(rj RunpodJob) Outcome {
	st, _ := rj.Status.State()
	o := Outcome{State: st, RunpodStatus: rj.Status, Output: rj.Output, Error: rj.Error, ErrorJSON: rj.ErrorJSON}.withTimings(rj)
	if o.Error == "" {
		switch rj.Status {
		case RunpodFailed:
			o.Error = ReasonRunpodFailed
		case RunpodTimedOut:
			o.Error = ReasonRunpodTimedOut
		case RunpodCancelled:
			o.Error = ReasonRunpodCanceled
		}
	}
	return o
}

func applyPoll(j Job, r Result, now time.Time, p Policy, rnd Rand) (Job, Effect) {
	if r.Err != nil {
		if errors.Is(r.Err, ErrRunpodJobNotFound) {
			return j.decide(Outcome{State: StateFailed, Error: ReasonRunpodJobUnknown, RunpodStatus: j.RunpodStatus}), Effect{}
		}
		return j.retry(r.Err, now, p, rnd), Effect{}
	}
	j.Retries = 0
	if r.Job.Status == RunpodCancelled && (j.CancelRequested || j.deadlinePassed(now)) {
		// Our own /cancel, sent before a takeover (or whose confirming read
		// was lost): the outcome is the one that asked for it, TIMED_OUT
		// unless the cancel flag is set.
		reason := StateTimedOut
		if j.CancelRequested {
			reason = StateCanceled
		}
		o := j.stopOutcome(reason).withTimings(r.Job)
		o.RunpodStatus = r.Job.Status
		return j.decide(o), Effect{}
	}
	if r.Job.Status.Terminal() {
		if j.Streaming && !j.StreamOff && !j.StreamDone {
			// Finished between two reads: drain the chunks not handed out
			// yet with /stream first; /status decides after it.
			j.RunpodStatus = r.Job.Status
			j.NextAt = now
			return j, Effect{}
		}
		return j.decide(j.terminalFor(r.Job)), Effect{}
	}
	j, eff := j.observe(r.Job, now)
	j.NextAt = now.Add(p.nextPoll(j, now, rnd))
	return j, eff
}

// observe records a live Runpod job's status and progress output, and says
// what to checkpoint.
func (j Job) observe(rj RunpodJob, now time.Time) (Job, Effect) {
	changed := false
	if st, ok := rj.Status.State(); ok && st != j.State && CanTransition(j.State, st) {
		j.State = st
		changed = true
		j.RunningSince = time.Time{}
		if st == StateInProgress {
			j.RunningSince = now
		}
	}
	if rj.Status != "" && rj.Status != j.RunpodStatus {
		// Unknown statuses are recorded verbatim but keep the state.
		j.RunpodStatus = rj.Status
		changed = true
	}
	var eff Effect
	if sum := SumOutput(rj.Output); sum != 0 && sum != j.OutputSum {
		j.OutputSum = sum
		eff.Output = rj.Output
		changed = true
	}
	if changed {
		j.Polls = 0
		eff.Checkpoint, eff.Event = true, EventProgress
	} else {
		j.Polls++
	}
	return j, eff
}

// stopOutcome is the outcome a cancel for reason ends with when Runpod did
// not finish the job otherwise.
func (j Job) stopOutcome(reason State) Outcome {
	if reason == StateTimedOut {
		return Outcome{State: StateTimedOut, Error: ReasonDeadline, RunpodStatus: j.RunpodStatus}
	}
	return Outcome{State: StateCanceled, Error: ReasonCanceled, RunpodStatus: j.RunpodStatus}
}

func applyCancel(j Job, reason State, r Result, now time.Time, p Policy, rnd Rand) (Job, Effect) {
	if reason != StateTimedOut {
		reason = StateCanceled
	}
	j.CancelAttempts++
	if errors.Is(r.Err, ErrRunpodJobNotFound) {
		return j.decide(j.stopOutcome(reason)), Effect{}
	}
	// Whatever /cancel answered (CANCELLED, the status of a job that had
	// already finished, 400 for such a job, a transient error), only
	// /status tells what Runpod really did, with the output: read it now.
	j.Stopping, j.CancelSent = reason, true
	j.CancelErr = ""
	if r.Err != nil {
		j.CancelErr = reasonCancelFailedInfix + r.Err.Error()
	}
	j.NextAt = now
	return j, Effect{}
}

// applyConfirm takes the /status read after a /cancel: what Runpod really
// finished as wins; a job still live gets /cancel again after a backoff.
func applyConfirm(j Job, r Result, now time.Time, p Policy, rnd Rand) (Job, Effect) {
	reason := j.Stopping
	j.CancelSent = false
	var eff Effect
	switch {
	case errors.Is(r.Err, ErrRunpodJobNotFound):
		// Gone on Runpod after our /cancel: nothing runs any more.
		return j.decide(j.stopOutcome(reason)), Effect{}
	case r.Err != nil:
		j.CancelErr = "; runpod /status after /cancel failed: " + r.Err.Error()
	case r.Job.Status == RunpodCancelled:
		want := j.stopOutcome(reason).withTimings(r.Job)
		want.RunpodStatus = r.Job.Status
		return j.decide(want), Effect{}
	case r.Job.Status.Terminal():
		return j.decide(j.terminalFor(r.Job)), Effect{}
	default:
		j, eff = j.observe(r.Job, now)
		j.CancelErr = fmt.Sprintf(reasonCancelIgnored, j.RunpodStatus, j.CancelAttempts)
	}
	// Not confirmed (the read failed, or Runpod still runs the job): never
	// finalize on it, or a job could end CANCELED while its GPU job runs on
	// or had COMPLETED with an output nobody reads. /cancel and /status are
	// retried with backoff until Runpod reports a terminal state (its own
	// execution timeout and TTL end every job); past MaxCancelAttempts at
	// the backoff's cap.
	j.NextAt = now.Add(RetryDelay(p.Retry, min(j.CancelAttempts, p.MaxCancelAttempts)-1, RetryAfterHint(r.Err), rnd))
	return j, eff
}
