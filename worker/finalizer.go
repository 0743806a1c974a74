package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// finalizeLoop writes decided outcomes in batches: it takes the first job
// handed over, waits up to finalizeLinger for more (up to finalizeBatchMax),
// and writes them with one streams.Finalize call. It ends when finalizeQ is
// closed and drained (after the executors have stopped).
func (w *Worker) finalizeLoop() {
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	linger := time.NewTimer(finalizeLinger)
	defer linger.Stop()
	for {
		first, ok := <-w.finalizeQ
		if !ok {
			return
		}
		batch := []*job{first}
		linger.Reset(finalizeLinger)
		open := true
	collect:
		for len(batch) < finalizeBatchMax {
			select {
			case j, ok := <-w.finalizeQ:
				if !ok {
					open = false
					break collect
				}
				batch = append(batch, j)
			case <-linger.C:
				break collect
			}
		}
		w.finalizeBatch(batch, rnd)
		if !open {
			return
		}
	}
}

// finalizeBatch writes the outcomes of batch and forgets the jobs whose
// outcome is now in Redis (or that are no longer ours). On a Redis error the
// jobs go back to the heap and are retried after a backoff: the outcome is
// decided (workflow.Decide) and will not change. An outcome fenced only
// because our own claimer re-admitted the job meanwhile (our lease lapsed,
// e.g. a Redis blip) is written again with the new epoch, at most
// maxRefence times, rather than dropped as a lost lease.
func (w *Worker) finalizeBatch(batch []*job, rnd *rand.Rand) {
	for i := 0; len(batch) > 0; i++ {
		batch = w.finalizeOnce(batch, rnd, i < maxRefence)
	}
}

// finalizeOnce writes one batch of outcomes. With refence, it returns the
// jobs whose outcome was fenced by our own re-admit (still ours, newer
// epoch) instead of dropping them; the caller writes those again.
func (w *Worker) finalizeOnce(batch []*job, rnd *rand.Rand, refence bool) (again []*job) {
	now := w.now()
	outs := make([]streams.Outcome, 0, len(batch))
	live := batch[:0]
	var fromChunks []int // outcomes whose output is the job's recorded stream chunks
	w.mu.Lock()
	for _, j := range batch {
		if j.dropped || j.wf.Outcome == nil {
			continue
		}
		o := j.wf.Outcome
		if j.finalizeFor != o {
			j.finalizeID, j.finalizeFor = streams.NewFinalizeID(), o
		}
		outs = append(outs, streams.Outcome{
			JobID: j.wf.ID, Entry: j.entry, Owner: w.cfg.InstanceID, Epoch: j.epoch, State: string(o.State),
			Output: o.Output, Error: o.Error, ErrorJSON: o.ErrorJSON, RunpodID: j.wf.RunpodID,
			RunpodStatus: string(o.RunpodStatus), InputHash: j.inputHash, InputHashKnown: true,
			DelayMs: o.DelayMs, ExecMs: o.ExecMs, RunpodWorkerID: o.RunpodWorkerID, Endpoint: w.cfg.EndpointID,
			FinalizeID: j.finalizeID,
		})
		if o.OutputFromChunks {
			fromChunks = append(fromChunks, len(outs)-1)
		}
		live = append(live, j)
	}
	w.mu.Unlock()
	if len(outs) == 0 {
		return nil
	}

	ctx, cancel := context.WithTimeout(w.baseCtx, persistTimeout)
	var err error
	for _, i := range fromChunks {
		// The chunks are in the record (only this owner appends them, and
		// the finalize below is fenced like every write).
		var rec streams.Record
		if rec, err = w.store.Get(ctx, outs[i].JobID); err != nil {
			break
		}
		if len(rec.ChunkData) > 0 {
			outs[i].Output = rec.ChunkData
		}
	}
	var errs []error
	if err == nil {
		errs, err = w.store.Finalize(ctx, outs, streams.FinalizeOpts{ResultTTL: w.cfg.ResultTTL, Now: redisClock})
	}
	cancel()
	if err == nil && len(errs) != len(outs) {
		err = errors.New("finalize returned a result count that does not match the batch")
	}
	if err != nil {
		w.log.Warn("cannot write outcomes; will retry", "outcomes", len(outs), "error", err)
		w.mu.Lock()
		for _, j := range live {
			if j.dropped {
				continue
			}
			j.running = false
			w.scheduleLocked(j, now.Add(workflow.RetryDelay(w.policy.Retry, j.storeRetries, 0, rnd)))
			j.storeRetries++
		}
		w.mu.Unlock()
		return nil
	}

	for i, j := range live {
		out := outs[i]
		log := w.log.With("job_id", out.JobID, "epoch", out.Epoch, "runpod_id", out.RunpodID)
		if refence && errors.Is(errs[i], streams.ErrFenced) {
			if epoch, ok := w.reAdmitted(j, out.Epoch); ok {
				log.Debug("outcome fenced by our own re-admit; writing it again", "new_epoch", epoch)
				again = append(again, j)
				continue
			}
		}
		st := workflow.State(out.State)
		w.mu.Lock()
		from := j.wf.State
		lost := w.dropLocked(j, errors.Is(errs[i], streams.ErrFenced))
		if errs[i] == nil {
			// Counted under mu with the drop: Stats never shows the job
			// neither in flight nor finalized.
			for k, ts := range terminalStates {
				if ts == st {
					w.stats.finalized[k].Add(1)
				}
			}
		}
		w.mu.Unlock()
		w.hookLeaseLost(out.JobID, lost)
		switch {
		case errs[i] == nil:
			log.Info("job finished", "state", st, "error", out.Error)
			if w.cfg.Hooks.OnTransition != nil {
				w.cfg.Hooks.OnTransition(out.JobID, from, st)
			}
			if w.cfg.Hooks.OnOutcome != nil {
				w.cfg.Hooks.OnOutcome(out.JobID, st)
			}
		default:
			// Another worker owns or already finished the job: not ours.
			log.Debug("outcome refused; dropping job", "error", errs[i])
		}
	}
	return again
}
