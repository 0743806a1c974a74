package worker

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// heartbeatLoop refreshes every owned lease each HeartbeatInterval, in
// batches, until ctx is done. Leases the store reports lost belong to
// another worker now: those jobs are dropped at once and their running
// action is canceled. At shutdown it runs until in-flight work has drained
// (so no lease lapses meanwhile) and stops just before the handoff (so no
// heartbeat undoes it).
func (w *Worker) heartbeatLoop(ctx context.Context) {
	log := w.log.Named("heartbeater")
	t := time.NewTicker(w.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		leases := make([]streams.Lease, 0, len(w.jobs))
		for _, j := range w.jobs {
			leases = append(leases, j.lease())
		}
		w.mu.Unlock()
		// Partition by partition, so one partition's failing Redis (its
		// Cluster master away) does not stop the others' beats; batches of
		// neighbouring entries: one PEL read and one XCLAIM each.
		for k, ls := range w.store.splitLeases(leases) {
			w.beatPartition(ctx, log, k, ls)
		}
	}
}

// beatPartition refreshes one partition's leases, in batches; a failed
// batch ends this partition's beat (the next tick retries; MinIdle leaves
// room for a few missed beats).
func (w *Worker) beatPartition(ctx context.Context, log hclog.Logger, part int, leases []streams.Lease) {
	streams.SortLeases(leases)
	for start := 0; start < len(leases); start += w.hbBatch {
		batch := leases[start:min(start+w.hbBatch, len(leases))]
		lost, err := w.store.all[part].Heartbeat(ctx, w.cfg.InstanceID, batch)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("heartbeat failed", "partition", part, "leases", len(batch), "error", err)
			}
			return
		}
		for _, l := range lost {
			w.loseLease(l)
		}
	}
}

// loseLease drops the job of a lease another worker took. While an admit
// of the job is in progress the refusal may be our own re-admit's epoch,
// written in Redis but not yet adopted here: the job is kept, and if the
// lease is really gone the next beat reports it again.
func (w *Worker) loseLease(l streams.Lease) {
	w.mu.Lock()
	j := w.jobs[l.JobID]
	if j == nil || j.epoch != l.Epoch || w.admitting[l.JobID] > 0 {
		w.mu.Unlock()
		return // already gone, re-admitted by us with a newer epoch, or maybe being so
	}
	w.log.Info("lease lost; dropping job", "job_id", l.JobID, "epoch", l.Epoch)
	lost := w.dropLocked(j, true)
	w.mu.Unlock()
	w.hookLeaseLost(l.JobID, lost)
}
