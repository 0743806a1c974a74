package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// claimLoop runs a claim pass at start, every ClaimInterval, and at once
// when a peer announces a handoff, until ctx is done.
func (w *Worker) claimLoop(ctx context.Context) {
	log := w.log.Named("claimer")
	t := time.NewTicker(w.cfg.ClaimInterval)
	defer t.Stop()
	for {
		if n, err := w.claimPass(ctx); err != nil && ctx.Err() == nil {
			log.Warn("claim pass failed", "error", err, "admitted", n)
		} else if n > 0 {
			log.Info("reclaimed jobs", "admitted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.claimNow:
		}
	}
}

// claimPass takes over, in every served partition while free capacity
// remains, the entries of consumers whose liveness key is absent (dead
// workers, handed-off leases, older workers' lapsed entries) and this
// worker's own entries it no longer holds, each idle past MinIdle; admits
// them (bumping their epoch) and schedules them. Each pass starts at the
// next partition, so when capacity runs out no partition is always the one
// left over. A partition whose group is missing gets it recreated. It
// returns how many jobs were admitted.
func (w *Worker) claimPass(ctx context.Context) (int, error) {
	w.claimMu.Lock()
	defer w.claimMu.Unlock()
	served := w.store.served
	start := w.claimNext % len(served)
	w.claimNext++
	total := 0
	var errs []error
	for i := range served {
		part := served[(start+i)%len(served)]
		n, err := w.claimPartition(ctx, part)
		total += n
		if err != nil && !w.recreateGroup(ctx, "claimer", part, err) {
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

// claimPartition is claimPass over one partition. It costs two calls (the
// PEL's summary by consumer, their liveness keys) plus one claim.lua and
// one admit per page of entries taken, whatever the pending list's size:
// live consumers' entries are never scanned.
func (w *Worker) claimPartition(ctx context.Context, part int) (int, error) {
	total := 0
	defer func() {
		if total > 0 {
			w.stats.reclaimed.Add(uint64(total))
			if w.cfg.Hooks.OnReclaim != nil {
				w.cfg.Hooks.OnReclaim(total)
			}
		}
	}()
	st := w.store.all[part]
	pending, err := st.PendingConsumers(ctx)
	if err != nil || len(pending) == 0 {
		return 0, wrapClaim(err)
	}
	self := w.cfg.InstanceID
	others := make([]string, 0, len(pending))
	for c := range pending {
		if c != self {
			others = append(others, c)
		}
	}
	slices.Sort(others)
	alive, err := st.Alive(ctx, append(others, self))
	if err != nil {
		return 0, wrapClaim(err)
	}
	var from []string
	for i, c := range others {
		if !alive[i] {
			from = append(from, c)
		}
	}
	// Our own entries, which nobody else takes while our key lives: those
	// we no longer hold (a job dropped while its entry stayed ours, an
	// admit that failed, a process before us with the same consumer name),
	// and, once our key has lapsed (beats failing past the lease), those
	// we hold too, as any claimer would (a re-admit of our own job goes on
	// from memory). The PEL holding more of ours than we hold says the
	// first kind may exist; the idle filter finds them (held entries are
	// refreshed every beat).
	if n := pending[self]; n > 0 && (!alive[len(others)] || n > int64(w.heldIn(part))) {
		from = append(from, self)
	}
	for _, c := range from {
		for {
			n := w.reserve(claimBatchMax, false)
			if n == 0 {
				return total, nil
			}
			res, err := st.ClaimFrom(ctx, self, c, w.cfg.MinIdle, n, c == self)
			if err == nil && len(res.Msgs) > 0 {
				// The entries are ours now (the claim reset their idle
				// time): admit them even if the shutdown began meanwhile,
				// so they are adopted and handed off, not stranded for
				// MinIdle.
				var k int
				actx, cancel := w.persistCtx(ctx)
				k, err = w.admit(actx, part, res.Msgs)
				cancel()
				total += k
			}
			w.release(n, false)
			if err != nil {
				return total, wrapClaim(err)
			}
			if !res.More {
				break
			}
		}
	}
	return total, nil
}

func wrapClaim(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("worker: claim pass: %w", err)
}

// heldIn counts the jobs this worker holds in partition part.
func (w *Worker) heldIn(part int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.store.all) == 1 {
		return len(w.jobs)
	}
	n := 0
	for id := range w.jobs {
		if streams.PartitionOf(id, len(w.store.all)) == part {
			n++
		}
	}
	return n
}
