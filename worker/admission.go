package worker

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Admission by Runpod's queue depth: the fetcher reads new submissions only
// while Runpod's own queue has room, so the backlog waits in the
// submissions stream (state SUBMITTED, no owner, no poll, cancellable
// without a Runpod call) instead of in Runpod's queue. Room is read from
// /health every Interval: Depth + idle GPU workers − jobs IN_QUEUE, divided
// by Share. Per-worker approximation: each worker reads /health itself and
// takes its share of the room minus its own jobs not yet on Runpod, so
// with Share set to the number of workers the pool stays within Depth.
// Slack: /runs in flight while /health is read (sent, not yet counted by
// Runpod), jobs reclaimed from crashed workers (not gated), and the share's
// rounding.

// AdmissionIntervalDefault is how often a worker reads /health for admission.
const AdmissionIntervalDefault = time.Second

// EndpointLoad is the part of Runpod's /health that admission needs.
type EndpointLoad struct {
	InQueue     int // jobs IN_QUEUE on Runpod
	IdleWorkers int // GPU workers free to take a job now
}

// Admission configures admission by Runpod's queue depth. The zero value
// is off.
type Admission struct {
	// Depth is how many jobs Runpod may hold in its queue beyond its idle
	// GPU workers. 0: admission off (the fetcher reads whatever capacity
	// allows).
	Depth int
	// Health reads the endpoint's load (cmd/worker passes
	// activities.Client.Health). Required with Depth.
	Health func(ctx context.Context) (EndpointLoad, error)
	// Interval is how often /health is read. Defaults to 1s.
	Interval time.Duration
	// Share divides the room among the pool's workers: set it to their
	// number. Defaults to 1.
	Share int
}

func (a Admission) withDefaults() Admission {
	if a.Depth > 0 {
		if a.Interval == 0 {
			a.Interval = AdmissionIntervalDefault
		}
		if a.Share == 0 {
			a.Share = 1
		}
	}
	return a
}

func (a Admission) validate() error {
	switch {
	case a.Depth < 0:
		return errors.New("worker: Admission.Depth: must not be negative")
	case a.Depth == 0:
		return nil
	case a.Health == nil:
		return errors.New("worker: Admission.Health: required with Admission.Depth")
	case a.Interval <= 0:
		return errors.New("worker: Admission.Interval: must be positive")
	case a.Share < 1:
		return errors.New("worker: Admission.Share: must be at least 1")
	}
	return nil
}

// admissionGate holds the latest reading's room.
type admissionGate struct {
	mu     sync.Mutex
	readAt time.Time
	room   int
}

// unsent counts owned jobs not yet on Runpod (no Runpod id).
func (w *Worker) unsent() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, j := range w.jobs {
		if j.wf.RunpodID == "" {
			n++
		}
	}
	return n
}

// admissionGrant returns how many of n reserved slots may be filled with
// new submissions now; it returns the others to the capacity. With no room
// it waits (up to the next reading, or ctx) and returns 0.
func (w *Worker) admissionGrant(ctx context.Context, n int) int {
	a := w.cfg.Admission
	if a.Depth == 0 || n == 0 {
		return n
	}
	g := &w.admission
	g.mu.Lock()
	now := w.now()
	next := g.readAt.Add(a.Interval)
	if !now.Before(next) {
		hctx, cancel := context.WithTimeout(ctx, a.Interval+5*time.Second)
		load, err := a.Health(hctx)
		cancel()
		g.readAt, next = now, now.Add(a.Interval)
		if err != nil {
			g.room = 0
			w.log.Debug("admission: cannot read /health; admitting nothing until the next reading", "error", err)
		} else {
			// Jobs this worker admitted that are not on Runpod yet are not
			// in the reading: count them against the room.
			g.room = max(0, (a.Depth+load.IdleWorkers-load.InQueue)/a.Share-w.unsent())
		}
	}
	k := min(n, g.room)
	g.room -= k
	g.mu.Unlock()
	if k < n {
		w.mu.Lock()
		w.reserved -= n - k
		w.mu.Unlock()
	}
	if k == 0 {
		t := time.NewTimer(max(time.Until(next), time.Millisecond))
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return k
}
