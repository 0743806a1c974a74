package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// startCheckTimeout bounds the Runpod check at start-up: an unreachable
// Runpod must not hold the worker back (jobs wait, the breaker guards).
const startCheckTimeout = 10 * time.Second

// faultRecheckEvery is how often a faulted worker asks Runpod again whether
// it accepts the key and endpoint; a variable so tests can shorten it.
var faultRecheckEvery = 30 * time.Second

// checkRunpod calls GET /health once. A refused key (401/403) or an unknown
// endpoint (404) is a configuration mistake reported under its flag (exit
// status 2); any other failure is logged and start-up goes on.
func checkRunpod(ctx context.Context, rp *activities.Client, log hclog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, startCheckTimeout)
	defer cancel()
	err := rp.CheckEndpoint(cctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, activities.ErrUnauthorized):
		return &flagError{Flag: "runpod-api-key", Msg: "Runpod refused the API key (GET /health answered 401 or 403)"}
	case workflow.IsWorkerFault(err):
		return &flagError{Flag: "runpod-endpoint-id", Msg: "Runpod does not know this endpoint (GET /health answered 404)"}
	}
	log.Warn("cannot check the Runpod endpoint at start; going on", "error", err)
	return nil
}

// listenHTTP listens on addr. When the address is the default (not set by
// flag or environment) and taken, say by another worker on the same host,
// it falls back to a free port on the same interface and says where.
func listenHTTP(addr string, explicit bool, log hclog.Logger) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	if explicit {
		return nil, &flagError{Flag: "http-addr", Msg: fmt.Sprintf("cannot listen: %v", err)}
	}
	host, _, _ := net.SplitHostPort(addr)
	ln, ferr := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if ferr != nil {
		return nil, &flagError{Flag: "http-addr", Msg: fmt.Sprintf("cannot listen: %v", err)}
	}
	log.Warn("the default --http-addr is in use (another worker on this host?); serving /metrics, /healthz and /readyz on a free port instead",
		"default", addr, "http_addr", ln.Addr().String())
	return ln, nil
}

// supervisor runs the worker and handles a worker fault (Runpod refuses the
// key or endpoint): the worker has handed its jobs off and stopped, so the
// process stays up, unready, and asks Runpod again every faultRecheckEvery;
// once Runpod accepts the configuration, a new worker starts.
type supervisor struct {
	newWorker func() (*worker.Worker, error)
	check     func(context.Context) error
	// startCheck runs once before the first worker starts; its error ends run.
	startCheck func(context.Context) error
	log        hclog.Logger

	mu      sync.Mutex
	cur     *worker.Worker
	fault   bool
	running bool // the start-up check is over
}

// started reports that the start-up check is over (readiness).
func (s *supervisor) started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

func (s *supervisor) stats() worker.Stats {
	s.mu.Lock()
	w := s.cur
	s.mu.Unlock()
	return w.Stats()
}

func (s *supervisor) faulted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fault
}

func (s *supervisor) run(ctx context.Context) error {
	if s.startCheck != nil {
		if err := s.startCheck(ctx); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.running = true
	s.mu.Unlock()
	for {
		s.mu.Lock()
		w := s.cur
		s.mu.Unlock()
		err := w.Run(ctx)
		switch {
		case workflow.IsWorkerFault(err):
		case err != nil:
			return fmt.Errorf("worker: %w", err)
		case ctx.Err() == nil:
			return errors.New("worker stopped unexpectedly")
		default:
			return nil
		}
		s.mu.Lock()
		s.fault = true
		s.mu.Unlock()
		if !s.waitHealthy(ctx) {
			return nil
		}
		next, err := s.newWorker()
		if err != nil {
			return fmt.Errorf("worker: restart after a worker fault: %w", err)
		}
		s.mu.Lock()
		s.cur, s.fault = next, false
		s.mu.Unlock()
		s.log.Info("Runpod accepts the API key and endpoint again; taking jobs again", "instance_id", next.InstanceID())
	}
}

// waitHealthy asks Runpod every faultRecheckEvery until it accepts the
// configuration (true) or ctx ends (false).
func (s *supervisor) waitHealthy(ctx context.Context) bool {
	t := time.NewTicker(faultRecheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, startCheckTimeout)
		err := s.check(cctx)
		cancel()
		if err == nil {
			return true
		}
		if workflow.IsWorkerFault(err) {
			s.log.Error("Runpod still refuses the API key or endpoint; not taking jobs", "error", err)
		} else {
			s.log.Warn("cannot check the Runpod endpoint; will ask again", "error", err)
		}
	}
}
