package worker

import "context"

// fetchLoop reads new submissions (XREADGROUP >) for at most the free
// capacity, admits them and schedules them, until ctx is done. With no free
// capacity it waits until a job leaves. Redis errors are logged and backed
// off; entries delivered but not admitted stay pending and are reclaimed.
func (w *Worker) fetchLoop(ctx context.Context) {
	log := w.log.Named("fetcher")
	var b backoff
	for ctx.Err() == nil {
		n := w.reserve(readBatchMax)
		if n > 0 && w.cfg.Admission.Depth > 0 {
			if n = w.admissionGrant(ctx, n); n == 0 {
				continue // no room on Runpod: it waited for the next reading (admission.go)
			}
		}
		if n == 0 {
			select {
			case <-ctx.Done():
				return
			case <-w.capacity:
			}
			continue
		}
		msgs, err := w.store.Read(ctx, w.cfg.InstanceID, n, readBlock)
		if err == nil && len(msgs) > 0 {
			// The entries are delivered to us now: admit them even if the
			// shutdown began meanwhile, so they are adopted and handed off
			// rather than left pending, idle, for MinIdle.
			actx, cancel := w.persistCtx(ctx)
			_, err = w.admit(actx, msgs)
			cancel()
		}
		w.release(n)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if w.recreateGroup(ctx, "fetcher", err) {
				b.reset()
				continue
			}
			log.Warn("fetch failed; backing off", "error", err)
			if !b.wait(ctx) {
				return
			}
			continue
		}
		b.reset()
	}
}
