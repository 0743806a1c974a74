package worker

import "context"

// fetchLoop reads new submissions (XREADGROUP >) for at most the free
// capacity, admits them and schedules them, until ctx is done. With no free
// capacity it waits until a job leaves. Redis errors are logged and backed
// off; entries delivered but not admitted stay pending and are reclaimed.
//
// Each served partition has its own fetch loop (a blocking XREADGROUP
// cannot span slots). They share the capacity fairly: a read takes at most
// an equal share of MaxInFlight, a loop whose partition was empty last time
// blocks holding a single slot (so idle partitions do not sit on capacity
// a busy one could use), and waiting loops are woken in turn.
func (w *Worker) fetchLoop(ctx context.Context, part int) {
	log := w.log.Named("fetcher")
	if len(w.store.all) > 1 {
		log = log.With("partition", part)
	}
	st := w.store.all[part]
	share := max(1, (w.cfg.MaxInFlight+len(w.store.served)-1)/len(w.store.served))
	empty := false
	var b backoff
	for ctx.Err() == nil {
		want := min(readBatchMax, share)
		if empty && len(w.store.served) > 1 {
			want = 1
		}
		n := w.reserve(want)
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
		msgs, err := st.Read(ctx, w.cfg.InstanceID, n, readBlock)
		empty = err == nil && len(msgs) == 0
		if err == nil && len(msgs) > 0 {
			// The entries are delivered to us now: admit them even if the
			// shutdown began meanwhile, so they are adopted and handed off
			// rather than left pending, idle, for MinIdle.
			actx, cancel := w.persistCtx(ctx)
			_, err = w.admit(actx, part, msgs)
			cancel()
		}
		w.release(n)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if w.recreateGroup(ctx, "fetcher", part, err) {
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
