package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// reserve books up to max job slots of free capacity (MaxInFlight minus
// owned jobs minus other reservations) for a read or claim in progress, so
// the worker never holds more entries than it can run: the idle clock of an
// entry starts at delivery. A fetch (new submissions) is also bounded by
// SubmitAhead minus the jobs not yet sent and other fetches' reservations,
// so the backlog stays in the stream; a claim is not (a crashed worker's
// jobs must be resumed). Release what was reserved with release.
func (w *Worker) reserve(max int, fetch bool) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := min(max, w.cfg.MaxInFlight-len(w.jobs)-w.reserved)
	if fetch {
		n = min(n, w.cfg.SubmitAhead-w.unsentN-w.fetchReserved)
	}
	if n <= 0 {
		return 0
	}
	w.reserved += n
	if fetch {
		w.fetchReserved += n
	}
	if w.cfg.MaxInFlight-len(w.jobs)-w.reserved > 0 && (!fetch || w.cfg.SubmitAhead-w.unsentN-w.fetchReserved > 0) {
		w.signalCapacity() // another partition's fetcher may be waiting
	}
	return n
}

func (w *Worker) release(n int, fetch bool) {
	w.mu.Lock()
	w.reserved -= n
	if fetch {
		w.fetchReserved -= n
	}
	w.mu.Unlock()
	w.signalCapacity()
}

// setWFLocked replaces j's workflow state, keeping unsentN right: a job
// whose Runpod id is recorded stops counting (and the fetcher may read
// again); one that lost it (a resubmit) counts again. w.mu must be held.
func (w *Worker) setWFLocked(j *job, wf workflow.Job) {
	was, is := j.wf.RunpodID == "", wf.RunpodID == ""
	j.wf = wf
	if j.dropped || was == is {
		return
	}
	if is {
		w.unsentN++
	} else {
		w.unsentN--
		w.signalCapacity()
	}
}

// signalCapacity nudges the fetcher: capacity may have been freed.
func (w *Worker) signalCapacity() {
	select {
	case w.capacity <- struct{}{}:
	default:
	}
}

// admit decodes delivered entries, takes ownership of them in one
// streams.Admit call, and schedules the admitted jobs at once. It returns
// how many were admitted. On error the entries stay pending for this
// consumer and are reclaimed after MinIdle: nothing is lost.
func (w *Worker) admit(ctx context.Context, part int, msgs []redis.XMessage) (int, error) {
	reqs := make([]streams.AdmitRequest, len(msgs))
	foreign := false
	for i, m := range msgs {
		reqs[i] = streams.NewAdmitRequest(m, w.cfg.MaxInputBytes)
		if r := &reqs[i]; r.Poison == "" && len(w.store.all) > 1 {
			if want := streams.PartitionOf(r.Sub.JobID, len(w.store.all)); want != part {
				foreign = true
				// A raw producer wrote it to the wrong partition: its record
				// would live where Get, Cancel and AwaitResult never look.
				// Dead-lettered here without a record (no job id), loudly.
				r.Poison = fmt.Sprintf("wrong partition: job id %q belongs to partition %d of %d, entry is in partition %d",
					r.Sub.JobID, want, len(w.store.all), part)
				r.Sub, r.Foreign = streams.Submission{}, true
			}
		}
	}
	if foreign {
		// An entry of another partition is a raw producer's mistake, or
		// ours: the namespace was migrated to another count while we run,
		// and a producer of the new count wrote a job (its record too) here.
		// Dead-lettering that one would leave its record SUBMITTED forever.
		if err := w.recheckPartitions(ctx); err != nil {
			return 0, err // the entries stay pending, for a worker of the right count
		}
	}
	w.markAdmitting(reqs, 1)
	defer w.markAdmitting(reqs, -1)
	w.markHeld(reqs)
	jobTimeout := w.cfg.JobTimeout
	if jobTimeout < 0 {
		jobTimeout = 0
	}
	// No Now: the script stamps records with Redis's clock, and the reply
	// tells how far that clock is from ours (learnClock).
	sent := w.now()
	res, err := w.store.all[part].Admit(ctx, reqs, streams.AdmitOpts{
		Consumer: w.cfg.InstanceID, MaxDeliveries: w.cfg.MaxDeliveries, Dedupe: w.cfg.Dedupe,
		PersistInput: w.cfg.PersistInput, DefaultTimeout: jobTimeout, ResultTTL: w.cfg.ResultTTL,
	})
	if err != nil {
		return 0, err
	}
	if len(res) > 0 {
		w.learnClock(sent, w.now(), res[0].RedisNow)
	}
	n := 0
	for i, r := range res {
		switch r.Status {
		case streams.Admitted:
			if reqs[i].Poison != "" {
				// The job is on Runpod: it is resumed (polled), never judged
				// again on an entry that today's limits would refuse.
				w.log.Warn("resuming a job already on runpod although its entry would be refused today",
					"job_id", r.Record.JobID, "entry", reqs[i].Entry.ID, "runpod_id", r.Record.RunpodID, "reason", reqs[i].Poison)
			}
			w.adopt(reqs[i], r.Record)
			n++
		case streams.Canceled:
			w.log.Debug("job cancelled before it was admitted; ended CANCELED unsent",
				"job_id", reqs[i].Sub.JobID, "entry", reqs[i].Entry.ID)
		case streams.Errored:
			w.log.Error("cannot admit one entry; it stays pending and will be retried after MinIdle",
				"job_id", reqs[i].Sub.JobID, "entry", reqs[i].Entry.ID, "error", r.Err)
		case streams.Poisoned:
			w.stats.poisoned.Add(1)
			w.log.Warn("poison submission dead-lettered", "job_id", reqs[i].Sub.JobID, "entry", reqs[i].Entry.ID, "reason", reqs[i].Poison)
			if w.cfg.Hooks.OnPoison != nil {
				w.cfg.Hooks.OnPoison(reqs[i].Poison)
			}
		case streams.Unreadable:
			w.log.Error("cannot read the job record; leaving its entry pending for a worker that can",
				"job_id", reqs[i].Sub.JobID, "entry", reqs[i].Entry.ID, "error", r.Err)
		default:
			w.log.Debug("entry not admitted", "job_id", reqs[i].Sub.JobID, "entry", reqs[i].Entry.ID, "status", r.Status.String())
		}
	}
	w.stats.admitted.Add(uint64(n))
	return n, nil
}

// markHeld sets HeldEpoch on the requests of jobs this worker still runs
// from the same entry: a claim pass taking back our own lapsed lease. The
// admit then counts no delivery (nobody crashed), so a job re-admitted by
// its own worker again and again is never judged poison for it.
func (w *Worker) markHeld(reqs []streams.AdmitRequest) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range reqs {
		if j := w.jobs[reqs[i].Sub.JobID]; j != nil && !j.dropped && j.entry == reqs[i].Entry.ID {
			reqs[i].HeldEpoch = j.epoch
		}
	}
}

// markAdmitting adds d to the admit calls in progress of reqs' jobs.
func (w *Worker) markAdmitting(reqs []streams.AdmitRequest, d int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range reqs {
		id := r.Sub.JobID
		if w.admitting[id] += d; w.admitting[id] <= 0 {
			delete(w.admitting, id)
			delete(w.admitWakes, id)
		}
	}
}

// jobFromRecord rebuilds a job's workflow state from its record, so the
// workflow resumes at the recorded step.
func (w *Worker) jobFromRecord(rec streams.Record) workflow.Job {
	wf := workflow.Job{
		ID: rec.JobID, State: workflow.State(rec.State), Step: workflow.Step(rec.Step),
		RunpodID: rec.RunpodID, RunpodStatus: workflow.RunpodStatus(rec.RunpodStatus),
		Attempts: rec.Attempts, UncertainAttempt: rec.UncertainAttempt, CancelRequested: rec.Cancel, OutputSum: workflow.SumOutput(rec.Output),
		Streaming: w.streaming(), Chunks: rec.Chunks,
	}
	if wf.State == "" {
		wf.State = workflow.StateSubmitted
	}
	// Record times are on Redis's clock; the workflow compares deadlines
	// with ours, so they are shifted by the offset between the two.
	switch {
	case rec.DeadlineMs > 0:
		wf.Deadline = w.localTime(rec.DeadlineMs)
	case w.cfg.JobTimeout > 0 && rec.CreatedMs > 0:
		wf.Deadline = w.localTime(rec.CreatedMs).Add(w.cfg.JobTimeout)
	}
	return wf
}

// learnClock records how far Redis's clock (redisNow, read by a script
// between sent and got on our clock) is ahead of ours. The midpoint bounds
// the error by half the round trip.
func (w *Worker) learnClock(sent, got, redisNow time.Time) {
	if redisNow.IsZero() {
		return
	}
	local := sent.Add(got.Sub(sent) / 2)
	w.clockOffset.Store(int64(redisNow.Sub(local)))
}

// localTime converts a unix-ms time on Redis's clock to our clock.
func (w *Worker) localTime(ms int64) time.Time {
	return time.UnixMilli(ms).Add(-time.Duration(w.clockOffset.Load()))
}

// adopt starts running an admitted job. For a job this worker already
// holds in memory (our lease lapsed and a claim pass or read admitted it
// again), the memory may go on only if nobody else owned the job since:
// the new epoch is ours+1 and its previous owner is us. Otherwise another
// worker may have submitted, recorded or finished it meanwhile (or Redis
// lost our writes), so the memory is dropped and the job resumes from the
// record; any Runpod job the memory holds that the record does not name is
// an orphan and is canceled.
func (w *Worker) adopt(req streams.AdmitRequest, rec streams.Record) {
	now := w.now()
	wf := w.jobFromRecord(rec)
	input := json.RawMessage(rec.Input)
	if len(input) == 0 {
		input = req.Sub.Input
	}
	if wf.RunpodID != "" {
		input = nil
	}
	inputHash := rec.InputHash
	if inputHash == "" {
		inputHash = req.Sub.InputHash
	}
	w.log.Debug("job admitted", "job_id", wf.ID, "epoch", rec.Epoch, "step", wf.Step, "state", wf.State,
		"runpod_id", wf.RunpodID, "deliveries", rec.Deliveries, "prev_owner", rec.PrevOwner)

	w.mu.Lock()
	lost := false
	defer func() {
		w.mu.Unlock()
		w.hookLeaseLost(wf.ID, lost)
	}()
	read, woken := w.admitWakes[wf.ID]
	delete(w.admitWakes, wf.ID)
	if j := w.jobs[wf.ID]; j != nil {
		if rec.Epoch == j.epoch+1 && rec.PrevOwner == w.cfg.InstanceID {
			// Only our own lease lapsed: same job, next epoch. A running
			// action's fenced write is redone with it (checkpointOwned).
			j.epoch, j.entry = rec.Epoch, rec.Entry
			if woken {
				j.checkCancel, j.readNow = true, j.readNow || read
			}
			if j.running {
				j.wake = true
			} else {
				w.scheduleLocked(j, now)
			}
			return
		}
		w.log.Info("re-admitted a job another worker owned meanwhile; resuming from the record",
			"job_id", wf.ID, "held_epoch", j.epoch, "epoch", rec.Epoch, "prev_owner", rec.PrevOwner,
			"runpod_id", rec.RunpodID)
		// dropLocked hands every Runpod id j held to the orphan loop,
		// which cancels those the record does not name.
		// A /run still in flight for j is seen through by its step: the
		// write of its id is fenced (j is dropped) and it cancels it then.
		lost = w.dropLocked(j, true)
	}
	entry := rec.Entry
	if entry == "" {
		entry = req.Entry.ID
	}
	j := &job{wf: wf, entry: entry, epoch: rec.Epoch, inputHash: inputHash, input: input, idx: -1, lastCheck: now}
	if woken {
		// Woken while admitting: re-read the record (and Runpod) at once.
		j.checkCancel, j.readNow = true, read
		j.hints++
	}
	w.jobs[wf.ID] = j
	if wf.RunpodID == "" {
		w.unsentN++
	}
	w.scheduleLocked(j, now)
}
