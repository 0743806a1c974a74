package worker

import "context"

// fetchLoop reads new submissions (XREADGROUP >) for at most the free
// capacity, admits them and schedules them, until ctx is done. The capacity
// is MaxInFlight minus owned jobs, and at most SubmitAhead minus owned jobs
// not yet sent to /run (reserve): a backlog Runpod cannot take yet stays in
// the stream for every worker. With no free capacity it waits until a job
// leaves or one is sent. Redis errors are logged and backed
// off; entries delivered but not admitted stay pending and are reclaimed.
//
// Each served partition has its own fetch loop (a blocking XREADGROUP
// cannot span slots). They share the capacity fairly: a read takes at most
// an equal share of the smaller of MaxInFlight and SubmitAhead, a loop whose partition was empty last time
// blocks holding a single slot (so idle partitions do not sit on capacity
// a busy one could use), and waiting loops are woken in turn.
//
// With admission (Config.Admission) the grants are the pool's, so a loop
// never holds them across a wait: unless its last read filled all it was
// granted, it first waits for entries no consumer has been delivered
// (Store.WaitNew, holding nothing), then takes grants for at most what it
// saw, reads without blocking, and gives back to the gate what the read
// did not use (another worker may have taken the entries meanwhile). While
// it waits it reports its unsent count when that changed, as every take
// does.
func (w *Worker) fetchLoop(ctx context.Context, part int) {
	log := w.log.Named("fetcher")
	if len(w.store.all) > 1 {
		log = log.With("partition", part)
	}
	st := w.store.all[part]
	gated := w.cfg.Admission.Depth > 0
	share := max(1, (min(w.cfg.MaxInFlight, w.cfg.SubmitAhead)+len(w.store.served)-1)/len(w.store.served))
	empty, more := false, false
	var b backoff
	// failed handles a Redis error; it reports whether the loop must stop.
	failed := func(err error) bool {
		if ctx.Err() != nil {
			return true
		}
		if w.recreateGroup(ctx, "fetcher", part, err) {
			b.reset()
			return false
		}
		log.Warn("fetch failed; backing off", "error", err)
		return !b.wait(ctx)
	}
	for ctx.Err() == nil {
		want := min(readBatchMax, share)
		if empty && len(w.store.served) > 1 && !gated {
			want = 1
		}
		if gated && !more {
			k, err := st.WaitNew(ctx, want, readBlock)
			if err != nil {
				if failed(err) {
					return
				}
				continue
			}
			if k == 0 {
				w.admissionReport(ctx, "", 0) // jobs sent while it waits stop counting
				continue
			}
			want = min(want, k)
		}
		n := w.reserve(want, true)
		reading := ""
		if n > 0 && gated {
			if n, reading = w.admissionGrant(ctx, n); n == 0 {
				more = false
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
		block := readBlock
		if gated {
			block = 0 // it waited in WaitNew, or its last read was full
		}
		msgs, err := st.Read(ctx, w.cfg.InstanceID, n, block)
		empty = err == nil && len(msgs) == 0
		more = err == nil && len(msgs) == n
		if err == nil && len(msgs) > 0 {
			// The entries are delivered to us now: admit them even if the
			// shutdown began meanwhile, so they are adopted and handed off
			// rather than left pending, idle, for MinIdle.
			actx, cancel := w.persistCtx(ctx)
			_, err = w.admit(actx, part, msgs)
			cancel()
		}
		if gated && len(msgs) < n {
			w.admissionReport(ctx, reading, n-len(msgs))
		}
		w.release(n, true)
		if err != nil {
			if failed(err) {
				return
			}
			continue
		}
		b.reset()
	}
}
