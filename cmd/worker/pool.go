package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	okrun "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Settings for running the pool at scale: webhook completion. Kept apart
// from config.go so they read as one feature.

const (
	groupPool      = "webhooks"
	groupAdmission = "admission by Runpod's queue depth"
	// webhookPath is the handler's path when --webhook-url is derived from
	// --webhook-listen.
	webhookPath = "/runpod/webhook"
	// webhookPlaceholderURL stands in for a --webhook-url derived from the
	// listener, when the configuration is validated before listening.
	webhookPlaceholderURL = "http://webhook.invalid" + webhookPath

	metricWebhooks       = metricPrefix + "webhooks_total"
	metricAdmissionRoom  = metricPrefix + "admission_room"
	metricAdmissionWaits = metricPrefix + "admission_waits_total"
)

func init() {
	metricNames = append(metricNames, metricWebhooks, metricAdmissionRoom, metricAdmissionWaits)
	fieldFlags["worker: Webhook.URL"] = "webhook-url"
	fieldFlags["worker: Webhook.Key"] = "webhook-key"
	fieldFlags["worker: Webhook.PollInterval"] = "webhook-poll-interval"
	fieldFlags["worker: Admission.Depth"] = "admission-depth"
	fieldFlags["worker: Admission.Interval"] = "admission-interval"
}

// poolOptions are the options of this file (embedded in options).
type poolOptions struct {
	webhookListen       string
	webhookURL          string
	webhookKey          string
	webhookPollInterval time.Duration
	admissionDepth      int
	admissionInterval   time.Duration
}

func (o *options) addPoolFlags(t *flagTable) {
	t.add(groupPool, "webhook-listen", "ADDR",
		"serve Runpod's completion webhooks on this address and send a per-job webhook URL with every /run; empty: webhooks off",
		"", &stringValue{p: &o.webhookListen})
	t.add(groupPool, "webhook-url", "URL",
		"the URL Runpod reaches --webhook-listen at (behind a proxy or NAT); empty: http://<listen address>"+webhookPath,
		"", &stringValue{p: &o.webhookURL})
	t.add(groupPool, "webhook-key", "KEY",
		"pool-wide secret (at least 16 bytes) the per-job webhook tokens are HMACs with; the same on every worker; never logged or printed",
		"", &stringValue{p: &o.webhookKey}).secret = true
	t.add(groupPool, "webhook-poll-interval", "DURATION",
		"with webhooks on, the slow fallback /status poll interval (at most --poll-horizon)",
		worker.WebhookPollIntervalDefault.String(),
		&durationValue{p: &o.webhookPollInterval, min: 100 * time.Millisecond, max: time.Hour})
	t.add(groupAdmission, "admission-depth", "N",
		"keep at most N jobs in Runpod's queue beyond its idle GPU workers, for the whole pool; the rest waits in the stream (0 = off)",
		"0", &intValue{p: &o.admissionDepth, min: 0, max: 1_000_000})
	t.add(groupAdmission, "admission-interval", "DURATION",
		"how often the pool reads Runpod's /health for admission (one worker per interval)",
		worker.AdmissionIntervalDefault.String(), &durationValue{p: &o.admissionInterval, min: 10 * time.Millisecond, max: time.Minute})
}

// checkPool applies the rules between this file's flags.
func (o *options) checkPool(sources map[string]string) error {
	if o.admissionDepth == 0 && sources["admission-interval"] == sourceFlag {
		return &flagError{Flag: "admission-interval", Msg: "only applies with --admission-depth"}
	}
	if o.webhookListen == "" {
		for _, name := range []string{"webhook-url", "webhook-key", "webhook-poll-interval"} {
			if sources[name] == sourceFlag {
				return &flagError{Flag: name, Msg: "only applies with --webhook-listen"}
			}
		}
		return nil
	}
	if o.webhookKey == "" {
		return &flagError{Flag: "webhook-key", Msg: "required with --webhook-listen (or set RUNPOD_WEBHOOK_KEY)"}
	}
	return nil
}

// poolWorkerConfig sets this file's fields of cfg. webhookURL is the
// resolved URL ("" before the listener exists: a placeholder is validated).
func (o *options) poolWorkerConfig(cfg *worker.Config, webhookURL string) {
	if o.admissionDepth > 0 {
		cfg.Admission = worker.Admission{Depth: o.admissionDepth, Interval: o.admissionInterval,
			Health: admissionHealth(cfg.Runpod)}
	}
	if o.webhookListen == "" {
		return
	}
	if webhookURL == "" {
		webhookURL = o.webhookURL
	}
	if webhookURL == "" {
		webhookURL = webhookPlaceholderURL
	}
	cfg.Webhook = worker.Webhook{URL: webhookURL, Key: worker.SecretKey(o.webhookKey),
		PollInterval: o.webhookPollInterval}
}

// webhookListener opens --webhook-listen and returns the listener and the
// URL to send with /run; nil and "" with webhooks off.
func (o *options) webhookListener() (net.Listener, string, error) {
	if o.webhookListen == "" {
		return nil, "", nil
	}
	ln, err := net.Listen("tcp", o.webhookListen)
	if err != nil {
		return nil, "", &flagError{Flag: "webhook-listen", Msg: fmt.Sprintf("cannot listen: %v", err)}
	}
	u := o.webhookURL
	if u == "" {
		u = "http://" + ln.Addr().String() + webhookPath
	}
	return ln, u, nil
}

// serveWebhooks adds the webhook server on ln to g.
func serveWebhooks(g *okrun.Group, ln net.Listener, h http.Handler, log hclog.Logger) {
	if ln == nil {
		return
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	addr := ln.Addr().String()
	g.Add(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("webhook server on %s: %w", addr, err)
		}
		return nil
	}, func(error) {
		// Deliveries in progress finish first: each is bounded.
		sctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	log.Info("serving runpod webhooks", "addr", addr)
}

// webhookHandler serves deliveries with the current worker (the supervisor
// replaces it after a fault).
func (s *supervisor) webhookHandler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		w := s.cur
		s.mu.Unlock()
		w.WebhookHandler().ServeHTTP(rw, r)
	})
}

func (s *supervisor) webhookStats() worker.WebhookStats {
	s.mu.Lock()
	w := s.cur
	s.mu.Unlock()
	return w.WebhookStats()
}

// observePool registers the metrics of this file.
func (m *metrics) observePool(webhooks func() worker.WebhookStats) {
	m.reg.MustRegister(&webhookCollector{stats: webhooks, desc: prometheus.NewDesc(metricWebhooks,
		"Webhook deliveries received by this worker, by result: finalized, duplicate, revealed, refused, error.",
		[]string{"result"}, nil)})
}

// observeAdmission registers the admission gauges (--admission-depth).
func (m *metrics) observeAdmission(stats func() worker.Stats) {
	m.reg.MustRegister(&admissionCollector{stats: stats,
		room: prometheus.NewDesc(metricAdmissionRoom,
			"Room left in Runpod's queue for the whole pool, as of this worker's last admission grant (--admission-depth).",
			nil, nil),
		waits: prometheus.NewDesc(metricAdmissionWaits,
			"Fetches by this worker that found no room in Runpod's queue and left the backlog in the stream.",
			nil, nil)})
}

type admissionCollector struct {
	stats       func() worker.Stats
	room, waits *prometheus.Desc
}

func (c *admissionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.room; ch <- c.waits }

func (c *admissionCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.room, prometheus.GaugeValue, float64(s.AdmissionRoom))
	ch <- prometheus.MustNewConstMetric(c.waits, prometheus.CounterValue, float64(s.AdmissionWaits))
}

type webhookCollector struct {
	stats func() worker.WebhookStats
	desc  *prometheus.Desc
}

func (c *webhookCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *webhookCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for result, n := range map[string]uint64{
		"finalized": s.Finalized, "duplicate": s.Duplicates, "revealed": s.Revealed,
		"refused": s.Refused, "error": s.Errors,
	} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), result)
	}
}

// healther is the part of activities.Client admission reads.
type healther interface {
	Health(ctx context.Context) (activities.Health, error)
}

// admissionHealth reads the endpoint's load through rp's /health (with
// the pool budget, /health is budgeted and guarded by the pool's breaker
// like every other call).
func admissionHealth(rp workflow.Runpod) func(context.Context) (worker.EndpointLoad, error) {
	return func(ctx context.Context) (worker.EndpointLoad, error) {
		h, ok := rp.(healther)
		if !ok {
			return worker.EndpointLoad{}, errors.New("admission: the Runpod client cannot read /health")
		}
		r, err := h.Health(ctx)
		return worker.EndpointLoad{InQueue: int(r.Jobs.InQueue), IdleWorkers: int(r.Workers.Idle)}, err
	}
}
