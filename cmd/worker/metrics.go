package main

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/yourscope/runpod-orchestrator/streams"
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
	metricInFlightByState  = metricPrefix + "jobs_in_flight_by_state"
	metricBacklog          = metricPrefix + "queue_backlog"
	metricOldestWaiting    = metricPrefix + "queue_oldest_waiting_seconds"
	metricDeadLetters      = metricPrefix + "queue_dead_letters"
	metricConsumers        = metricPrefix + "queue_consumers"
	metricConsumersActive  = metricPrefix + "queue_consumers_active"
	metricOrphanCancels    = metricPrefix + "orphan_cancels_total"
	metricSubmitUncertain  = metricPrefix + "submit_uncertain_total"
	metricCallsDeferred    = metricPrefix + "runpod_calls_deferred_total"
	metricBudgetFactor     = metricPrefix + "runpod_budget_factor"
)

// metricNames lists every metric above, for the documentation test.
var metricNames = []string{
	metricJobTransitions, metricJobOutcomes, metricJobsInFlight, metricRunpodCalls,
	metricRunpodDuration, metricBreakerState, metricBreakerChanges, metricPendingEntries,
	metricPendingScrapeErr, metricReclaims, metricLeaseLosses, metricPoison, metricWorkerFault,
	metricGroupRecreated, metricInFlightByState, metricBacklog, metricOldestWaiting, metricDeadLetters,
	metricConsumers, metricConsumersActive, metricOrphanCancels, metricSubmitUncertain,
	metricCallsDeferred, metricBudgetFactor,
}

// consumerActiveWithin: a consumer that read or claimed this recently
// counts as active (a live worker reads every fraction of a second).
const consumerActiveWithin = time.Minute

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

	// callCounts mirrors runpod_calls_total for the worker's report
	// ({ns}:workers, `submitter stats`).
	countMu    sync.Mutex
	callCounts map[string]map[string]uint64

	transitions    *prometheus.CounterVec
	outcomes       *prometheus.CounterVec
	calls          *prometheus.CounterVec
	callDuration   *prometheus.HistogramVec
	breakerChanges *prometheus.CounterVec
	reclaims       prometheus.Counter
	leaseLosses    prometheus.Counter
	poison         prometheus.Counter
	uncertain      prometheus.Counter
	groupRecreated prometheus.Counter
	orphanCancels  *prometheus.CounterVec
	deferred       *prometheus.CounterVec
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
		uncertain: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricSubmitUncertain,
			Help: "Possible duplicate GPU jobs: /run attempts this worker recorded with an unknown outcome " +
				"(an uncertain answer, or a takeover inside the /run window); each may have created a Runpod job nobody tracks.",
		}),
		groupRecreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricGroupRecreated,
			Help: "Times this worker found the consumer group missing (NOGROUP: Redis lost data) and recreated it.",
		}),
		orphanCancels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricOrphanCancels,
			Help: "Cancels of orphan Runpod jobs (created, not recorded on their job), by result: canceled, or failed (recorded and retried).",
		}, []string{"result"}),
		deferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricCallsDeferred,
			Help: "Runpod calls rescheduled (not sent, not failed) because their operation's budget or the open circuit had nothing left, by operation.",
		}, []string{"op"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.transitions, m.outcomes, m.calls, m.callDuration, m.breakerChanges,
		m.reclaims, m.leaseLosses, m.poison, m.groupRecreated, m.orphanCancels, m.uncertain, m.deferred,
	)
	for _, op := range []string{workflow.OpRun, workflow.OpStatus, workflow.OpCancel} {
		m.deferred.WithLabelValues(op)
	}
	// Pre-create the series a dashboard expects, so they read 0, not absent.
	for _, st := range []workflow.State{workflow.StateCompleted, workflow.StateFailed, workflow.StateTimedOut, workflow.StateCanceled} {
		m.outcomes.WithLabelValues(string(st))
	}
	for _, st := range []string{"closed", "half-open", "open"} {
		m.breakerChanges.WithLabelValues(st)
	}
	for _, r := range []string{"canceled", "failed"} {
		m.orphanCancels.WithLabelValues(r)
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
		// A Runpod job that may run untracked (and bill): alert on a rate.
		OnSubmitUncertain: func(string, int) { m.uncertain.Inc() },
		// Redis lost the consumer group: alert on any increase.
		OnGroupRecreated: func() { m.groupRecreated.Inc() },
		OnOrphanCancel: func(canceled bool) {
			r := "failed"
			if canceled {
				r = "canceled"
			}
			m.orphanCancels.WithLabelValues(r).Inc()
		},
		OnDeferred: func(_, op string, _ time.Duration) { m.deferred.WithLabelValues(op).Inc() },
	}
}

// onCall is the Runpod client's OnCall hook.
func (m *metrics) onCall(op, outcome string, d time.Duration) {
	m.countMu.Lock()
	if m.callCounts == nil {
		m.callCounts = map[string]map[string]uint64{}
	}
	if m.callCounts[op] == nil {
		m.callCounts[op] = map[string]uint64{}
	}
	m.callCounts[op][outcome]++
	m.countMu.Unlock()
	m.calls.WithLabelValues(op, outcome).Inc()
	m.callDuration.WithLabelValues(op).Observe(d.Seconds())
}

// onBreakerStateChange is the Runpod client's OnBreakerStateChange hook; it
// runs under the breaker's lock, so it only counts.
func (m *metrics) onBreakerStateChange(_ string, _, to string) {
	m.breakerChanges.WithLabelValues(to).Inc()
}

// observe registers the gauges read at scrape time: jobs in flight from the
// worker, the breaker's state from the client, and the namespace's queue
// (pending entries, backlog, oldest waiting submission, dead letters,
// consumers) from Redis.
func (m *metrics) observe(stats func() worker.Stats, breaker func() string,
	queue func(context.Context) (streams.QueueInfo, error), log hclog.Logger) {
	gauge := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: metricJobsInFlight,
			Help: "Jobs this worker owns now.",
		}, func() float64 { return float64(stats().InFlight) }),
		&byStateCollector{stats: stats, desc: gauge(metricInFlightByState,
			"Jobs this worker owns now, by state (SUBMITTED, QUEUED, IN_PROGRESS).", "state")},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: metricBreakerState,
			Help: "Runpod circuit breaker state: 0 closed, 1 half-open, 2 open.",
		}, func() float64 { return breakerValue(breaker()) }),
		&queueCollector{queue: queue, log: log,
			pending: gauge(metricPendingEntries,
				"Entries delivered to the namespace's consumer group and not yet acknowledged (all workers)."),
			backlog: gauge(metricBacklog,
				"Submissions of the namespace no worker has read yet."),
			oldest: gauge(metricOldestWaiting,
				"Age of the oldest submission no worker has read yet (0 when none)."),
			dead: gauge(metricDeadLetters,
				"Entries in the namespace's dead-letter stream."),
			consumers: gauge(metricConsumers,
				"Consumers (workers, live or gone) of the namespace's group."),
			active: gauge(metricConsumersActive,
				"Consumers that read or claimed within the last minute."),
			errors: prometheus.NewCounter(prometheus.CounterOpts{
				Name: metricPendingScrapeErr,
				Help: "Scrapes that could not read the queue gauges (pending_entries, queue_*) from Redis.",
			}),
		},
	)
}

// byStateCollector reports the owned jobs by state at scrape time.
type byStateCollector struct {
	stats func() worker.Stats
	desc  *prometheus.Desc
}

func (c *byStateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *byStateCollector) Collect(ch chan<- prometheus.Metric) {
	by := c.stats().InFlightByState
	for _, st := range []workflow.State{workflow.StateSubmitted, workflow.StateQueued, workflow.StateInProgress} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(by[st]), string(st))
	}
}

// queueCollector reads the namespace's queue from Redis on each scrape,
// bounded by pendingScrapeTimeout (one MULTI and at most one XRANGE). When
// Redis does not answer, the gauges are left out of that scrape and the
// error counter goes up.
type queueCollector struct {
	queue                                             func(context.Context) (streams.QueueInfo, error)
	pending, backlog, oldest, dead, consumers, active *prometheus.Desc
	errors                                            prometheus.Counter
	log                                               hclog.Logger
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.backlog, c.oldest, c.dead, c.consumers, c.active} {
		ch <- d
	}
	c.errors.Describe(ch)
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), pendingScrapeTimeout)
	defer cancel()
	q, err := c.queue(ctx)
	if err != nil {
		c.errors.Inc()
		c.log.Debug("cannot read the queue for /metrics", "error", err)
		c.errors.Collect(ch)
		return
	}
	oldest := 0.0
	if q.OldestWaitingMs > 0 {
		oldest = max(0, time.Since(time.UnixMilli(q.OldestWaitingMs)).Seconds())
	}
	active := 0
	for _, cs := range q.Consumers {
		if cs.Idle < consumerActiveWithin {
			active++
		}
	}
	for _, v := range []struct {
		d *prometheus.Desc
		x float64
	}{{c.pending, float64(q.Pending)}, {c.backlog, float64(q.Backlog)}, {c.oldest, oldest},
		{c.dead, float64(q.DeadLetters)}, {c.consumers, float64(len(q.Consumers))}, {c.active, float64(active)}} {
		ch <- prometheus.MustNewConstMetric(v.d, prometheus.GaugeValue, v.x)
	}
	c.errors.Collect(ch)
}

// callSnapshot copies the Runpod call counts.
func (m *metrics) callSnapshot() map[string]map[string]uint64 {
	m.countMu.Lock()
	defer m.countMu.Unlock()
	out := make(map[string]map[string]uint64, len(m.callCounts))
	for op, outs := range m.callCounts {
		out[op] = maps.Clone(outs)
	}
	return out
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

// observeBudget registers the pool budget's factor per operation: 1 at
// full budget, lower after Runpod answered 429 (recovering gradually).
func (m *metrics) observeBudget(factor func(op string) float64) {
	for _, op := range []string{workflow.OpRun, workflow.OpStatus, workflow.OpCancel} {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        metricBudgetFactor,
			Help:        "Share of the pool's Runpod budget in use, as this worker last saw it: 1 full, lower after a 429.",
			ConstLabels: prometheus.Labels{"op": op},
		}, func() float64 { return factor(op) }))
	}
}
