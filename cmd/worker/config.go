package main

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/internal/redisconn"
	"github.com/yourscope/runpod-orchestrator/pool"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Defaults of the command (the library defaults are in worker and activities).
const (
	redisURLDefault = "redis://localhost:6379/0"
	// httpAddrDefault is where /metrics, /healthz and /readyz are served.
	httpAddrDefault = ":9464"

	// devRedisAddrDefault is the embedded Redis of --dev: Redis's usual port,
	// so the submitter's default --redis-url reaches it without flags.
	devRedisAddrDefault  = "127.0.0.1:6379"
	devRunpodAddrDefault = "127.0.0.1:8089"
	devHTTPAddrDefault   = "127.0.0.1:9464"
	devGPUWorkersDefault = 8
	devEndpointID        = "dev-endpoint"
	// devAPIKey is the simulator's key in --dev; not a secret.
	devAPIKey = "dev-api-key"
	// Faster polling in --dev so the demo answers in about a second.
	devPollInitial = 200 * time.Millisecond
	devPollMax     = time.Second
)

// devConnFlags are the connection flags --dev replaces with its own services.
var devConnFlags = []string{"redis-url", "redis-tls-ca-file", "redis-tls-cert-file", "redis-tls-key-file",
	"redis-tls-server-name", "runpod-api-key", "runpod-endpoint-id", "runpod-base-url"}

// options is the parsed command line and environment.
type options struct {
	redisURL           string
	redisTLSCAFile     string
	redisTLSCertFile   string
	redisTLSKeyFile    string
	redisTLSServerName string
	namespace          string
	partitions         int
	servePartitions    []int
	instanceID         string

	apiKey     string
	endpointID string
	baseURL    string

	runpodRequestTimeout     time.Duration
	runpodMaxAttempts        int
	runpodBreakerFailures    int
	runpodBreakerOpenTimeout time.Duration
	runpodBudget             string
	runpodLimitRun           int
	runpodLimitStatus        int
	runpodLimitCancel        int
	runpodBudgetHeadroom     float64
	runpodBudgetBatch        int

	maxInFlight       int
	concurrency       int
	submitAhead       int
	minIdle           time.Duration
	heartbeatInterval time.Duration
	claimInterval     time.Duration
	maxDeliveries     int

	pollInitial  time.Duration
	pollMax      time.Duration
	pollJitter   float64
	pollQueueMax time.Duration
	pollHorizon  time.Duration

	jobTimeout      time.Duration
	resultTTL       time.Duration
	eventRetention  time.Duration
	deadRetention   time.Duration
	consumerRetain  time.Duration
	persistInput    bool
	streaming       bool
	durReplicas     int
	durAOF          bool
	durTimeout      time.Duration
	dedupe          bool
	submitUncertain string
	maxInputBytes   int
	shutdownTimeout time.Duration

	logFormat string
	logLevel  string
	httpAddr  string

	dashboard             bool
	dashboardAllowedHosts string

	poolOptions // pool.go

	dev           bool
	devRedisAddr  string
	devRunpodAddr string
	devGPUWorkers int
}

func defaultOptions() *options {
	return &options{
		redisURL:                 redisURLDefault,
		namespace:                streams.NamespaceDefault,
		partitions:               1,
		baseURL:                  activities.BaseURLDefault,
		runpodRequestTimeout:     activities.RequestTimeoutDefault,
		runpodMaxAttempts:        activities.MaxAttemptsDefault,
		runpodBreakerFailures:    int(activities.BreakerFailuresDefault),
		runpodBreakerOpenTimeout: activities.BreakerOpenTimeoutDefault,
		runpodBudget:             budgetPool,
		runpodLimitRun:           activities.DefaultRateLimits[activities.OpRun].Requests,
		runpodLimitStatus:        activities.DefaultRateLimits[activities.OpStatus].Requests,
		runpodLimitCancel:        activities.DefaultRateLimits[activities.OpCancel].Requests,
		runpodBudgetHeadroom:     pool.HeadroomDefault,
		runpodBudgetBatch:        pool.BatchDefault,
		maxInFlight:              worker.MaxInFlightDefault,
		concurrency:              worker.ConcurrencyDefault,
		minIdle:                  worker.MinIdleDefault,
		claimInterval:            worker.ClaimIntervalDefault,
		maxDeliveries:            worker.MaxDeliveriesDefault,
		pollInitial:              workflow.PollInitialDefault,
		pollMax:                  workflow.PollMaxDefault,
		pollJitter:               workflow.PollJitterDefault,
		pollHorizon:              workflow.PollHorizonDefault,
		jobTimeout:               worker.JobTimeoutDefault,
		resultTTL:                worker.ResultTTLDefault,
		eventRetention:           worker.EventRetentionDefault,
		durTimeout:               streams.DurabilityTimeoutDefault,
		deadRetention:            worker.DeadRetentionDefault,
		consumerRetain:           worker.ConsumerRetentionDefault,
		submitUncertain:          string(workflow.SubmitUncertainDefault),
		maxInputBytes:            worker.MaxInputBytesDefault,
		shutdownTimeout:          worker.ShutdownTimeoutDefault,
		logFormat:                "text",
		logLevel:                 "info",
		httpAddr:                 httpAddrDefault,
		devRedisAddr:             devRedisAddrDefault,
		devRunpodAddr:            devRunpodAddrDefault,
		devGPUWorkers:            devGPUWorkersDefault,
		poolOptions:              poolOptions{admissionInterval: worker.AdmissionIntervalDefault},
	}
}

// Group titles of --help.
const (
	groupConn   = "connections"
	groupWorker = "worker (leases, capacity, storage)"
	groupPoll   = "polling Runpod /status"
	groupRunpod = "Runpod client"
	groupOps    = "logging and observability"
	groupDev    = "dev mode"
)

// newFlagTable defines every flag over o. Ranges are checked as values are
// set; cross-field rules are left to the libraries' Validate (see check).
func newFlagTable(o *options) *flagTable {
	t := &flagTable{}
	dur := func(p *time.Duration, min, max time.Duration) *durationValue {
		return &durationValue{p: p, min: min, max: max}
	}
	ints := func(p *int, min, max int) *intValue { return &intValue{p: p, min: min, max: max} }

	t.add(groupConn, "redis-url", "URL",
		"Redis to use: redis://[user:password@]host:port/db, rediss://... for TLS, unix:///path.sock, "+
			"redis+cluster://host:port,host:port,... for Redis Cluster, "+
			"redis+sentinel://host:port,.../MASTER for Sentinel (see docs/operations.md)",
		redisURLDefault, &stringValue{p: &o.redisURL})
	t.add(groupConn, "redis-tls-ca-file", "FILE",
		"PEM file of the CAs that sign Redis's certificates (default: the system's); needs a rediss URL",
		"", &stringValue{p: &o.redisTLSCAFile})
	t.add(groupConn, "redis-tls-cert-file", "FILE",
		"PEM client certificate for Redis (mutual TLS, tls-auth-clients); with --redis-tls-key-file",
		"", &stringValue{p: &o.redisTLSCertFile})
	t.add(groupConn, "redis-tls-key-file", "FILE",
		"PEM key of --redis-tls-cert-file", "", &stringValue{p: &o.redisTLSKeyFile})
	t.add(groupConn, "redis-tls-server-name", "NAME",
		"name Redis's certificates must carry (default: the host of each address)",
		"", &stringValue{p: &o.redisTLSServerName})
	t.add(groupConn, "namespace", "NAME",
		"key namespace: every key is {NAME}:...; workers and producers of one deployment share it",
		streams.NamespaceDefault, &stringValue{p: &o.namespace, check: func(s string) error {
			if err := streams.ValidateNamespace(s); err != nil {
				return fmt.Errorf("%q is not a valid namespace (%v)", s, strings.TrimPrefix(err.Error(), "streams: "))
			}
			return nil
		}})
	t.add(groupConn, "partitions", "N",
		"the namespace's partition count P (1..1024): the same for every worker and producer; "+
			"1 keeps the {NAME}:... keys, more use {NAME:0}:... to {NAME:P-1}:...",
		"1", ints(&o.partitions, 1, streams.MaxPartitions))
	t.add(groupWorker, "serve-partitions", "LIST",
		"the partitions this worker reads, comma-separated (e.g. 0,2,4); empty = all of them",
		"", &partitionList{p: &o.servePartitions})
	t.add(groupConn, "runpod-api-key", "KEY",
		"Runpod API key (required unless --dev); never logged or printed",
		"", &stringValue{p: &o.apiKey}).secret = true
	t.add(groupConn, "runpod-endpoint-id", "ID",
		"Runpod Serverless endpoint id (required unless --dev)", "", &stringValue{p: &o.endpointID})
	t.add(groupConn, "runpod-base-url", "URL",
		"Runpod API base URL, without the endpoint id", activities.BaseURLDefault, &stringValue{p: &o.baseURL})

	t.add(groupWorker, "instance-id", "ID",
		"this worker's consumer name; unique per process", "hostname:pid:random", &stringValue{p: &o.instanceID})
	t.add(groupWorker, "max-in-flight", "N",
		"most jobs this worker owns at once (1..1000000)", strconv.Itoa(worker.MaxInFlightDefault),
		ints(&o.maxInFlight, 1, 1_000_000))
	t.add(groupWorker, "concurrency", "N",
		"most Runpod calls in flight at once (1..10000)", strconv.Itoa(worker.ConcurrencyDefault),
		ints(&o.concurrency, 1, 10_000))
	t.add(groupWorker, "submit-ahead", "N",
		"most jobs this worker admits ahead of their /run (0..1000000; 0 = "+strconv.Itoa(worker.SubmitAheadPerSlot)+" x --concurrency): the backlog beyond it waits in the stream, shared by every worker",
		"0", ints(&o.submitAhead, 0, 1_000_000))
	t.add(groupWorker, "min-idle", "DURATION",
		"lease: a job not heartbeated this long is taken over by another worker (at least 1s)",
		worker.MinIdleDefault.String(), dur(&o.minIdle, time.Second, 0))
	t.add(groupWorker, "heartbeat-interval", "DURATION",
		"how often owned leases are refreshed; less than --min-idle (0 = min-idle/3)",
		"min-idle/3", &durationValue{p: &o.heartbeatInterval, min: 10 * time.Millisecond, zeroOK: true})
	t.add(groupWorker, "claim-interval", "DURATION",
		"how often idle leases of crashed workers are reclaimed", worker.ClaimIntervalDefault.String(),
		dur(&o.claimInterval, 10*time.Millisecond, 0))
	t.add(groupWorker, "max-deliveries", "N",
		"a job admitted more often than this (it keeps crashing workers) ends FAILED and is dead-lettered (1..1000)",
		strconv.Itoa(worker.MaxDeliveriesDefault), ints(&o.maxDeliveries, 1, 1000))
	t.add(groupWorker, "job-timeout", "DURATION",
		"deadline of a job whose submission names none, from its creation; 0 means none",
		worker.JobTimeoutDefault.String(), &durationValue{p: &o.jobTimeout, min: time.Second, zeroOK: true})
	t.add(groupWorker, "result-ttl", "DURATION",
		"how long a finished job's record is kept", worker.ResultTTLDefault.String(),
		dur(&o.resultTTL, time.Second, 0))
	t.add(groupWorker, "event-retention", "DURATION",
		"events older than this are trimmed; 0 keeps them forever",
		worker.EventRetentionDefault.String(), &durationValue{p: &o.eventRetention, min: time.Minute, zeroOK: true})
	t.add(groupWorker, "durability-replicas", "N",
		"wait until N replicas have the /run intent before /run, and each outcome before it counts as written (WAIT; 0 = no wait)",
		"0", ints(&o.durReplicas, 0, 100))
	t.add(groupWorker, "durability-aof", "",
		"also wait until the primary (and the --durability-replicas) fsynced those writes to the AOF (WAITAOF: Redis 7.2+)",
		"false", &boolValue{p: &o.durAOF})
	t.add(groupWorker, "durability-timeout", "DURATION",
		"longest durability wait; a write not confirmed in time is retried and no /run is sent",
		streams.DurabilityTimeoutDefault.String(), dur(&o.durTimeout, 10*time.Millisecond, time.Minute))
	t.add(groupWorker, "dead-retention", "DURATION",
		"dead-letter entries older than this are trimmed; 0 keeps them forever",
		worker.DeadRetentionDefault.String(), &durationValue{p: &o.deadRetention, min: time.Minute, zeroOK: true})
	t.add(groupWorker, "consumer-retention", "DURATION",
		"consumers of gone workers (no pending entry, idle this long) are removed from the group; 0 never",
		worker.ConsumerRetentionDefault.String(), &durationValue{p: &o.consumerRetain, min: time.Minute, zeroOK: true})
	t.add(groupWorker, "persist-input", "",
		"keep each job's input in its record", "false", &boolValue{p: &o.persistInput})
	t.add(groupWorker, "enable-streaming", "",
		"read running jobs' chunks with Runpod's /stream: each chunk a progress event, the output the chunks when Runpod reports []",
		"false", &boolValue{p: &o.streaming})
	t.add(groupWorker, "dedupe", "",
		"deduplicate raw submissions by their input_hash", "false", &boolValue{p: &o.dedupe})
	t.add(groupWorker, "submit-uncertain", "POLICY",
		"a /run whose outcome is unknown (crash between /run and its checkpoint): resubmit or fail",
		string(workflow.SubmitUncertainDefault), &choiceValue{p: &o.submitUncertain,
			choices: []string{string(workflow.SubmitUncertainResubmit), string(workflow.SubmitUncertainFail)}})
	t.add(groupWorker, "max-input-bytes", "N",
		"larger inputs are refused as poison (1..10485760, Runpod's /run limit)",
		strconv.Itoa(worker.MaxInputBytesDefault), ints(&o.maxInputBytes, 1, worker.MaxInputBytesDefault))
	t.add(groupWorker, "shutdown-timeout", "DURATION",
		"on SIGINT/SIGTERM, how long in-flight Runpod calls may finish before they are canceled",
		worker.ShutdownTimeoutDefault.String(), dur(&o.shutdownTimeout, 10*time.Millisecond, time.Hour))

	t.add(groupPoll, "poll-initial", "DURATION",
		"first wait between /status polls of a job; after /run, only until the endpoint's turnaround is learned (--dev: 200ms)", workflow.PollInitialDefault.String(),
		dur(&o.pollInitial, 10*time.Millisecond, time.Hour))
	t.add(groupPoll, "poll-max", "DURATION",
		"longest wait between /status polls; at least --poll-initial (--dev: 1s)", workflow.PollMaxDefault.String(),
		dur(&o.pollMax, 10*time.Millisecond, time.Hour))
	t.add(groupPoll, "poll-jitter", "FRACTION",
		"spread of each poll wait, ±FRACTION of it (0..1)", strconv.FormatFloat(workflow.PollJitterDefault, 'g', -1, 64),
		&floatValue{p: &o.pollJitter, min: 0, max: 1})
	t.add(groupPoll, "poll-queue-max", "DURATION",
		"longest wait between /status polls while Runpod has the job IN_QUEUE; at least --poll-max (0 = 2×--poll-max)",
		"2×poll-max", &durationValue{p: &o.pollQueueMax, min: 10 * time.Millisecond, max: time.Hour, zeroOK: true})
	t.add(groupPoll, "poll-horizon", "DURATION",
		"longest wait between two polls of any job, jitter included; less than Runpod's 30m result retention",
		workflow.PollHorizonDefault.String(), dur(&o.pollHorizon, 10*time.Millisecond, workflow.RunpodResultRetention-time.Second))

	t.add(groupRunpod, "runpod-request-timeout", "DURATION",
		"bound of each HTTP attempt to Runpod", activities.RequestTimeoutDefault.String(),
		dur(&o.runpodRequestTimeout, 100*time.Millisecond, 10*time.Minute))
	t.add(groupRunpod, "runpod-max-attempts", "N",
		"HTTP attempts per Runpod call, first included (1..20; /run is never repeated once sent)",
		strconv.Itoa(activities.MaxAttemptsDefault), ints(&o.runpodMaxAttempts, 1, 20))
	t.add(groupRunpod, "runpod-breaker-failures", "N",
		"consecutive transient failures that open the circuit breaker (1..1000)",
		strconv.Itoa(int(activities.BreakerFailuresDefault)), ints(&o.runpodBreakerFailures, 1, 1000))
	t.add(groupRunpod, "runpod-breaker-open-timeout", "DURATION",
		"how long the open circuit rejects calls before one probe", activities.BreakerOpenTimeoutDefault.String(),
		dur(&o.runpodBreakerOpenTimeout, 100*time.Millisecond, time.Hour))
	t.add(groupRunpod, "runpod-budget", "MODE",
		"pool: one request budget and circuit breaker per endpoint shared by every worker through Redis; local: per process",
		budgetPool, &choiceValue{p: &o.runpodBudget, choices: []string{budgetPool, budgetLocal}})
	t.add(groupRunpod, "runpod-limit-run", "N",
		"Runpod's /run limit per 10 s for the endpoint (the budget grants --runpod-budget-headroom of it)",
		strconv.Itoa(o.runpodLimitRun), ints(&o.runpodLimitRun, 1, 1_000_000))
	t.add(groupRunpod, "runpod-limit-status", "N",
		"Runpod's /status limit per 10 s for the endpoint (/stream shares it)",
		strconv.Itoa(o.runpodLimitStatus), ints(&o.runpodLimitStatus, 1, 1_000_000))
	t.add(groupRunpod, "runpod-limit-cancel", "N",
		"Runpod's /cancel limit per 10 s for the endpoint",
		strconv.Itoa(o.runpodLimitCancel), ints(&o.runpodLimitCancel, 1, 1_000_000))
	t.add(groupRunpod, "runpod-budget-headroom", "FRACTION",
		"share of each limit the pool budget grants (0.1..1; every worker of a pool must agree)",
		strconv.FormatFloat(pool.HeadroomDefault, 'g', -1, 64), &floatValue{p: &o.runpodBudgetHeadroom, min: 0.1, max: 1})
	t.add(groupRunpod, "runpod-budget-batch", "N",
		"most tokens a worker takes from the pool budget per Redis round trip (1..100)",
		strconv.Itoa(pool.BatchDefault), ints(&o.runpodBudgetBatch, 1, 100))

	t.add(groupOps, "log-format", "FORMAT", "log format: text or json", "text",
		&choiceValue{p: &o.logFormat, choices: []string{"text", "json"}})
	t.add(groupOps, "log-level", "LEVEL", "log level: trace, debug, info, warn or error", "info",
		&choiceValue{p: &o.logLevel, choices: []string{"trace", "debug", "info", "warn", "error"}})
	t.add(groupOps, "http-addr", "ADDR",
		"serve /metrics, /healthz and /readyz on this address; empty disables (--dev: "+devHTTPAddrDefault+")",
		httpAddrDefault, &stringValue{p: &o.httpAddr})
	t.add(groupOps, "dashboard", "",
		"also serve the web dashboard at "+dashboardPath+"/ on --http-addr; it has NO authentication: "+
			"bind --http-addr to loopback or put an authenticating proxy in front",
		"false", &boolValue{p: &o.dashboard})
	t.add(groupOps, "dashboard-allowed-hosts", "NAMES",
		"comma-separated DNS names the dashboard may be reached by besides IP addresses and localhost",
		"", &stringValue{p: &o.dashboardAllowedHosts})

	t.add(groupDev, "dev", "",
		"run with an embedded Redis and a Runpod simulator on loopback: no Redis, no Runpod account",
		"false", &boolValue{p: &o.dev})
	t.add(groupDev, "dev-redis-addr", "ADDR", "address of the embedded Redis in --dev",
		devRedisAddrDefault, &stringValue{p: &o.devRedisAddr})
	t.add(groupDev, "dev-runpod-addr", "ADDR", "address of the Runpod simulator in --dev",
		devRunpodAddrDefault, &stringValue{p: &o.devRunpodAddr})
	t.add(groupDev, "dev-gpu-workers", "N", "simulated GPU workers in --dev (1..1024)",
		strconv.Itoa(devGPUWorkersDefault), ints(&o.devGPUWorkers, 1, 1024))
	o.addPoolFlags(t)
	return t
}

// check applies the rules that involve more than one flag, and dev mode's
// defaults. sources maps each flag given to where it came from.
func (o *options) check(sources map[string]string) error {
	if err := o.checkPool(sources); err != nil {
		return err
	}
	if o.dev {
		// Dev mode brings its own Redis and Runpod; a connection flag on the
		// command line is a mistake, the same variable in the environment is
		// usually left over from a shell and is ignored.
		for _, name := range devConnFlags {
			if sources[name] == sourceFlag {
				return &flagError{Flag: name, Msg: "cannot be combined with --dev (dev mode runs its own Redis and Runpod simulator)"}
			}
		}
		if sources["poll-initial"] == "" {
			o.pollInitial = devPollInitial
		}
		if sources["poll-max"] == "" {
			o.pollMax = max(devPollMax, o.pollInitial)
		}
		if sources["http-addr"] == "" {
			o.httpAddr = devHTTPAddrDefault
		}
		return nil
	}
	for _, name := range []string{"dev-redis-addr", "dev-runpod-addr", "dev-gpu-workers"} {
		if sources[name] == sourceFlag {
			return &flagError{Flag: name, Msg: "only applies with --dev"}
		}
	}
	if o.apiKey == "" {
		return &flagError{Flag: "runpod-api-key", Msg: "required (or set RUNPOD_API_KEY); use --dev to try the worker without a Runpod account"}
	}
	if o.endpointID == "" {
		return &flagError{Flag: "runpod-endpoint-id", Msg: "required (or set RUNPOD_ENDPOINT_ID); use --dev to try the worker without a Runpod account"}
	}
	if _, err := o.redisConn(o.redisURL); err != nil {
		return err
	}
	return nil
}

// redisConn parses the Redis settings. Its errors never contain a
// password and name the flag at fault.
func (o *options) redisConn(redisURL string) (*redisconn.Conn, error) {
	conn, err := redisconn.Parse(redisconn.Options{
		URL:           redisURL,
		TLSCAFile:     o.redisTLSCAFile,
		TLSCertFile:   o.redisTLSCertFile,
		TLSKeyFile:    o.redisTLSKeyFile,
		TLSServerName: o.redisTLSServerName,
	})
	var re *redisconn.Error
	if errors.As(err, &re) {
		return nil, &flagError{Flag: "redis-" + re.Field, Msg: re.Msg}
	}
	return conn, err
}

// Where a flag's value came from (the values of flagTable.parse's map that
// are not environment variable names).
const sourceFlag = "flag"

// placeholderRunpod lets check validate a worker.Config before the Runpod
// client exists. It is never called.
type placeholderRunpod struct{ workflow.Runpod }

// workerConfig maps the options onto worker.Config.
func (o *options) workerConfig(rp workflow.Runpod, log hclog.Logger, hooks worker.Hooks) worker.Config {
	cfg := worker.Config{
		Runpod:            rp,
		InstanceID:        o.instanceID,
		Namespace:         o.namespace,
		Partitions:        o.partitions,
		ServePartitions:   o.servePartitions,
		MaxInFlight:       o.maxInFlight,
		Concurrency:       o.concurrency,
		SubmitAhead:       o.submitAhead,
		MinIdle:           o.minIdle,
		HeartbeatInterval: o.heartbeatInterval,
		ClaimInterval:     o.claimInterval,
		MaxDeliveries:     o.maxDeliveries,
		Poll: workflow.PollPolicy{
			Initial:  o.pollInitial,
			Max:      o.pollMax,
			Jitter:   o.pollJitter,
			QueueMax: o.pollQueueMax,
			Horizon:  o.pollHorizon,
		},
		JobTimeout:        o.jobTimeout,
		ResultTTL:         o.resultTTL,
		PersistInput:      o.persistInput,
		Streaming:         o.streaming,
		Dedupe:            o.dedupe,
		SubmitUncertain:   workflow.SubmitUncertainPolicy(o.submitUncertain),
		MaxInputBytes:     o.maxInputBytes,
		ShutdownTimeout:   o.shutdownTimeout,
		EventRetention:    o.eventRetention,
		DeadRetention:     o.deadRetention,
		ConsumerRetention: o.consumerRetain,
		Durability:        streams.Durability{Replicas: o.durReplicas, LocalAOF: o.durAOF, Timeout: o.durTimeout},
		Logger:            log,
		Hooks:             hooks,
	}
	// The flags use 0 for "none"; the library uses -1 (0 means default).
	if o.jobTimeout == 0 {
		cfg.JobTimeout = -1
	}
	if o.eventRetention == 0 {
		cfg.EventRetention = -1
	}
	if o.deadRetention == 0 {
		cfg.DeadRetention = -1
	}
	if o.consumerRetain == 0 {
		cfg.ConsumerRetention = -1
	}
	if o.pollJitter == 0 {
		cfg.Poll.Jitter = -1
	}
	o.poolWorkerConfig(&cfg, "")
	return cfg
}

// Values of --runpod-budget.
const (
	budgetPool  = "pool"
	budgetLocal = "local"
)

// rateLimits are the limits the options name: Runpod's published ones with
// --runpod-limit-* for /run, /status (and /stream, which shares it) and
// /cancel.
func (o *options) rateLimits() map[string]activities.RateLimit {
	l := maps.Clone(activities.DefaultRateLimits)
	per := 10 * time.Second
	l[activities.OpRun] = activities.RateLimit{Requests: o.runpodLimitRun, Per: per}
	l[activities.OpStatus] = activities.RateLimit{Requests: o.runpodLimitStatus, Per: per}
	l[activities.OpStream] = activities.RateLimit{Requests: o.runpodLimitStatus, Per: per}
	l[activities.OpCancel] = activities.RateLimit{Requests: o.runpodLimitCancel, Per: per}
	return l
}

// poolConfig maps the options onto pool.Config.
func (o *options) poolConfig(store *streams.Store, endpointID, instanceID string, log hclog.Logger, m *metrics) pool.Config {
	return pool.Config{
		Store: store, EndpointID: endpointID, InstanceID: instanceID,
		Limits: o.rateLimits(), Headroom: o.runpodBudgetHeadroom, Batch: o.runpodBudgetBatch,
		BreakerFailures:      o.runpodBreakerFailures,
		BreakerOpenTimeout:   o.runpodBreakerOpenTimeout,
		ProbeHold:            o.runpodRequestTimeout,
		OnBreakerStateChange: m.onBreakerStateChange,
		Logger:               log.Named("pool"),
	}
}

// activitiesConfig maps the options onto activities.Config. secrets (the
// Redis passwords) are redacted, like the key, from all Runpod sends back.
func (o *options) activitiesConfig(apiKey, endpointID, baseURL string, secrets []string, log hclog.Logger, m *metrics) activities.Config {
	return activities.Config{
		APIKey:               apiKey,
		Secrets:              secrets,
		EndpointID:           endpointID,
		BaseURL:              baseURL,
		RequestTimeout:       o.runpodRequestTimeout,
		MaxAttempts:          o.runpodMaxAttempts,
		BreakerFailures:      uint32(o.runpodBreakerFailures),
		BreakerOpenTimeout:   o.runpodBreakerOpenTimeout,
		OnCall:               m.onCall,
		OnBreakerStateChange: m.onBreakerStateChange,
		Limiter:              activities.NewLocalLimiter(o.rateLimits()),
		Logger:               log,
	}
}

// Library config fields and the flags that set them, so a library's
// Validate error ("worker: MinIdle: ...") is reported as "--min-idle: ...".
var fieldFlags = map[string]string{
	"worker: InstanceID":             "instance-id",
	"worker: Namespace":              "namespace",
	"worker: Partitions":             "partitions",
	"worker: ServePartitions":        "serve-partitions",
	"worker: MaxInFlight":            "max-in-flight",
	"worker: Concurrency":            "concurrency",
	"worker: SubmitAhead":            "submit-ahead",
	"worker: MinIdle":                "min-idle",
	"worker: HeartbeatInterval":      "heartbeat-interval",
	"worker: ClaimInterval":          "claim-interval",
	"worker: MaxDeliveries":          "max-deliveries",
	"worker: Poll.Initial":           "poll-initial",
	"worker: Poll.Max":               "poll-max",
	"worker: Poll.Jitter":            "poll-jitter",
	"worker: Poll.QueueMax":          "poll-queue-max",
	"worker: Poll.Horizon":           "poll-horizon",
	"worker: JobTimeout":             "job-timeout",
	"worker: ResultTTL":              "result-ttl",
	"worker: MaxInputBytes":          "max-input-bytes",
	"worker: ShutdownTimeout":        "shutdown-timeout",
	"worker: EventRetention":         "event-retention",
	"worker: DeadRetention":          "dead-retention",
	"worker: ConsumerRetention":      "consumer-retention",
	"worker: SubmitUncertain":        "submit-uncertain",
	"activities: APIKey":             "runpod-api-key",
	"activities: EndpointID":         "runpod-endpoint-id",
	"activities: BaseURL":            "runpod-base-url",
	"activities: RequestTimeout":     "runpod-request-timeout",
	"activities: MaxAttempts":        "runpod-max-attempts",
	"activities: BreakerFailures":    "runpod-breaker-failures",
	"activities: BreakerOpenTimeout": "runpod-breaker-open-timeout",
}

// flagErrorFrom reports a library's Validate error under the flag that sets
// the offending field; errors it cannot place are returned as they are.
func flagErrorFrom(err error) error {
	if err == nil {
		return nil
	}
	var fe *flagError
	if errors.As(err, &fe) {
		return err
	}
	msg := err.Error()
	pkg, rest, ok := strings.Cut(msg, ": ")
	if !ok {
		return err
	}
	field, why, ok := strings.Cut(rest, ": ")
	if !ok {
		return err
	}
	name, ok := fieldFlags[pkg+": "+field]
	if !ok {
		return err
	}
	// The message may name sibling fields ("less than MinIdle 30s"); name
	// their flags instead, so the user sees only the words they can type.
	prefix := field[:strings.LastIndex(field, ".")+1] // "Poll." or ""
	for key, other := range fieldFlags {
		kpkg, kfield, _ := strings.Cut(key, ": ")
		short, ok := strings.CutPrefix(kfield, prefix)
		if kpkg != pkg || !ok || strings.Contains(short, ".") {
			continue
		}
		why = regexp.MustCompile(`\b`+regexp.QuoteMeta(short)+`\b`).ReplaceAllString(why, "--"+other)
	}
	return &flagError{Flag: name, Msg: why}
}
