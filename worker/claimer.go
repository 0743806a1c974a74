package worker

import (
	"context"
	"errors"
	"fmt"
	"time"
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

// claimPass takes over entries idle past MinIdle (XAUTOCLAIM pages) in
// every served partition while free capacity remains, admits them (bumping
// their epoch) and schedules them. Each pass starts at the next partition,
// so when capacity runs out no partition is always the one left over. A
// partition whose group is missing gets it recreated. It returns how many
// jobs were admitted.
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

// claimPartition is claimPass over one partition.
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
	cursor := "0-0"
	for {
		n := w.reserve(claimBatchMax)
		if n == 0 {
			return total, nil
		}
		msgs, _, next, err := w.store.all[part].Claim(ctx, w.cfg.InstanceID, w.cfg.MinIdle, n, cursor)
		if err == nil && len(msgs) > 0 {
			// The entries are ours now (XAUTOCLAIM reset their idle
			// time): admit them even if the shutdown began meanwhile, so
			// they are adopted and handed off, not stranded for MinIdle.
			var k int
			actx, cancel := w.persistCtx(ctx)
			k, err = w.admit(actx, part, msgs)
			cancel()
			total += k
		}
		w.release(n)
		if err != nil {
			return total, fmt.Errorf("worker: claim pass: %w", err)
		}
		if next == "" || next == "0-0" {
			return total, nil
		}
		cursor = next
	}
}
