package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Step hook points (Config.StepHook).
const (
	PointBeforeRun = "before_run"
	PointAfterRun  = "after_run"
	PointPolling   = "polling"
	PointFinalize  = "finalize"
)

// snapshot is what a step reads from a job under the lock, so the Runpod
// call runs without it.
type snapshot struct {
	j            *job // read-only outside w.mu: for reAdmitted
	wf           workflow.Job
	epoch        int64
	input        []byte
	pending      *streams.Checkpoint
	checkCancel  bool
	readNow      bool
	hints        uint64
	lastCheck    time.Time
	storeRetries int
}

// stepResult is what a step hands back to settle.
type stepResult struct {
	wf           workflow.Job
	epoch        int64 // the epoch the step wrote with
	due          time.Time
	finalize     bool // the outcome is decided: hand the job to the finalizer
	drop         bool // the job is not ours anymore
	lost         bool // ... because another worker took it (count, hook)
	parked       bool // shutting down: keep the lease, schedule nothing
	pending      *streams.Checkpoint
	clearPending bool
	checked      time.Time // the cancel flag was re-read at this time (zero: it was not)
	storeRetries int
	keepInput    bool
}

// executeLoop is one executor: it runs one action at a time for the jobs the
// dispatcher hands it, until the work channel is closed.
func (w *Worker) executeLoop() {
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	for j := range w.work {
		w.execute(j, rnd)
	}
}

// execute runs one step of j and settles the result.
func (w *Worker) execute(j *job, rnd *rand.Rand) {
	w.mu.Lock()
	if j.dropped {
		w.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancelCause(w.execCtx)
	j.cancel = cancel
	s := snapshot{j: j, wf: j.wf, epoch: j.epoch, input: j.input, pending: j.pending,
		checkCancel: j.checkCancel, readNow: j.readNow, hints: j.hints, lastCheck: j.lastCheck, storeRetries: j.storeRetries}
	j.readNow = false
	w.mu.Unlock()
	defer cancel(nil)

	r := w.step(ctx, s, rnd)
	w.settle(j, s, r)
}

// settle stores a step's result in j and decides where j goes next: the
// finalizer, the heap, or away.
func (w *Worker) settle(j *job, s snapshot, r stepResult) {
	w.mu.Lock()
	j.cancel = nil
	if j.dropped {
		// The job left us while this step ran. A Runpod id the step learned
		// but could not record (a transient write failure) is known only
		// here: it goes through the orphan path (dropLocked already queued
		// the one the step started with).
		if p := r.pending; p != nil && p.RunpodID != "" && (s.pending == nil || s.pending.RunpodID != p.RunpodID) {
			w.queueOrphanLocked(p.RunpodID, p.JobID)
		}
		w.mu.Unlock()
		return
	}
	if r.drop && j.epoch != r.epoch {
		// We re-admitted the job (new epoch) while the step wrote with the
		// old one: it is still ours, try again at once.
		r = stepResult{wf: s.wf, epoch: j.epoch, due: w.now(), keepInput: true}
	}
	if r.drop {
		id := j.wf.ID
		lost := w.dropLocked(j, r.lost)
		w.mu.Unlock()
		w.hookLeaseLost(id, lost)
		return
	}
	from := j.wf.State
	w.setWFLocked(j, r.wf)
	if r.clearPending {
		j.pending = nil
	}
	if r.pending != nil {
		j.pending = r.pending
	}
	if !r.checked.IsZero() {
		j.lastCheck = r.checked
		if j.hints == s.hints {
			// The record was read after every hint so far: they are acted on
			// (r.wf carries the flag). A step that did not read keeps them.
			j.checkCancel = false
		}
	}
	j.storeRetries = r.storeRetries
	if !r.keepInput && j.wf.RunpodID != "" {
		j.input = nil // on Runpod: the input is never needed again
	}
	if r.finalize {
		w.mu.Unlock() // j stays running: the finalizer owns it now
		w.hookTransition(r.wf.ID, from, r.wf.State)
		w.stepHook(r.wf.ID, PointFinalize)
		w.finalizeQ <- j
		return
	}
	j.running = false
	if r.parked {
		w.mu.Unlock()
		return
	}
	due := r.due
	if j.wake {
		j.wake = false
		due = w.now()
	}
	w.scheduleLocked(j, due)
	w.mu.Unlock()
	// j may already run again on another executor: read nothing of it here.
	w.hookTransition(r.wf.ID, from, r.wf.State)
}

func (w *Worker) hookTransition(id string, from, to workflow.State) {
	if from != to && !to.Terminal() && w.cfg.Hooks.OnTransition != nil {
		w.cfg.Hooks.OnTransition(id, from, to)
	}
}

// dropLocked forgets j: it is no longer ours. Its running action, if any,
// is canceled. w.mu must be held. It reports whether the caller must call
// hookLeaseLost once it has released w.mu: hooks never run under the lock,
// so a hook may call back into the worker (Stats) without deadlocking it.
func (w *Worker) dropLocked(j *job, lost bool) (hookLost bool) {
	if j.dropped {
		return false
	}
	j.dropped = true
	if lost {
		// The job is another worker's now. A Runpod id we could never
		// record (Redis away, then the lease lapsed), or one we recorded
		// but Redis lost (an older snapshot, a promoted replica), is polled
		// by nobody unless the record names it: the orphan loop re-reads
		// the record and cancels only an id it does not name.
		for _, id := range j.runpodIDs() {
			w.queueOrphanLocked(id, j.wf.ID)
		}
	} else if j.pending != nil && j.pending.RunpodID != "" {
		w.queueOrphanLocked(j.pending.RunpodID, j.wf.ID)
		j.pending = nil
	}
	w.unscheduleLocked(j)
	if cur := w.jobs[j.wf.ID]; cur == j {
		delete(w.jobs, j.wf.ID)
		if j.wf.RunpodID == "" {
			w.unsentN--
		}
	}
	if j.cancel != nil {
		j.cancel(errLeaseLost)
	}
	if lost {
		w.stats.leasesLost.Add(1)
	}
	w.signalCapacity()
	return lost
}

// hookLeaseLost calls Hooks.OnLeaseLost when lost (dropLocked's answer).
// w.mu must not be held.
func (w *Worker) hookLeaseLost(jobID string, lost bool) {
	if lost && w.cfg.Hooks.OnLeaseLost != nil {
		w.cfg.Hooks.OnLeaseLost(jobID)
	}
}

func (w *Worker) stepHook(id, point string) {
	if w.cfg.StepHook != nil {
		w.cfg.StepHook(id, point)
	}
}

// persistCtx is for writes that must not be abandoned when the action's
// ctx is canceled (recording a Runpod id, an outcome): bounded, but not
// canceled by shutdown or lease loss (a lost lease makes the write fenced).
func (w *Worker) persistCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), persistTimeout)
}

// step runs one action of a job: it asks workflow.Next, performs the
// action, feeds the result to workflow.Apply and checkpoints the effect.
func (w *Worker) step(ctx context.Context, s snapshot, rnd *rand.Rand) stepResult {
	wf := s.wf
	log := w.log.With("job_id", wf.ID, "epoch", s.epoch)
	r := stepResult{wf: wf, epoch: s.epoch, storeRetries: s.storeRetries}

	// A checkpoint an earlier step could not write goes first: it may hold
	// the Runpod id, which must be recorded before anything else.
	if s.pending != nil {
		cp, err := w.checkpointOwned(ctx, s.j, *s.pending, w.now())
		if err != nil {
			if refused(err) && cp.RunpodID != "" {
				w.cancelOrphan(ctx, log, wf.ID, cp.RunpodID, err)
			}
			if !refused(err) {
				r.pending = &cp // keep the newest epoch it was tried with
			}
			return w.storeFailed(log, r, err, "write the pending checkpoint", rnd)
		}
		r.epoch = cp.Epoch // we may have re-admitted the job meanwhile
		r.clearPending = true
		r.storeRetries = 0
	}

	now := w.now()
	a := workflow.Next(wf, now, w.policy)
	if s.readNow && (a.Kind == workflow.ActPoll || a.Kind == workflow.ActStream) && a.At.After(now) {
		a.At = now
	}
	recheck := a.Kind == workflow.ActPoll && now.Sub(s.lastCheck) >= cancelRecheckEvery
	if s.checkCancel || recheck {
		// The record's cancel flag is the truth; control messages are hints.
		rec, err := w.store.Get(ctx, wf.ID)
		switch {
		case err == nil && (rec.Epoch != r.epoch || rec.Owner != w.cfg.InstanceID):
			log.Debug("job taken over by another worker", "owner", rec.Owner, "record_epoch", rec.Epoch)
			r.drop, r.lost = true, true
			return r
		case err == nil && workflow.State(rec.State).Terminal():
			log.Debug("job already terminal", "state", rec.State)
			r.drop = true
			return r
		case err == nil:
			r.checked = now
			if rec.Cancel && !wf.CancelRequested {
				log.Debug("cancel requested")
				wf.CancelRequested = true
				r.wf = wf
				a = workflow.Next(wf, now, w.policy)
			}
		case errors.Is(err, streams.ErrNotFound):
			r.drop = true
			return r
		default:
			log.Debug("cannot re-read the job record; going on", "error", err)
		}
	}
	if a.At.After(now) {
		r.due = a.At
		return r
	}

	switch a.Kind {
	case workflow.ActNone:
		log.Warn("job needs no action but is not finalized; dropping it", "state", wf.State, "step", wf.Step)
		r.drop = true
		return r
	case workflow.ActFinalize:
		r.wf = workflow.Decide(wf, a)
		r.finalize = true
		return r
	case workflow.ActRecordUncertain:
		return w.recordUncertain(ctx, log, r, s, a, rnd)
	case workflow.ActSubmit, workflow.ActPoll, workflow.ActCancel, workflow.ActStream:
		// Budget first (pacing.go): without it the job is rescheduled and
		// the slot freed; for /run, before the intent is recorded.
		pctx, at, ok := w.pace(ctx, wf.ID, a, rnd)
		if !ok {
			r.due = at
			return r
		}
		if a.Kind == workflow.ActSubmit {
			return w.submit(pctx, log, r, s, a, rnd)
		}
		return w.callRunpod(pctx, log, r, s, a, rnd)
	}
	log.Error("unknown action; dropping job", "action", a.Kind.String())
	r.drop = true
	return r
}

// storeFailed handles a failed Redis write: a refused write drops the job
// (another worker owns it, or it is finished); anything else retries the
// step after a backoff, keeping the job (it stays pending in Redis).
func (w *Worker) storeFailed(log hclog.Logger, r stepResult, err error, doing string, rnd *rand.Rand) stepResult {
	if refused(err) {
		log.Debug("write refused; dropping job", "doing", doing, "error", err)
		r.drop = true
		r.lost = errors.Is(err, streams.ErrFenced)
		return r
	}
	log.Warn("cannot write to Redis; will retry", "doing", doing, "error", err)
	r.due = w.now().Add(workflow.RetryDelay(w.policy.Retry, r.storeRetries, 0, rnd))
	r.storeRetries++
	return r
}

// abandoned reports whether a Runpod call's failure is only the action's
// ctx ending (shutdown or lease loss); its result then says nothing about
// the job and must not be fed to the workflow.
func abandoned(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() != nil
}

func (w *Worker) abandon(ctx context.Context, r stepResult) stepResult {
	if errors.Is(context.Cause(ctx), errLeaseLost) {
		r.drop = true
		return r
	}
	r.parked = true // shutting down: the lease is handed off as is
	return r
}

// submit records the intent (SUBMITTING, attempts+1), calls /run, and
// records the Runpod id before anything else.
func (w *Worker) submit(ctx context.Context, log hclog.Logger, r stepResult, s snapshot, a workflow.Action, rnd *rand.Rand) stepResult {
	wf := workflow.BeginSubmit(r.wf)
	err := w.store.Checkpoint(ctx, streams.Checkpoint{
		JobID: wf.ID, Owner: w.cfg.InstanceID, Epoch: r.epoch, Step: string(workflow.StepSubmitting), Attempts: wf.Attempts,
		Durable: true, // with Config.Durability: the intent must survive a Redis failover before /run
	}, redisClock)
	if errors.Is(err, streams.ErrCancelRequested) {
		// The record's cancel flag is set (a cancel landed after admit, or
		// its hint was missed) and nothing was written: never send the job.
		// workflow.Next ends it CANCELED "canceled before submission".
		log.Debug("cancel requested before submission; not sending the job")
		r.wf.CancelRequested = true
		return w.next(r, w.now())
	}
	if err != nil {
		if abandoned(ctx, err) {
			return w.abandon(ctx, r)
		}
		return w.storeFailed(log, r, err, "record the /run intent", rnd)
	}
	r.storeRetries = 0
	r.wf = wf // the record now says SUBMITTING
	log.Debug("submitting to runpod", "step", workflow.StepSubmitting, "attempt", wf.Attempts)
	w.stepHook(wf.ID, PointBeforeRun)

	req := workflow.RunRequest{Input: s.input, Webhook: w.webhookURLFor(s.j, wf.Attempts)}
	if !wf.Deadline.IsZero() {
		// Let Runpod drop the job a little after our own deadline, so a job
		// whose id we never recorded does not hold a GPU queue slot forever.
		ttl := wf.Deadline.Sub(w.now()) + time.Minute
		ttl = min(max(ttl, 10*time.Second), 7*24*time.Hour)
		req.Policy = &workflow.RunPolicy{TTLMs: ttl.Milliseconds()}
	}
	if ctx.Err() != nil {
		// Lease lost or stopping before anything was sent: nothing to take back.
		return w.abandon(ctx, r)
	}
	// Once sent, a /run is seen through even if the lease is lost meanwhile:
	// only its answer tells which Runpod job to cancel when the id cannot be
	// recorded (the fenced checkpoint below). So it runs under execCtx, which
	// only the end of the shutdown grace period cancels, not under the job's
	// ctx, which a lost lease cancels.
	runCtx := w.execCtx
	if workflow.Reserved(ctx) {
		runCtx = workflow.WithReserved(runCtx) // the budget pace took
	}
	rj, err := w.cfg.Runpod.Run(runCtx, req)
	if workflow.IsWorkerFault(err) {
		// A definite refusal (401/403, unknown endpoint): no Runpod job
		// exists. Step back to SUBMIT so whoever takes the job over sends it
		// without applying SubmitUncertainPolicy.
		w.fault(err)
		// Fenced by owner and epoch like every write: it must name us.
		_, _ = w.checkpointOwned(ctx, s.j, streams.Checkpoint{JobID: wf.ID, Owner: w.cfg.InstanceID, Epoch: r.epoch,
			Step: string(workflow.StepSubmit)}, w.now())
	}
	if abandoned(w.execCtx, err) {
		// Shutdown cut the /run short: it may have reached Runpod; the record
		// says SUBMITTING, so whoever resumes the job applies
		// SubmitUncertainPolicy.
		return w.abandon(w.execCtx, r)
	}
	if err == nil && rj.ID != "" {
		w.stepHook(wf.ID, PointAfterRun)
	}
	now := w.now()
	wf2, eff := workflow.Apply(wf, a, workflow.Result{Job: rj, Err: err}, now, w.policy, rnd)
	r.wf = wf2
	if err != nil {
		log.Debug("/run failed", "error", err, "retry_at", wf2.NextAt, "decided", wf2.Outcome != nil)
	}
	if !eff.Checkpoint {
		return w.next(r, now)
	}
	cp := streams.Checkpoint{
		JobID: wf2.ID, Owner: w.cfg.InstanceID, Epoch: r.epoch, Step: string(wf2.Step), State: string(wf2.State),
		RunpodID: wf2.RunpodID, RunpodStatus: string(wf2.RunpodStatus),
		Event: &streams.EventInput{Type: streams.EventQueued, Payload: streams.EventPayload{
			RunpodID: wf2.RunpodID, RunpodStatus: string(wf2.RunpodStatus), Attempt: wf2.Attempts,
			DelayMs: rj.DelayTime, ExecMs: rj.ExecutionTime, RunpodWorkerID: rj.WorkerID}},
	}
	cp, err = w.checkpointOwned(ctx, s.j, cp, now)
	log = log.With("runpod_id", wf2.RunpodID)
	if err != nil {
		if refused(err) {
			// Another worker owns the job now (not our own re-admit:
			// checkpointOwned rewrote those). Unless the record names this
			// very id (an earlier try was applied, its reply lost), nobody
			// will ever poll it: cancel it.
			w.cancelOrphan(ctx, log, wf2.ID, wf2.RunpodID, err)
			r.drop, r.lost = true, errors.Is(err, streams.ErrFenced)
			return r
		}
		// Keep the id in memory and write it before anything else next time.
		r.pending = &cp
		return w.storeFailed(log, r, err, "record the runpod id", rnd)
	}
	r.epoch = cp.Epoch
	log.Debug("job queued on runpod", "step", wf2.Step, "state", wf2.State)
	return w.next(r, now)
}

// recordUncertain records on the job that /run attempt a.Attempt has an
// unknown outcome: the Runpod job it may have created runs untracked (a
// possible duplicate GPU job once the job is resubmitted). The event
// submit_uncertain and the record's count are written once per attempt
// number (checkpoint.lua), whoever writes it and however often.
func (w *Worker) recordUncertain(ctx context.Context, log hclog.Logger, r stepResult, s snapshot, a workflow.Action, rnd *rand.Rand) stepResult {
	now := w.now()
	cp := streams.Checkpoint{
		JobID: r.wf.ID, Owner: w.cfg.InstanceID, Epoch: r.epoch, UncertainAttempt: a.Attempt,
		Event: &streams.EventInput{Type: streams.EventSubmitUncertain, Payload: streams.EventPayload{
			Attempt: a.Attempt, Error: fmt.Sprintf("/run attempt %d has an unknown outcome: it may have "+
				"created a Runpod job whose id was never recorded (policy %s)", a.Attempt, w.policy.SubmitUncertain)}},
	}
	cp, err := w.checkpointOwned(ctx, s.j, cp, now)
	if err != nil {
		if abandoned(ctx, err) {
			return w.abandon(ctx, r)
		}
		return w.storeFailed(log, r, err, "record an uncertain /run", rnd)
	}
	r.epoch = cp.Epoch
	r.storeRetries = 0
	r.wf = workflow.RecordedUncertain(r.wf, a.Attempt)
	w.stats.submitUncertain.Add(1)
	log.Warn("/run outcome unknown: a Runpod job nobody tracks may run", "attempt", a.Attempt,
		"policy", w.policy.SubmitUncertain)
	if w.cfg.Hooks.OnSubmitUncertain != nil {
		w.cfg.Hooks.OnSubmitUncertain(r.wf.ID, a.Attempt)
	}
	return w.next(r, now)
}

// maxRefence bounds how often one write is redone with a newer epoch after
// our own claimer re-admitted the job (see checkpointOwned).
const maxRefence = 2

// reAdmitted reports whether j is still ours with an epoch newer than used:
// our own lease lapsed (a Redis blip) and our claimer re-admitted the job,
// so a write fenced at epoch used is fenced by ourselves, not by a peer.
func (w *Worker) reAdmitted(j *job, used int64) (int64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if j == nil || j.dropped || w.jobs[j.wf.ID] != j || j.epoch <= used {
		return 0, false
	}
	return j.epoch, true
}

// checkpointOwned writes cp under a persist ctx. If the write is fenced only
// because this worker re-admitted the job meanwhile, it is redone with the
// new epoch (at most maxRefence times), instead of treating the job as taken
// over. It returns the checkpoint as last tried (its epoch may be newer).
func (w *Worker) checkpointOwned(ctx context.Context, j *job, cp streams.Checkpoint, now time.Time) (streams.Checkpoint, error) {
	for i := 0; ; i++ {
		pctx, cancel := w.persistCtx(ctx)
		err := w.store.Checkpoint(pctx, cp, redisClock)
		cancel()
		if err == nil || !errors.Is(err, streams.ErrFenced) || i == maxRefence {
			return cp, err
		}
		epoch, ok := w.reAdmitted(j, cp.Epoch)
		if !ok {
			return cp, err
		}
		w.log.Debug("write fenced by our own re-admit; redoing it with the new epoch",
			"job_id", cp.JobID, "epoch", cp.Epoch, "new_epoch", epoch)
		cp.Epoch = epoch
	}
}

// callRunpod performs /status or /cancel and checkpoints what changed.
func (w *Worker) callRunpod(ctx context.Context, log hclog.Logger, r stepResult, s snapshot, a workflow.Action, rnd *rand.Rand) stepResult {
	wf := r.wf
	log = log.With("runpod_id", wf.RunpodID)
	var (
		rj  workflow.RunpodJob
		err error
	)
	var st workflow.RunpodStream
	switch a.Kind {
	case workflow.ActStream:
		w.stepHook(wf.ID, PointPolling)
		st, err = w.cfg.Runpod.(workflow.Streamer).StreamChunks(ctx, wf.RunpodID)
	case workflow.ActPoll:
		w.stepHook(wf.ID, PointPolling)
		rj, err = w.cfg.Runpod.Status(ctx, wf.RunpodID)
	default:
		log.Debug("canceling on runpod", "reason", a.Reason)
		rj, err = w.cfg.Runpod.Cancel(ctx, wf.RunpodID)
	}
	err = w.checkFault(ctx, err)
	if abandoned(ctx, err) {
		return w.abandon(ctx, r)
	}
	now := w.now()
	wf2, eff := workflow.Apply(wf, a, workflow.Result{Job: rj, Stream: st, Err: err}, now, w.policy, rnd)
	r.wf = wf2
	if err != nil {
		log.Debug("runpod call failed", "action", a.Kind.String(), "error", err, "decided", wf2.Outcome != nil)
	}
	if len(eff.Chunks) > 0 {
		n, err := w.appendChunks(ctx, s.j, streams.Chunks{JobID: wf2.ID, Owner: w.cfg.InstanceID, Epoch: r.epoch,
			First: eff.ChunkBase, Outputs: rawList(eff.Chunks), RunpodID: wf2.RunpodID, RunpodStatus: string(wf2.RunpodStatus)}, now)
		if err != nil {
			if refused(err) {
				return w.storeFailed(log, r, err, "record stream chunks", rnd)
			}
			// Runpod handed these chunks out once: if no attempt was
			// applied they are lost from the events (the final output falls
			// back to Runpod's, or to the chunks recorded). Never block the
			// job on it. The count stays past them (applyStream's): an
			// attempt may have been applied with its reply lost, and the
			// next chunks sent at the old count would be taken for these
			// and skipped; sent past the record's count, chunks.lua records
			// them at its next free index.
			log.Warn("cannot record stream chunks; they may be lost from the events", "chunks", len(eff.Chunks), "error", err)
		} else {
			wf2.Chunks = n // the record's count is the truth
			r.wf = wf2
		}
	}
	if !eff.Checkpoint {
		return w.next(r, now)
	}
	cp := streams.Checkpoint{
		JobID: wf2.ID, Owner: w.cfg.InstanceID, Epoch: r.epoch, State: string(wf2.State), RunpodStatus: string(wf2.RunpodStatus),
		Output: eff.Output,
		Event: &streams.EventInput{Type: streams.EventProgress, Payload: streams.EventPayload{
			RunpodID: wf2.RunpodID, RunpodStatus: string(wf2.RunpodStatus), Output: eff.Output,
			DelayMs: rj.DelayTime, ExecMs: rj.ExecutionTime, RunpodWorkerID: rj.WorkerID}},
	}
	cp, err = w.checkpointOwned(ctx, s.j, cp, now)
	if err != nil {
		if refused(err) {
			return w.storeFailed(log, r, err, "record progress", rnd)
		}
		r.pending = &cp
		return w.storeFailed(log, r, err, "record progress", rnd)
	}
	r.epoch = cp.Epoch
	if wf2.State != wf.State {
		log.Debug("state changed", "from", wf.State, "to", wf2.State, "runpod_status", wf2.RunpodStatus)
	}
	return w.next(r, now)
}

// next finishes a step: finalize at once if the outcome is decided, else
// schedule the job at its next action.
func (w *Worker) next(r stepResult, now time.Time) stepResult {
	a := workflow.Next(r.wf, now, w.policy)
	if a.Kind == workflow.ActFinalize {
		r.wf = workflow.Decide(r.wf, a)
		r.finalize = true
		return r
	}
	r.due = a.At
	return r
}

// appendChunks records stream chunks (streams.AppendChunks) under a persist
// ctx, trying a transient failure again a few times (a retry adds nothing
// twice: chunks are recorded by index) and redoing a write fenced only by
// our own re-admit with the new epoch.
func (w *Worker) appendChunks(ctx context.Context, j *job, c streams.Chunks, now time.Time) (int, error) {
	var err error
	for i := 0; i < 3; i++ {
		pctx, cancel := w.persistCtx(ctx)
		var n int
		n, err = w.store.AppendChunks(pctx, c, redisClock)
		cancel()
		if err == nil {
			return n, nil
		}
		if errors.Is(err, streams.ErrFenced) {
			epoch, ok := w.reAdmitted(j, c.Epoch)
			if !ok {
				return 0, err
			}
			c.Epoch = epoch
			continue
		}
		if refused(err) {
			return 0, err
		}
	}
	return 0, err
}

// rawList converts JSON values to the byte slices streams takes.
func rawList(in []json.RawMessage) [][]byte {
	out := make([][]byte, len(in))
	for i, b := range in {
		out[i] = b
	}
	return out
}
