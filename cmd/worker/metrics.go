package main

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Metric names. Every metric this command exports shares metricPrefix;
// docs/operations.md lists them (a test keeps the two in step).
const (
	metricPrefix = "runpod_orchestrator_"

	metricJobTransitions   = metricPrefix + "jobs_transitions_total"
	metricJobOutcomes      = metricPrefix + "jobs_outcomes_total"
	metricJobsInFlight     = metricPrefix + "jobs_in_flight"
	metricRunpodCalls      = metricPrefix + "runpod_calls_total"
	metricRunpodDuration   = metricPrefix + "runpod_call_duration_seconds"
	metricBreakerState     = metricPrefix + "breaker_state"
	metricBreakerChanges   = metricPrefix + "breaker_transitions_total"
	metricPendingEntries   = metricPrefix + "pending_entries"
	metricPendingScrapeErr = metricPrefix + "pending_entries_scrape_errors_total"
	metricReclaims         = metricPrefix + "reclaims_total"
	metricLeaseLosses      = metricPrefix + "lease_losses_total"
	metricPoison           = metricPrefix + "poison_total"
	metricWorkerFault      = metricPrefix + "worker_fault"
	metricGroupRecreated   = metricPrefix + "consumer_group_recreated_total"
)

// metricNames lists every metric above, for the documentation test.
var metricNames = []string{
	metricJobTransitions, metricJobOutcomes, metricJobsInFlight, metricRunpodCalls,
	metricRunpodDuration, metricBreakerState, metricBreakerChanges, metricPendingEntries,
	metricPendingScrapeErr, metricReclaims, metricLeaseLosses, metricPoison, metricWorkerFault,
	metricGroupRecreated,
}

// pendingScrapeTimeout bounds the Redis call a scrape makes for
// pending_entries, so a slow Redis cannot hang Prometheus.
const pendingScrapeTimeout = time.Second

// breakerValue maps a breaker state to the breaker_state gauge.
func breakerValue(state string) float64 {
	switch state {
	case "half-open":
		return 1
	case "open":
		return 2
	}
	return 0 // closed (and anything unknown: not alarming by default)
}

// metrics is the Prometheus side of the worker's and the Runpod client's
// hooks. It has a private registry, so tests can run several in one process.
// Every hook only updates a counter or gauge: none blocks.
type metrics struct {
	reg *prometheus.Registry

	transitions    *prometheus.CounterVec
	outcomes       *prometheus.CounterVec
	calls          *prometheus.CounterVec
	callDuration   *prometheus.HistogramVec
	breakerChanges *prometheus.CounterVec
	reclaims       prometheus.Counter
	leaseLosses    prometheus.Counter
	poison         prometheus.Counter
	groupRecreated prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricJobTransitions,
			Help: "Job state changes made by this worker, by from and to state.",
		}, []string{"from", "to"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricJobOutcomes,
			Help: "Terminal outcomes written by this worker, by state.",
		}, []string{"state"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricRunpodCalls,
			Help: "Runpod API calls (retries included in one call), by operation and outcome.",
		}, []string{"op", "outcome"}),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricRunpodDuration,
			Help:    "Duration of Runpod API calls, retries and backoff included, by operation.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"op"}),
		breakerChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricBreakerChanges,
			Help: "Changes of the Runpod circuit breaker's state, by new state.",
		}, []string{"to"}),
		reclaims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricReclaims,
			Help: "Jobs this worker took over from other workers (crashed or shut down).",
		}),
		leaseLosses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricLeaseLosses,
			Help: "Jobs this worker dropped because another worker took them over.",
		}),
		poison: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPoison,
			Help: "Submissions this worker failed and dead-lettered as poison.",
		}),
		groupRecreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricGroupRecreated,
			Help: "Times this worker found the consumer group missing (NOGROUP: Redis lost data) and recreated it.",
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.transitions, m.outcomes, m.calls, m.callDuration, m.breakerChanges,
		m.reclaims, m.leaseLosses, m.poison, m.groupRecreated,
	)
	// Pre-create the series a dashboard expects, so they read 0, not absent.
	for _, st := range []workflow.State{workflow.StateCompleted, workflow.StateFailed, workflow.StateTimedOut, workflow.StateCanceled} {
		m.outcomes.WithLabelValues(string(st))
	}
	for _, st := range []string{"closed", "half-open", "open"} {
		m.breakerChanges.WithLabelValues(st)
	}
	return m
}

// hooks returns the worker hooks that feed the metrics.
func (m *metrics) hooks() worker.Hooks {
	return worker.Hooks{
		OnTransition: func(_ string, from, to workflow.State) {
			f := string(from)
			if f == "" {
				f = "NONE"
			}
			m.transitions.WithLabelValues(f, string(to)).Inc()
		},
		OnOutcome: func(_ string, st workflow.State) { m.outcomes.WithLabelValues(string(st)).Inc() },
		OnReclaim: func(n int) { m.reclaims.Add(float64(n)) },
		// Neither the job id nor the poison reason becomes a label: both
		// are unbounded.
		OnLeaseLost: func(string) { m.leaseLosses.Inc() },
		OnPoison:    func(string) { m.poison.Inc() },
		// Redis lost the consumer group: alert on any increase.
		OnGroupRecreated: func() { m.groupRecreated.Inc() },
	}
}

// onCall is the Runpod client's OnCall hook.
func (m *metrics) onCall(op, outcome string, d time.Duration) {
	m.calls.WithLabelValues(op, outcome).Inc()
	m.callDuration.WithLabelValues(op).Observe(d.Seconds())
}

// onBreakerStateChange is the Runpod client's OnBreakerStateChange hook; it
// runs under the breaker's lock, so it only counts.
func (m *metrics) onBreakerStateChange(_ string, _, to string) {
	m.breakerChanges.WithLabelValues(to).Inc()
}

// observe registers the gauges read at scrape time: jobs in flight from the
// worker, the breaker's state from the client, and the pending entries of
// the consumer group from Redis.
func (m *metrics) observe(stats func() worker.Stats, breaker func() string,
	pending func(context.Context) (int64, error), log hclog.Logger) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: metricJobsInFlight,
			Help: "Jobs this worker owns now.",
		}, func() float64 { return float64(stats().InFlight) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: metricBreakerState,
			Help: "Runpod circuit breaker state: 0 closed, 1 half-open, 2 open.",
		}, func() float64 { return breakerValue(breaker()) }),
		&pendingCollector{pending: pending, log: log,
			desc: prometheus.NewDesc(metricPendingEntries,
				"Entries delivered to the namespace's consumer group and not yet acknowledged (all workers).",
				nil, nil),
			errors: prometheus.NewCounter(prometheus.CounterOpts{
				Name: metricPendingScrapeErr,
				Help: "Scrapes that could not read pending_entries from Redis.",
			}),
		},
	)
}

// observeFault registers worker_fault: 1 while Runpod refuses the worker's
// key or endpoint and the worker takes no jobs.
func (m *metrics) observeFault(faulted func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricWorkerFault,
		Help: "1 while Runpod refuses this worker's API key or endpoint (it takes no jobs and is unready), else 0.",
	}, func() float64 {
		if faulted() {
			return 1
		}
		return 0
	}))
}

// pendingCollector reads the pending-entries count from Redis on each
// scrape, bounded by pendingScrapeTimeout. When Redis does not answer, the
// gauge is left out of that scrape and the error counter goes up.
type pendingCollector struct {
	pending func(context.Context) (int64, error)
	desc    *prometheus.Desc
	errors  prometheus.Counter
	log     hclog.Logger
}

func (c *pendingCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	c.errors.Describe(ch)
}

func (c *pendingCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), pendingScrapeTimeout)
	defer cancel()
	n, err := c.pending(ctx)
	if err != nil {
		c.errors.Inc()
		c.log.Debug("cannot read pending entries for /metrics", "error", err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
	}
	c.errors.Collect(ch)
}
