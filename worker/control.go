package worker

import (
	"context"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// controlLoop listens to the control channel until ctx is done: "cancel
// <id>" wakes an owned job at once (its step re-reads the record's cancel
// flag, which is the truth), "handoff" triggers an immediate claim pass.
// Messages are hints; a subscription lost to a Redis error is re-made, and a
// missed cancel is still seen at the next heartbeat (the cancel log).
//
// Each served partition has its own channel and loop.
func (w *Worker) controlLoop(ctx context.Context, part int) {
	log := w.log.Named("control")
	if len(w.store.all) > 1 {
		log = log.With("partition", part)
	}
	var b backoff
	for ctx.Err() == nil {
		ch, err := w.store.all[part].SubscribeControl(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("cannot subscribe to the control channel; retrying", "error", err)
			if !b.wait(ctx) {
				return
			}
			continue
		}
		b.reset()
		for m := range ch {
			switch m.Kind {
			case streams.ControlCancel:
				w.wakeForCancel(m.JobID)
			case streams.ControlHandoff:
				select {
				case w.claimNow <- struct{}{}:
				default:
				}
			}
		}
		if ctx.Err() == nil {
			log.Debug("control subscription ended; resubscribing")
		}
	}
}

// wakeForCancel makes an owned job due now with a cancel re-check.
func (w *Worker) wakeForCancel(jobID string) { w.wake(jobID, false) }

// wakeToRead is wakeForCancel whose step also reads Runpod at once (a
// webhook left the outcome to the owner's read).
func (w *Worker) wakeToRead(jobID string) { w.wake(jobID, true) }

func (w *Worker) wake(jobID string, read bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.admitting[jobID] > 0 {
		// The admit in progress may return a record older than what woke
		// us (a cancel logged after admit.lua read it), for a job not held
		// yet: adopt applies the wake. A hint or log entry is read once.
		w.admitWakes[jobID] = w.admitWakes[jobID] || read
	}
	j := w.jobs[jobID]
	if j == nil {
		return
	}
	j.checkCancel = true
	j.readNow = j.readNow || read
	j.hints++
	if j.running {
		j.wake = true
		return
	}
	w.scheduleLocked(j, w.now())
}
