package main

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// dashboardPath is where --dashboard serves the web dashboard.
const dashboardPath = "/dashboard"

// readyPingTimeout bounds the Redis PING of /readyz.
const readyPingTimeout = time.Second

// readiness holds what /readyz checks.
type readiness struct {
	// ping checks Redis.
	ping func(context.Context) error
	// breaker returns the Runpod circuit breaker's state.
	breaker func() string
	// fault reports that Runpod refuses the worker's key or endpoint (the
	// worker stopped taking jobs); nil = never.
	fault func() bool
	// started reports that the start-up check is over and the worker runs;
	// nil = from the start.
	started func() bool
}

// readyBody is /readyz's JSON answer.
type readyBody struct {
	Status  string            `json:"status"`            // "ready" or "unready"
	Failing []string          `json:"failing,omitempty"` // names of the failing checks
	Checks  map[string]string `json:"checks"`            // check → "ok" or what is wrong
}

// newMux serves /metrics from reg, /healthz (the process answers) and
// /readyz (start-up is over, Redis answers PING within a second, the Runpod
// circuit is not open and Runpod accepts the key and endpoint). Neither body carries an error text from Redis or Runpod, so
// nothing secret can leak through them.
func newMux(reg *prometheus.Registry, ready readiness, log hclog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      hclogPrinter{log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg, // promhttp's own error counters
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		body := readyBody{Status: "ready", Checks: map[string]string{}}
		if ready.started != nil && !ready.started() {
			// Until the key and endpoint are checked the worker may yet
			// refuse to start.
			body.Checks["startup"] = "checking the Runpod key and endpoint"
			body.Failing = append(body.Failing, "startup")
		}
		ctx, cancel := context.WithTimeout(r.Context(), readyPingTimeout)
		defer cancel()
		if err := ready.ping(ctx); err != nil {
			body.Checks["redis"] = "unreachable"
			body.Failing = append(body.Failing, "redis")
		} else {
			body.Checks["redis"] = "ok"
		}
		if st := ready.breaker(); st == "open" {
			body.Checks["runpod_breaker"] = "open"
			body.Failing = append(body.Failing, "runpod_breaker")
		} else {
			body.Checks["runpod_breaker"] = "ok (" + st + ")"
		}
		if ready.fault != nil && ready.fault() {
			body.Checks["runpod_config"] = "refused (API key or endpoint)"
			body.Failing = append(body.Failing, "runpod_config")
		} else {
			body.Checks["runpod_config"] = "ok"
		}
		code := http.StatusOK
		if len(body.Failing) > 0 {
			body.Status, code = "unready", http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
	return mux
}

// hclogPrinter adapts hclog to promhttp's ErrorLog.
type hclogPrinter struct{ log hclog.Logger }

func (p hclogPrinter) Println(v ...any) {
	p.log.Warn("metrics handler error", "error", v)
}
