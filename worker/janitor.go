package worker

import (
	"context"
	"time"
)

// janitorLoop trims events older than EventRetention at start and every
// EventTrimIntervalDefault until ctx is done (EventRetention -1: never).
// Every worker of a pool runs it; trimming by MINID is idempotent, so the
// duplicates cost one cheap command each.
func (w *Worker) janitorLoop(ctx context.Context) {
	if w.cfg.EventRetention < 0 {
		return
	}
	log := w.log.Named("janitor")
	t := time.NewTicker(EventTrimIntervalDefault)
	defer t.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		n, err := w.store.TrimEvents(ctx, w.now().Add(-w.cfg.EventRetention))
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("cannot trim events", "error", err)
			}
			continue
		}
		if n > 0 {
			log.Debug("trimmed events", "removed", n)
		}
	}
}
