package worker

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Pacing: when Config.Runpod implements workflow.Pacer (activities.Client
// does), every Runpod call first reserves its budget without waiting. A call
// with no budget left is not waited for inside the executor slot: the job is
// rescheduled at the time the budget says, and the slot goes to the next
// due job, whatever its operation. Each operation has its own budget, so a
// burst of one (a /cancel storm at a shared deadline) defers only itself
// while polls and submits go on. A deferral is not a failure: nothing was
// sent, and the job's retry count and backoff are untouched.

// paceOps maps an action to the Runpod operation it calls.
var paceOps = [...]string{
	workflow.ActSubmit: workflow.OpRun,
	workflow.ActPoll:   workflow.OpStatus,
	workflow.ActCancel: workflow.OpCancel,
	workflow.ActStream: workflow.OpStream,
}

// paceIndex is the index of op in the deferred counters.
func paceIndex(op string) int {
	switch op {
	case workflow.OpRun:
		return 0
	case workflow.OpStatus, workflow.OpStream:
		return 1 // /stream is a read of the job, counted with /status
	}
	return 2
}

// pace reserves the budget of a's Runpod call. It returns the ctx to make
// the call with (marked as reserved) and ok; or, with no budget left, ok
// false and the time the job is due again.
func (w *Worker) pace(ctx context.Context, jobID string, a workflow.Action, rnd *rand.Rand) (context.Context, time.Time, bool) {
	p, isPacer := w.cfg.Runpod.(workflow.Pacer)
	if !isPacer || int(a.Kind) >= len(paceOps) || paceOps[a.Kind] == "" {
		return ctx, time.Time{}, true
	}
	op := paceOps[a.Kind]
	d := p.Reserve(ctx, op)
	if d <= 0 {
		return workflow.WithReserved(ctx), time.Time{}, true
	}
	// Up to 10% later, so jobs deferred to the same refill do not all come
	// back at the same instant.
	d += time.Duration(rnd.Int64N(int64(d)/10 + 1))
	w.stats.deferred[paceIndex(op)].Add(1)
	if w.cfg.Hooks.OnDeferred != nil {
		w.cfg.Hooks.OnDeferred(jobID, op, d)
	}
	return ctx, w.now().Add(d), false
}

// RedactJSON forwards to the wrapped Runpod's Redactor (b unchanged
// without one).
func (o observedRunpod) RedactJSON(b []byte) []byte {
	if r, ok := o.Runpod.(workflow.Redactor); ok {
		return r.RedactJSON(b)
	}
	return b
}

// StreamChunks forwards to the wrapped Runpod's Streamer (the worker only
// asks when it has one: Worker.streaming).
func (o observedRunpod) StreamChunks(ctx context.Context, id string) (workflow.RunpodStream, error) {
	return o.Runpod.(workflow.Streamer).StreamChunks(ctx, id)
}

// Reserve forwards to the wrapped Runpod's Pacer, so the exec-time wrapper
// (pollest.go) does not hide pacing; a Runpod without one is never deferred.
func (o observedRunpod) Reserve(ctx context.Context, op string) time.Duration {
	if p, ok := o.Runpod.(workflow.Pacer); ok {
		return p.Reserve(ctx, op)
	}
	return 0
}

// streaming reports whether jobs are read with /stream: Config.Streaming
// and a Runpod that can.
func (w *Worker) streaming() bool {
	if !w.cfg.Streaming {
		return false
	}
	if o, ok := w.cfg.Runpod.(observedRunpod); ok {
		_, ok = o.Runpod.(workflow.Streamer)
		return ok
	}
	_, ok := w.cfg.Runpod.(workflow.Streamer)
	return ok
}
