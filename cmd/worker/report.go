package main

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/internal/cmdutil"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// reportEvery is how often the worker writes its report to {ns}:workers
// (client.StaleAfter marks a report older than 30 s stale); a variable so
// tests can shorten it.
var reportEvery = 5 * time.Second

// reporter writes the worker's self-report (in flight by state, Runpod
// calls, fault) for `submitter stats`, and removes it at a clean stop.
type reporter struct {
	store    *streams.Store
	sup      *supervisor
	m        *metrics
	instance string
	started  time.Time
	log      hclog.Logger
}

func (r *reporter) report(ctx context.Context) {
	st := r.sup.stats()
	rep := streams.WorkerReport{
		Instance: r.instance, Version: cmdutil.Version(), AtMs: time.Now().UnixMilli(),
		StartedMs: r.started.UnixMilli(), InFlight: st.InFlight,
		InFlightByState: map[string]int{}, RunpodCalls: r.m.callSnapshot(), Outcomes: map[string]uint64{},
	}
	for s, n := range st.InFlightByState {
		rep.InFlightByState[string(s)] = n
	}
	for s, n := range st.Finalized {
		rep.Outcomes[string(s)] = n
	}
	if r.sup.faulted() {
		rep.Fault = "Runpod refuses the API key or endpoint"
	}
	wctx, cancel := context.WithTimeout(ctx, pendingScrapeTimeout)
	defer cancel()
	if err := r.store.ReportWorker(wctx, rep); err != nil {
		r.log.Debug("cannot write the worker report", "error", err)
	}
}

// run reports every reportEvery until ctx ends, then removes the report.
func (r *reporter) run(ctx context.Context) error {
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	r.report(ctx)
	for {
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pendingScrapeTimeout)
			defer cancel()
			_ = r.store.RemoveWorker(rctx, r.instance)
			return nil
		case <-t.C:
			r.report(ctx)
		}
	}
}
