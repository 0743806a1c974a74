package worker

import (
	"context"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// heartbeatLoop refreshes, each HeartbeatInterval, this worker's liveness
// key in every partition where it holds leases and the idle time of every
// owned lease, in batches, until ctx is done. Leases the store reports lost
// belong to another worker now: those jobs are dropped at once and their
// running action is canceled. At shutdown it runs until in-flight work has
// drained (so no lease lapses meanwhile) and stops just before the handoff
// (so no heartbeat undoes it).
func (w *Worker) heartbeatLoop(ctx context.Context) {
	log := w.log.Named("heartbeater")
	t := time.NewTicker(w.cfg.HeartbeatInterval)
	defer t.Stop()
	// prev holds, per partition, the token the last beat wrote to our
	// liveness key; none yet: the key should be absent.
	prev := map[int]string{}
	var seq uint64
	// cursor is, per partition, the position read up to in the cancel log.
	// It starts a minute before Redis's now at start, which is before any
	// job this worker admits: a cancel before the admit is in the record
	// the admit returns, one after it is in the log after the cursor.
	cursor := map[int]cancelCursor{}
	start := "0-0"
	if t, err := w.store.Time(ctx); err == nil {
		start = strconv.FormatInt(t.Add(-time.Minute).UnixMilli(), 10) + "-0"
	}
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
		seq++
		token := w.aliveRun + ":" + strconv.FormatUint(seq, 10)
		// Partition by partition, so one partition's failing Redis (its
		// Cluster master away) does not stop the others' beats; batches of
		// neighbouring entries: one PEL read and one XCLAIM each.
		for k, ls := range w.store.splitLeases(leases) {
			expect, ok := prev[k]
			if !ok {
				expect = streams.ExpectAbsent
			}
			if w.beatPartition(ctx, log, k, ls, expect, token) {
				prev[k] = token
			}
			if _, ok := cursor[k]; !ok {
				cursor[k] = cancelCursor{pos: start}
			}
			cursor[k] = w.readCancels(ctx, log, k, cursor[k])
		}
	}
}

// beatPartition refreshes one partition's leases, in batches, writing token
// to the liveness key where the previous beat wrote expect. It reports
// whether the key now holds token. A failed batch ends this partition's
// beat (the next tick retries; MinIdle leaves room for a few missed beats).
func (w *Worker) beatPartition(ctx context.Context, log hclog.Logger, part int, leases []streams.Lease, expect, token string) bool {
	streams.SortLeases(leases)
	written := false
	for start := 0; start < len(leases); start += w.hbBatch {
		batch := leases[start:min(start+w.hbBatch, len(leases))]
		res, err := w.store.all[part].Beat(ctx, w.cfg.InstanceID,
			streams.Liveness{Lease: w.cfg.MinIdle, Token: token, Expect: expect}, batch)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("heartbeat failed", "partition", part, "leases", len(batch), "error", err)
			}
			return written
		}
		written = true
		switch {
		case res.Checked && expect != "":
			// Our key had expired (a stall past the lease), was lost or
			// rolled back by Redis, or another process uses our name: the
			// rest of this beat reads every record too.
			log.Info("liveness key was not as written; checking every lease's record", "partition", part)
			expect = ""
		case !res.Checked:
			expect = token // later batches find this beat's token
		}
		for _, l := range res.Lost {
			w.loseLease(l)
		}
	}
	return written
}

// cancelCursor is a position in a partition's cancel log: pos, and whether
// it is the id of an entry read (then the read checks it is still there) or
// a start time.
type cancelCursor struct {
	pos   string
	entry bool
}

// readCancels reads partition part's cancel log after cursor and wakes
// each held job named there for a re-read of its record (as a hint does),
// returning the new position. It replaces the per-job periodic re-read of
// the cancel flag: one script call per partition and beat, whatever the
// number of jobs. A failed read keeps the position for the next beat. A
// read that finds the log went back (Redis lost its tail: the next cancels
// may get ids below our position) reads it again from its start: a wake
// for a job already seen only makes it re-read its record.
func (w *Worker) readCancels(ctx context.Context, log hclog.Logger, part int, cursor cancelCursor) cancelCursor {
	const page = 1000
	for {
		r, err := w.store.all[part].CancelsAfter(ctx, cursor.pos, cursor.entry, page)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("cannot read the cancel log", "partition", part, "error", err)
			}
			return cursor
		}
		if r.RolledBack {
			w.stats.cancelLogRollbacks.Add(1)
			log.Warn("the cancel log went back (Redis lost writes: an older snapshot or a promoted replica); reading it again from its start",
				"partition", part, "position", cursor.pos)
		}
		for _, id := range r.JobIDs {
			w.wakeForCancel(id)
		}
		next := cancelCursor{pos: r.Next, entry: r.Entry}
		if (next == cursor && !r.RolledBack) || len(r.JobIDs) < page {
			return next
		}
		cursor = next
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
