package worker

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Orphans are Runpod jobs this worker created that the job's record does
// not name: the write of the id was refused (another worker owns the job),
// or a re-admit showed that another worker owned the job meanwhile. Nobody
// would ever poll or cancel them, so they are canceled here, and a cancel
// that fails is recorded in Redis ({ns}:orphans) and retried by every
// worker's orphan loop until Runpod confirms.
const (
	orphanRetryEvery = 30 * time.Second // how often recorded orphans are retried
	orphanBatch      = 100              // orphans per retry pass
)

// orphan is a suspected orphan not yet resolved nor recorded in Redis.
type orphan struct{ runpodID, jobID string }

// cancelOrphan resolves a suspected orphan now (see resolveOrphan); if it
// cannot, the orphan is recorded in Redis for the orphan loop.
func (w *Worker) cancelOrphan(ctx context.Context, log hclog.Logger, jobID, runpodID string, cause error) {
	pctx, cancel := w.persistCtx(ctx)
	defer cancel()
	log = log.With("runpod_id", runpodID, "cause", cause)
	if w.resolveOrphan(pctx, log, runpodID, jobID) {
		return
	}
	w.recordOrphan(pctx, log, orphan{runpodID: runpodID, jobID: jobID})
}

// queueOrphan hands a suspected orphan to the orphan loop (from under w.mu).
func (w *Worker) queueOrphanLocked(runpodID, jobID string) {
	w.orphanQ = append(w.orphanQ, orphan{runpodID: runpodID, jobID: jobID})
	select {
	case w.orphanNow <- struct{}{}:
	default:
	}
}

// recordOrphan stores o in Redis; if Redis is away too, it stays queued in
// memory for the next pass.
func (w *Worker) recordOrphan(ctx context.Context, log hclog.Logger, o orphan) {
	if err := w.store.AddOrphan(ctx, o.runpodID, o.jobID); err != nil {
		log.Warn("cannot record the orphan runpod job; will retry", "error", err)
		w.mu.Lock()
		w.queueOrphanLocked(o.runpodID, o.jobID)
		w.mu.Unlock()
	}
}

// resolveOrphan reads the job's record and cancels runpodID unless the
// record names it (then the job's owner polls it: it is no orphan; this is
// how a write that was applied but whose reply was lost is told apart from
// one that never was). It reports whether the orphan is settled: tracked,
// or canceled as Runpod confirmed.
func (w *Worker) resolveOrphan(ctx context.Context, log hclog.Logger, runpodID, jobID string) bool {
	rec, err := w.store.Get(ctx, jobID)
	switch {
	case err == nil && rec.RunpodID == runpodID:
		log.Debug("the job's record names this runpod job: not an orphan", "owner", rec.Owner, "record_epoch", rec.Epoch)
		return true
	case err != nil && !errors.Is(err, streams.ErrNotFound):
		log.Warn("cannot read the job record to check a possible orphan; will retry", "error", err)
		return false
	}
	_, err = w.cfg.Runpod.Cancel(ctx, runpodID)
	if !cancelConfirmed(err) {
		w.stats.orphanFailures.Add(1)
		w.hookOrphan(false)
		log.Warn("canceling the orphan runpod job failed; will retry", "error", err)
		return false
	}
	w.stats.orphans.Add(1)
	w.hookOrphan(true)
	log.Info("canceled an orphan runpod job (created by this worker, not recorded on the job)")
	return true
}

func (w *Worker) hookOrphan(canceled bool) {
	if w.cfg.Hooks.OnOrphanCancel != nil {
		w.cfg.Hooks.OnOrphanCancel(canceled)
	}
}

// cancelConfirmed: Runpod canceled the job, does not know it (404), or
// refuses because it already finished (400). Anything else (transient
// errors, 401/403) leaves the job possibly running.
func cancelConfirmed(err error) bool {
	if err == nil || errors.Is(err, workflow.ErrRunpodJobNotFound) {
		return true
	}
	var ae *workflow.ActivityError
	return errors.As(err, &ae) && ae.StatusCode == http.StatusBadRequest
}

// orphanLoop resolves queued orphans at once and retries the recorded ones
// every orphanRetryEvery, until ctx is done.
func (w *Worker) orphanLoop(ctx context.Context) {
	t := time.NewTicker(orphanRetryEvery)
	defer t.Stop()
	for {
		w.retryOrphans(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.orphanNow:
		}
	}
}

// retryOrphans runs one pass: the orphans queued in memory, then up to
// orphanBatch recorded in Redis. Settled ones are forgotten; unsettled
// queued ones are recorded in Redis.
func (w *Worker) retryOrphans(ctx context.Context) {
	log := w.log.Named("orphans")
	w.mu.Lock()
	queued := w.orphanQ
	w.orphanQ = nil
	w.mu.Unlock()
	for _, o := range queued {
		if ctx.Err() != nil {
			w.mu.Lock()
			w.queueOrphanLocked(o.runpodID, o.jobID) // kept for a later pass
			w.mu.Unlock()
			continue
		}
		l := log.With("job_id", o.jobID, "runpod_id", o.runpodID)
		if !w.resolveOrphan(ctx, l, o.runpodID, o.jobID) {
			w.recordOrphan(w.baseCtx, l, o)
		}
	}
	if ctx.Err() != nil {
		return
	}
	recorded, err := w.store.Orphans(ctx, orphanBatch)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("cannot list recorded orphans", "error", err)
		}
		return
	}
	w.stats.orphansPending.Store(int64(len(recorded)))
	for rp, jobID := range recorded {
		if ctx.Err() != nil {
			return
		}
		if !w.resolveOrphan(ctx, log.With("job_id", jobID, "runpod_id", rp), rp, jobID) {
			continue
		}
		if err := w.store.RemoveOrphan(ctx, rp); err != nil {
			log.Warn("cannot forget a settled orphan; it is checked again next pass", "runpod_id", rp, "error", err)
			continue
		}
		w.stats.orphansPending.Add(-1)
	}
}

// settleOrphansAtStop runs once at shutdown, after every action ended: the
// Runpod ids of pending checkpoints (a peer resumes those jobs from the
// record, which does not name them) and the orphans still queued are
// resolved now (record checked, then canceled) or recorded in Redis for
// the peers' orphan loops.
func (w *Worker) settleOrphansAtStop() {
	w.mu.Lock()
	queued := w.orphanQ
	w.orphanQ = nil
	for _, j := range w.jobs {
		if j.pending != nil && j.pending.RunpodID != "" {
			queued = append(queued, orphan{runpodID: j.pending.RunpodID, jobID: j.wf.ID})
		}
	}
	w.mu.Unlock()
	log := w.log.Named("orphans")
	for _, o := range queued {
		w.cancelOrphan(w.baseCtx, log.With("job_id", o.jobID), o.jobID, o.runpodID, ErrStopping)
	}
}
