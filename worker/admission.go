package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// Admission by Runpod's queue depth, pool-wide: the fetcher reads new
// submissions only while Runpod's own queue has room, so the backlog waits
// in the submissions stream (state SUBMITTED, no owner, no poll, cancellable
// without a Runpod call) instead of in Runpod's queue. The room is one for
// the whole pool, held in Redis (streams' admission_take.lua): every
// Interval one worker of the pool is elected to read /health, and the room
// it computes, Depth + idle GPU workers − jobs IN_QUEUE − jobs the pool
// admitted but has not sent yet (each worker reports its own), is shared by
// every worker's grants until the next reading. So N workers keep Runpod's
// queue at Depth, not N × Depth, and the pool reads /health once per
// Interval, not once per worker. Slack: grants taken but not yet admitted
// when the next reading is made, and jobs reclaimed from crashed workers
// (not gated).

// Defaults of Admission.
const (
	// AdmissionIntervalDefault is how often the pool reads /health.
	AdmissionIntervalDefault = time.Second
	// AdmissionEndpointDefault names the gate when Admission.Endpoint is
	// empty.
	AdmissionEndpointDefault = "default"
	// admissionHealthSlack is added to Interval to bound one /health read.
	admissionHealthSlack = 5 * time.Second
	// admissionStaleMin is the least age after which a worker's unsent
	// report stops counting (a worker that stopped).
	admissionStaleMin = 30 * time.Second
)

// EndpointLoad is the part of Runpod's /health that admission needs.
type EndpointLoad struct {
	InQueue     int // jobs IN_QUEUE on Runpod
	IdleWorkers int // GPU workers free to take a job now
}

// Admission configures admission by Runpod's queue depth. The zero value
// is off. Every worker of the pool must use the same Depth, Interval and
// Endpoint.
type Admission struct {
	// Depth is how many jobs Runpod may hold in its queue beyond its idle
	// GPU workers, for the whole pool. 0: admission off (the fetcher reads
	// whatever capacity allows).
	Depth int
	// Health reads the endpoint's load (cmd/worker passes
	// activities.Client.Health). Required with Depth.
	Health func(ctx context.Context) (EndpointLoad, error)
	// Interval is how often the pool reads /health (one worker per
	// Interval). Defaults to 1s.
	Interval time.Duration
	// Endpoint names the pool's gate in Redis: the Runpod endpoint id
	// (cmd/worker passes it). Defaults to "default".
	Endpoint string
}

func (a Admission) withDefaults() Admission {
	if a.Depth > 0 {
		if a.Interval == 0 {
			a.Interval = AdmissionIntervalDefault
		}
		if a.Endpoint == "" {
			a.Endpoint = AdmissionEndpointDefault
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
	case a.Interval < time.Millisecond:
		return errors.New("worker: Admission.Interval: must be at least 1ms")
	}
	return nil
}

func (a Admission) params() streams.AdmissionParams {
	return streams.AdmissionParams{EndpointID: a.Endpoint, Depth: a.Depth, Interval: a.Interval,
		ReadHold: a.Interval + admissionHealthSlack, Stale: max(admissionStaleMin, 10*a.Interval)}
}

// admissionState is what the worker last learned from the pool's gate.
type admissionState struct {
	room     atomic.Int64  // room left in Runpod's queue, as of the last grant
	waits    atomic.Uint64 // fetches that found no room
	reported atomic.Int64  // the unsent count last reported to the gate
}

// unsent counts owned jobs not yet on Runpod (no Runpod id).
func (w *Worker) unsent() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unsentN
}

// admissionGrant returns how many of n reserved slots may be filled with
// new submissions now, and the reading the grants came from (for
// admissionReturn); it returns the others to the capacity. With no room
// it waits (until the gate says to ask again, at most Interval, or ctx)
// and returns 0.
func (w *Worker) admissionGrant(ctx context.Context, n int) (int, string) {
	a := w.cfg.Admission
	if a.Depth == 0 || n == 0 {
		return n, ""
	}
	k, reading, wait := w.admissionTake(ctx, n)
	if k < n {
		w.mu.Lock()
		w.reserved -= n - k
		w.fetchReserved -= n - k
		w.mu.Unlock()
	}
	if k == 0 {
		w.admission.waits.Add(1)
		t := time.NewTimer(min(max(wait, time.Millisecond), a.Interval))
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return k, reading
}

// admissionReport tells the pool's gate this worker's unsent count, and
// gives n unused grants of reading back (a read found fewer new
// submissions than granted) so they are not lost until the next reading.
// A waiting fetch loop calls it with no grants when the count changed since
// the last report: it takes nothing, but the jobs it sent must stop counting
// against the next reading. Best effort: a failure only delays jobs to the
// next reading.
func (w *Worker) admissionReport(ctx context.Context, reading string, n int) {
	unsent := w.unsent()
	if n <= 0 && int64(unsent) == w.admission.reported.Load() {
		return
	}
	tctx, cancel := w.persistCtx(ctx)
	defer cancel()
	if _, err := w.store.AdmissionReport(tctx, w.cfg.Admission.params(), w.cfg.InstanceID, unsent, reading, max(0, n), time.Time{}); err != nil {
		w.log.Debug("admission: cannot report to the pool's gate; unused grants wait for the next reading", "error", err)
		return
	}
	w.admission.reported.Store(int64(unsent))
}

// admissionTake asks the pool's gate for up to n slots, reading /health
// first when the gate elects this worker. It returns the slots granted and
// the reading they came from, and with none how long to wait before asking
// again.
func (w *Worker) admissionTake(ctx context.Context, n int) (int, string, time.Duration) {
	a := w.cfg.Admission
	p := a.params()
	var reading *streams.AdmissionReading
	for range 2 {
		// The gate's times are Redis's (zero now): other workers compare them.
		tctx, cancel := w.persistCtx(ctx)
		unsent := w.unsent()
		g, err := w.store.AdmissionTake(tctx, p, w.cfg.InstanceID, unsent, n, reading, time.Time{})
		cancel()
		if err != nil {
			w.log.Debug("admission: cannot ask the pool's gate; admitting nothing for now", "error", err)
			return 0, "", a.Interval
		}
		w.admission.reported.Store(int64(unsent))
		if g.Read && reading == nil {
			hctx, cancel := context.WithTimeout(ctx, p.ReadHold)
			load, err := a.Health(hctx)
			cancel()
			if err != nil {
				w.log.Debug("admission: cannot read /health; admitting nothing until the next reading", "error", err)
			}
			reading = &streams.AdmissionReading{InQueue: load.InQueue, IdleWorkers: load.IdleWorkers, Failed: err != nil}
			continue
		}
		w.admission.room.Store(int64(g.Room))
		if g.Granted > 0 {
			return g.Granted, g.Reading, 0
		}
		return 0, "", g.Wait
	}
	return 0, "", a.Interval
}
