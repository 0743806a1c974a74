package worker

import (
	"context"
	"time"
)

// Janitor tuning.
const (
	// trimStep bounds one XTRIM MINID ~ LIMIT call (Redis's own default
	// LIMIT): each call is short, so Redis stays responsive between them.
	trimStep = 10_000
	// janitorPassBudget bounds one pass's trimming by time. A pass that
	// runs out with a backlog left says so and the next one starts after
	// janitorBacklogPause instead of EventTrimIntervalDefault: trimming keeps
	// up with any event rate rather than leaving the backlog to grow.
	janitorPassBudget   = 10 * time.Second
	janitorBacklogPause = time.Second
)

// janitorLoop runs a janitor pass at start and every
// EventTrimIntervalDefault (sooner while a backlog remains) until ctx is
// done. Every worker of a pool runs it; trimming by MINID and pruning idle
// consumers are idempotent, so the duplicates cost a few cheap commands.
func (w *Worker) janitorLoop(ctx context.Context) {
	log := w.log.Named("janitor")
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r, err := w.janitorPass(ctx, janitorPassBudget)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("janitor pass failed", "error", err)
		case r.backlog && len(r.unserved) == 0:
			log.Info("trim backlog left after a pass; continuing shortly",
				"events_removed", r.events, "dead_removed", r.dead)
		case r.events > 0 || r.dead > 0 || len(r.consumers) > 0:
			log.Debug("janitor pass", "events_removed", r.events, "dead_removed", r.dead,
				"consumers_removed", r.consumers)
		}
		for _, u := range r.unserved {
			log.Error("PARTITION NOT SERVED: it holds submissions and no worker ever created its consumer group; "+
				"its jobs wait until a worker serves it (every partition must be in some worker's --serve-partitions)",
				"partition", u.part, "submissions", u.entries)
		}
		if r.backlog && len(r.unserved) > 0 {
			log.Info("trim backlog left after a pass; continuing shortly",
				"events_removed", r.events, "dead_removed", r.dead)
		}
		next := EventTrimIntervalDefault
		if r.backlog {
			next = janitorBacklogPause
		}
		t.Reset(next)
	}
}

// janitorResult is what one pass did.
type janitorResult struct {
	events, dead int64
	consumers    []string
	backlog      bool // the budget ran out before a trim was done
	// unserved are the partitions this worker does not serve that hold
	// submissions but have no consumer group: no worker ever read them.
	unserved []unservedPart
}

type unservedPart struct {
	part    int
	entries int64
}

// janitorPass trims events older than EventRetention and dead letters
// older than DeadRetention, until done or budget is spent, then removes the
// group's consumers of workers that are gone. Ages are measured on Redis's
// clock, which stream ids are on.
func (w *Worker) janitorPass(ctx context.Context, budget time.Duration) (janitorResult, error) {
	var r janitorResult
	now, err := w.store.Time(ctx)
	if err != nil {
		return r, err
	}
	deadline := time.Now().Add(budget)
	if w.cfg.EventRetention > 0 {
		n, done, err := w.trimUntilDone(ctx, w.store.TrimEvents, now.Add(-w.cfg.EventRetention), deadline)
		r.events, r.backlog = n, !done
		if err != nil {
			return r, err
		}
	}
	if w.cfg.DeadRetention > 0 {
		n, done, err := w.trimUntilDone(ctx, w.store.TrimDead, now.Add(-w.cfg.DeadRetention), deadline)
		r.dead, r.backlog = n, r.backlog || !done
		if err != nil {
			return r, err
		}
	}
	if w.cfg.ConsumerRetention > 0 {
		removed, err := w.store.PruneConsumers(ctx, w.cfg.ConsumerRetention, w.cfg.InstanceID)
		r.consumers = removed
		if err != nil {
			return r, err
		}
	}
	r.unserved, err = w.unservedPartitions(ctx)
	return r, err
}

// unservedPartitions looks at the partitions this worker does not serve:
// one whose submissions stream holds entries but has no consumer group was
// never read by any worker (each creates the groups of what it serves at
// start), so subsets of --serve-partitions left it out and its jobs wait
// silently. A group that exists is someone's: its backlog may be normal.
func (w *Worker) unservedPartitions(ctx context.Context) ([]unservedPart, error) {
	if w.meta == nil || len(w.store.served) == len(w.store.all) {
		return nil, nil
	}
	served := make(map[int]bool, len(w.store.served))
	for _, p := range w.store.served {
		served[p] = true
	}
	var out []unservedPart
	for i := range w.store.all {
		if served[i] {
			continue
		}
		q, err := w.meta.At(i).QueueInfo(ctx)
		if err != nil {
			return out, err
		}
		if !q.GroupExists && q.Length > 0 {
			out = append(out, unservedPart{part: i, entries: q.Length})
		}
	}
	return out, nil
}

// trimUntilDone repeats bounded approximate trims until one removes
// nothing, then removes the remainder exactly (at most one macro node:
// cheap); done is false when the deadline came first.
func (w *Worker) trimUntilDone(ctx context.Context, trim func(context.Context, time.Time, int64) (int64, error),
	before, deadline time.Time) (total int64, done bool, err error) {
	for {
		n, err := trim(ctx, before, trimStep)
		total += n
		if err != nil {
			return total, false, err
		}
		if n == 0 {
			break
		}
		if !time.Now().Before(deadline) {
			return total, false, nil
		}
	}
	n, err := trim(ctx, before, 0)
	return total + n, err == nil, err
}
