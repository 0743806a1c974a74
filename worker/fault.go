package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// A worker fault (workflow.ErrWorkerFault: Runpod refuses the API key or
// does not know the endpoint) is the worker's problem, not the jobs': every
// job would be refused the same way. The first one seen makes Run stop
// fetching and claiming and shut down as on a cancel, so the jobs it owns
// are handed to healthy workers (a handoff counts no delivery) instead of
// being failed; Run then returns an error wrapping workflow.ErrWorkerFault.

// checkFault looks at a Runpod call's error. A /status 404 ("job unknown")
// is confirmed with the endpoint checker first, because a wrong endpoint id
// answers 404 too; a confirmed worker fault replaces it. A worker fault
// stops the worker (once). It returns the error the workflow should see.
func (w *Worker) checkFault(ctx context.Context, err error) error {
	if errors.Is(err, workflow.ErrRunpodJobNotFound) {
		if ch, ok := w.cfg.Runpod.(workflow.EndpointChecker); ok {
			if cerr := ch.CheckEndpoint(ctx); workflow.IsWorkerFault(cerr) {
				err = fmt.Errorf("%w (and the endpoint check failed: %w)", err, cerr)
			}
		}
	}
	if workflow.IsWorkerFault(err) {
		w.fault(err)
	}
	return err
}

// fault records the first worker fault and starts the shutdown.
func (w *Worker) fault(err error) {
	w.halt(err, "Runpod refuses this worker's API key or endpoint: it stops taking jobs and hands "+
		"the ones it owns to the other workers; fix the configuration and restart it")
}

// halt records the first fault of this worker's own configuration (err,
// logged with msg) and starts the shutdown; Fault returns err.
func (w *Worker) halt(err error, msg string) {
	w.faultOnce.Do(func() {
		w.faultErr = err
		w.log.Error(msg, "error", err)
		close(w.faulted)
	})
}

// Fault returns the worker fault that stopped Run (wrapping
// workflow.ErrWorkerFault, or streams.ErrPartitionsMismatch when the
// namespace's partition count changed while it ran), or nil.
func (w *Worker) Fault() error {
	select {
	case <-w.faulted:
		return w.faultErr
	default:
		return nil
	}
}

// CheckEndpoint lets checkFault reach the endpoint checker of the Runpod
// client that observedRunpod wraps (nil when it has none: nothing known).
func (o observedRunpod) CheckEndpoint(ctx context.Context) error {
	if c, ok := o.Runpod.(workflow.EndpointChecker); ok {
		return c.CheckEndpoint(ctx)
	}
	return nil
}
