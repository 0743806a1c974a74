package worker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Defaults of Config. A zero field means its default; -1 is documented on
// the fields that accept it as "disabled".
const (
	MaxInFlightDefault = 100_000 // bounded by memory (~1.5 KiB of RSS a job), not by a guess at the rate
	ConcurrencyDefault = 64
	// SubmitAheadPerSlot times Concurrency is SubmitAhead's default.
	SubmitAheadPerSlot       = 8
	MinIdleDefault           = 30 * time.Second
	ClaimIntervalDefault     = 5 * time.Second
	MaxDeliveriesDefault     = 5
	JobTimeoutDefault        = 24 * time.Hour
	ResultTTLDefault         = 7 * 24 * time.Hour
	MaxInputBytesDefault     = 10 << 20 // Runpod's /run body limit
	ShutdownTimeoutDefault   = 10 * time.Second
	EventRetentionDefault    = 7 * 24 * time.Hour
	EventTrimIntervalDefault = 5 * time.Minute
	DeadRetentionDefault     = 30 * 24 * time.Hour
	ConsumerRetentionDefault = 24 * time.Hour
)

// Hooks are optional observability callbacks (metrics, tests). They are
// called synchronously from the worker's loops, so they must return at once
// and never block; a nil hook is skipped. No hook is ever called with the
// worker's lock held, so a hook may call back into the worker (Stats).
type Hooks struct {
	// OnTransition: a job moved between states (including into its
	// terminal state, once written).
	OnTransition func(jobID string, from, to workflow.State)
	// OnOutcome: a job's terminal outcome was written by this worker. It
	// runs once per outcome in the whole pool, on the worker whose write
	// landed: when a webhook delivery and the owner's poll both write the
	// same result, only the first counts it (OnTransition into the terminal
	// state and Stats.Finalized follow the same rule).
	OnOutcome func(jobID string, state workflow.State)
	// OnReclaim: a claim pass admitted n jobs from other consumers.
	OnReclaim func(n int)
	// OnLeaseLost: this worker lost a job to another (heartbeat refused, or
	// a write was fenced) and dropped it.
	OnLeaseLost func(jobID string)
	// OnPoison: a submission could not be run and was dead-lettered.
	OnPoison func(reason string)
	// OnSubmitUncertain: /run attempt `attempt` of a job has an unknown
	// outcome (recorded with event submit_uncertain): a possible duplicate
	// GPU job.
	OnSubmitUncertain func(jobID string, attempt int)
	// OnGroupRecreated: the consumer group was missing (NOGROUP: Redis lost
	// data, e.g. a failover to an empty replica) and this worker created it
	// again.
	OnGroupRecreated func()
	// OnOrphanCancel: an orphan Runpod job (created, not recorded on its
	// job) was canceled (true) or its cancel failed and will be retried
	// (false).
	OnOrphanCancel func(canceled bool)
	// OnDeferred: a Runpod call (op "run", "status" or "cancel") had no
	// budget left and the job was rescheduled wait later (Config.Runpod
	// implements workflow.Pacer).
	OnDeferred func(jobID, op string, wait time.Duration)
}

// Config configures a Worker. Zero values mean the documented defaults; call
// WithDefaults then Validate (New does both).
type Config struct {
	// Runpod runs the activities. Required.
	Runpod workflow.Runpod
	// InstanceID is this worker's consumer name in the group; unique per
	// process. Defaults to hostname:pid:random.
	InstanceID string
	// Streaming is the seed's polling.enableStreaming: jobs Runpod runs are
	// read with /stream (when Runpod implements workflow.Streamer), each
	// new chunk recorded on the job with a progress event (in order, once,
	// across takeovers), and a final output of [] replaced by the chunks.
	Streaming bool
	// EndpointID names the Runpod endpoint Runpod calls this worker's jobs
	// on; finished runs add their executionTime to its GPU counter
	// (streams.Store.GPUUsage, `submitter stats`). Optional: "" counts
	// under the empty name.
	EndpointID string
	// Namespace is the key namespace. Defaults to streams.NamespaceDefault.
	Namespace string
	// Partitions is the namespace's partition count P (default 1: the
	// namespace's own key names). Every worker and producer of a namespace
	// must use the same P; Run records it in the namespace's meta key when
	// none is recorded and refuses to start on a mismatch
	// (streams.ErrPartitionsMismatch). Changing it is a migration
	// (docs/operations.md, "Partitions").
	Partitions int
	// ServePartitions lists the partitions this worker reads (each in
	// 0..Partitions-1, no repeats); empty means all of them. Capacity is
	// shared fairly between the served partitions.
	ServePartitions []int
	// MaxInFlight bounds the jobs this worker owns at once (fetch never
	// reads beyond the free capacity). Defaults to 100,000: an owned job
	// waiting on Runpod is a heap entry (about 141 MiB of RSS for 100,000),
	// so the cap is memory and Runpod's limits (the pool budget) pace the
	// jobs: the budget's 81 /run per second with 10-minute jobs keeps
	// 48,600 in flight.
	MaxInFlight int
	// Concurrency bounds the Runpod calls in flight at once (executor
	// goroutines). Defaults to 64.
	Concurrency int
	// SubmitAhead bounds the jobs this worker has admitted but not yet sent
	// to Runpod (no Runpod id): the fetcher reads new submissions only
	// while fewer are waiting for their /run, so a backlog Runpod cannot
	// take yet (the /run budget, a slow /run) waits in the submissions
	// stream, shared by every worker and cancellable without a Runpod
	// call, not in one worker's memory. MaxInFlight still bounds the jobs
	// owned (mostly on Runpod). Takeovers are not held back by it, but a
	// taken-over job not yet sent counts against it. Defaults to
	// SubmitAheadPerSlot × Concurrency (512): at 1,000 jobs/s a job waits
	// for its /run about 0.5 s at most.
	SubmitAhead int
	// MinIdle is the lease: how long an entry may go without a heartbeat
	// before other workers may reclaim it. Defaults to 30s; at least 1s.
	MinIdle time.Duration
	// HeartbeatInterval is how often owned leases are refreshed. Defaults
	// to MinIdle/3; must be less than MinIdle.
	HeartbeatInterval time.Duration
	// ClaimInterval is how often idle entries are reclaimed. Defaults to 5s.
	ClaimInterval time.Duration
	// MaxDeliveries: a job admitted more often than this (it keeps crashing
	// workers) ends FAILED and is dead-lettered. Defaults to 5. Admits that
	// cannot mean a crash are not counted: after a handoff, of a job on
	// Runpod, and this worker's own claim pass taking back the lapsed lease
	// of a job it still runs.
	MaxDeliveries int
	// Poll is the /status backoff. Defaults: 2s initial, 10s max, 20% jitter.
	Poll workflow.PollPolicy
	// Retry is the backoff for transient Runpod errors. Defaults: 500ms
	// initial, 30s max, full jitter.
	Retry workflow.RetryPolicy
	// JobTimeout is the deadline of a job whose submission names none,
	// counted from its creation. Defaults to 24h; -1 means no deadline.
	JobTimeout time.Duration
	// ResultTTL is how long a terminal record is kept. Defaults to 7 days.
	ResultTTL time.Duration
	// PersistInput keeps each job's input in its record.
	PersistInput bool
	// Dedupe applies input-hash deduplication to raw submissions.
	Dedupe bool
	// SubmitUncertain decides a /run whose outcome is unknown. Defaults to
	// workflow.SubmitUncertainResubmit.
	SubmitUncertain workflow.SubmitUncertainPolicy
	// MaxInputBytes refuses larger inputs as poison. Defaults to 10 MiB,
	// Runpod's /run limit.
	MaxInputBytes int
	// ShutdownTimeout bounds how long in-flight Runpod calls may run after
	// Run's ctx is done before their contexts are canceled. Defaults to 10s.
	ShutdownTimeout time.Duration
	// EventRetention: events older than this are trimmed every few minutes.
	// Defaults to 7 days; -1 disables trimming.
	EventRetention time.Duration
	// Durability makes the /run intent wait for replicas (WAIT) or the AOF
	// (WAITAOF, Redis 7.2+) before /run is sent, and every outcome batch
	// before it is reported written; a write that does not get there in
	// time is retried (no /run is sent meanwhile). Zero: no wait (the
	// guarantees then need appendfsync always on a single Redis; see
	// docs/operations.md). Run refuses to start when the server cannot
	// give it (no WAITAOF, too few replicas).
	Durability streams.Durability
	// Webhook enables webhook completion (webhook.go): Runpod reports each
	// job's end to WebhookHandler, and polls become a slow fallback.
	Webhook Webhook
	// DeadRetention: dead-letter entries ({ns}:dead) older than this are
	// trimmed by the same janitor. Defaults to 30 days; -1 keeps them forever.
	DeadRetention time.Duration
	// ConsumerRetention: a consumer of the group that holds no pending
	// entry and has been idle this long (a worker that is gone) is removed
	// from the group by the janitor. A consumer with pending entries is never
	// removed. Defaults to 24h; -1 never removes any.
	ConsumerRetention time.Duration
	// Admission keeps Runpod's queue shallow (admission.go): new
	// submissions are read only while it has room. Off by default.
	Admission Admission
	// Logger receives the worker's logs. Defaults to a null logger.
	Logger hclog.Logger
	// Hooks are optional observability callbacks.
	Hooks Hooks
	// StepHook, when set, is called at fixed points of a job's workflow:
	// "before_run" (SUBMITTING checkpointed, /run not yet called),
	// "after_run" (/run returned an id, not yet checkpointed), "polling"
	// (before /status) and "finalize" (outcome decided, not yet written).
	// It exists for fault-injection tests (a subprocess can kill itself at a
	// given point); production leaves it nil. It runs on an executor
	// goroutine and may block only in tests.
	StepHook func(jobID string, point string)
	// Now is the clock, for tests. Defaults to time.Now.
	Now func() time.Time
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.InstanceID == "" {
		c.InstanceID = defaultInstanceID()
	}
	if c.Namespace == "" {
		c.Namespace = streams.NamespaceDefault
	}
	if c.Partitions == 0 {
		c.Partitions = 1
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = MaxInFlightDefault
	}
	if c.Concurrency == 0 {
		c.Concurrency = ConcurrencyDefault
	}
	if c.SubmitAhead == 0 {
		c.SubmitAhead = SubmitAheadPerSlot * c.Concurrency
	}
	if c.MinIdle == 0 {
		c.MinIdle = MinIdleDefault
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = c.MinIdle / 3
	}
	if c.ClaimInterval == 0 {
		c.ClaimInterval = ClaimIntervalDefault
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = MaxDeliveriesDefault
	}
	c.Poll = c.Poll.WithDefaults()
	c.Retry = c.Retry.WithDefaults()
	if c.JobTimeout == 0 {
		c.JobTimeout = JobTimeoutDefault
	}
	if c.ResultTTL == 0 {
		c.ResultTTL = ResultTTLDefault
	}
	if c.SubmitUncertain == "" {
		c.SubmitUncertain = workflow.SubmitUncertainDefault
	}
	if c.MaxInputBytes == 0 {
		c.MaxInputBytes = MaxInputBytesDefault
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = ShutdownTimeoutDefault
	}
	if c.EventRetention == 0 {
		c.EventRetention = EventRetentionDefault
	}
	c.Webhook = c.Webhook.withDefaults()
	if c.DeadRetention == 0 {
		c.DeadRetention = DeadRetentionDefault
	}
	if c.ConsumerRetention == 0 {
		c.ConsumerRetention = ConsumerRetentionDefault
	}
	c.Admission = c.Admission.withDefaults()
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports the first bad field, named: "worker: MinIdle: must be at
// least 1s". Call it after WithDefaults.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("worker: %s: %s", field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Runpod == nil:
		return bad("Runpod", "is required")
	case c.InstanceID == "" || strings.ContainsAny(c.InstanceID, " \t\r\n"):
		return bad("InstanceID", "%q must be non-empty without whitespace", c.InstanceID)
	case c.MaxInFlight < 1:
		return bad("MaxInFlight", "%d is less than 1", c.MaxInFlight)
	case c.Concurrency < 1:
		return bad("Concurrency", "%d is less than 1", c.Concurrency)
	case c.SubmitAhead < 1:
		return bad("SubmitAhead", "%d is less than 1", c.SubmitAhead)
	case c.MinIdle < time.Second:
		return bad("MinIdle", "must be at least 1s")
	case c.HeartbeatInterval <= 0 || c.HeartbeatInterval >= c.MinIdle:
		return bad("HeartbeatInterval", "%s must be positive and less than MinIdle %s", c.HeartbeatInterval, c.MinIdle)
	case c.ClaimInterval <= 0:
		return bad("ClaimInterval", "must be positive")
	case c.MaxDeliveries < 1:
		return bad("MaxDeliveries", "%d is less than 1", c.MaxDeliveries)
	case c.JobTimeout < 0 && c.JobTimeout != -1:
		return bad("JobTimeout", "must be positive, or -1 for none")
	case c.ResultTTL <= 0:
		return bad("ResultTTL", "must be positive")
	case c.MaxInputBytes < 1:
		return bad("MaxInputBytes", "%d is less than 1", c.MaxInputBytes)
	case c.ShutdownTimeout <= 0:
		return bad("ShutdownTimeout", "must be positive")
	case c.EventRetention <= 0 && c.EventRetention != -1:
		return bad("EventRetention", "must be positive, or -1 to keep events forever")
	case c.DeadRetention <= 0 && c.DeadRetention != -1:
		return bad("DeadRetention", "must be positive, or -1 to keep dead letters forever")
	case c.ConsumerRetention <= 0 && c.ConsumerRetention != -1:
		return bad("ConsumerRetention", "must be positive, or -1 to never remove idle consumers")
	case c.Logger == nil:
		return bad("Logger", "is required (WithDefaults sets a null logger)")
	case c.Now == nil:
		return bad("Now", "is required (WithDefaults sets time.Now)")
	}
	if err := streams.ValidateNamespace(c.Namespace); err != nil {
		return fmt.Errorf("worker: Namespace: %w", err)
	}
	if err := streams.ValidatePartitions(c.Partitions); err != nil {
		return fmt.Errorf("worker: Partitions: %w", err)
	}
	if n := len(c.served()); c.MaxInFlight < n {
		return bad("MaxInFlight", "%d is less than the %d partitions served (each fetch loop needs a slot)", c.MaxInFlight, n)
	}
	seen := map[int]bool{}
	for _, p := range c.ServePartitions {
		if p < 0 || p >= c.Partitions || seen[p] {
			return bad("ServePartitions", "%v: want distinct partitions in 0..%d", c.ServePartitions, c.Partitions-1)
		}
		seen[p] = true
	}
	if err := c.Webhook.validate(c.Poll.Horizon); err != nil {
		return err
	}
	if err := c.Admission.validate(); err != nil {
		return err
	}
	if err := c.policy().Validate(); err != nil {
		// "workflow: Poll.Max: ..." → "worker: Poll.Max: ..."
		return errors.New("worker: " + strings.TrimPrefix(err.Error(), "workflow: "))
	}
	return nil
}

// served returns the partitions this worker reads, ascending.
func (c Config) served() []int {
	if len(c.ServePartitions) == 0 {
		all := make([]int, c.Partitions)
		for i := range all {
			all[i] = i
		}
		return all
	}
	out := append([]int(nil), c.ServePartitions...)
	slices.Sort(out)
	return out
}

// policy is the workflow policy this configuration implies.
func (c Config) policy() workflow.Policy {
	p := workflow.Policy{Poll: c.Poll, Retry: c.Retry, SubmitUncertain: c.SubmitUncertain}
	if c.Webhook.enabled() {
		p.Poll.WebhookFallback = c.Webhook.PollInterval // webhooks report the end; polls only catch a lost one
	}
	return p.WithDefaults()
}

func defaultInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	host = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
			return '_'
		}
		return r
	}, host)
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
