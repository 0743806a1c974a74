package runpodsim

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults and limits (docs/runpod-api.md §2, §3, §7, §8, §9).
const (
	GPUWorkersDefault        = 4
	RetentionDefault         = 30 * time.Minute
	SyncRetentionDefault     = time.Minute
	TTLDefault               = 24 * time.Hour
	ExecutionTimeoutDefault  = 600 * time.Second
	MockDelayDefault         = 100 * time.Millisecond
	RunsyncWaitDefault       = 90 * time.Second
	StatusSyncWaitDefault    = 90 * time.Second
	StreamWaitDefault        = 10 * time.Second
	WaitMin                  = time.Second
	WaitMax                  = 300 * time.Second
	RateLimitWindow          = 10 * time.Second
	MaxRunBytesDefault       = 10 << 20
	MaxRunsyncBytesDefault   = 20 << 20
	WebhookAttemptsDefault   = 3
	WebhookRetryDelayDefault = 10 * time.Second
	WebhookTimeoutDefault    = 10 * time.Second
	CrashRetriesDefault      = 1
	IDSuffixDefault          = "-u1"

	// Policy ranges (docs/runpod-api.md §2).
	ExecutionTimeoutMin = 5 * time.Second
	TTLMin              = 10 * time.Second
	PolicyMax           = 7 * 24 * time.Hour
)

// Operation names, used for faults, rate limits and stats.
const (
	OpRun        = "run"
	OpRunsync    = "runsync"
	OpStatus     = "status"
	OpStatusSync = "status-sync"
	OpStream     = "stream"
	OpCancel     = "cancel"
	OpRetry      = "retry"
	OpPurgeQueue = "purge-queue"
	OpHealth     = "health"
)

// Ops lists every operation the simulator serves.
var Ops = []string{OpRun, OpRunsync, OpStatus, OpStatusSync, OpStream, OpCancel, OpRetry, OpPurgeQueue, OpHealth}

// Outcome names used by the switchable behaviours.
const (
	OutcomeTimedOut  = "TIMED_OUT"
	OutcomeFailed    = "FAILED"
	OutcomeCancelled = "CANCELLED"
	OutcomeDelete    = "DELETE"
)

// RateLimitsDefault are Runpod's per-endpoint, per-operation limits per
// 10-second window (docs/runpod-api.md §7). /status-sync shares the /status bucket;
// /retry and /health are not listed by Runpod and are unlimited.
var RateLimitsDefault = map[string]int{
	OpRun: 1000, OpRunsync: 2000, OpStatus: 2000, OpStream: 2000, OpCancel: 100, OpPurgeQueue: 2,
}

// ConcurrencyLimitsDefault are Runpod's per-operation caps on concurrent
// requests (docs/runpod-api.md §7); a request over the cap gets 429.
var ConcurrencyLimitsDefault = map[string]int{
	OpRun: 200, OpRunsync: 400, OpStatus: 400, OpStream: 400, OpCancel: 20,
}

// ErrConfig is wrapped by every configuration error New returns.
var ErrConfig = errors.New("runpodsim: invalid config")

// Config configures a Sim. Durations are simulated time (see Clock) unless
// the field says otherwise.
type Config struct {
	// EndpointID is the only endpoint id served; others get 404. Required.
	EndpointID string
	// APIKey is the only accepted key, sent as "Bearer <key>" or bare. Required.
	APIKey string
	// GPUWorkers is the number of concurrent executions. Defaults to 4.
	GPUWorkers int
	// Retention is how long a /run job is kept after it ends. Defaults to 30m.
	Retention time.Duration
	// SyncRetention is how long a /runsync job is kept after it ends.
	// Defaults to 1m.
	SyncRetention time.Duration
	// TTL is the default job lifespan from submission (policy.ttl overrides
	// it). Defaults to 24h.
	TTL time.Duration
	// ExecutionTimeout is the default execution limit (policy.executionTimeout
	// overrides it). Defaults to 600s.
	ExecutionTimeout time.Duration
	// ExecutionTimeoutOutcome is the status of a job that exceeds its
	// execution timeout: "TIMED_OUT" or "FAILED". Defaults to "TIMED_OUT".
	ExecutionTimeoutOutcome string
	// QueueExpiryOutcome is what happens to a job whose TTL expires while it
	// is still queued: "DELETE" (gone, 404) or "TIMED_OUT" (ends TIMED_OUT and
	// is kept for Retention). Defaults to "DELETE". Expiry after pickup always
	// deletes.
	QueueExpiryOutcome string
	// PurgeOutcome is what /purge-queue does to each queued job: "CANCELLED"
	// (kept, status CANCELLED) or "DELETE" (404). Defaults to "CANCELLED".
	PurgeOutcome string
	// MockDelay is the execution time of a job without mock_delay.
	// Defaults to 100ms.
	MockDelay time.Duration
	// ColdStart is how long a GPU worker takes to initialise before its first
	// job, and again after it has been idle longer than IdleTimeout. The wait
	// shows in delayTime. Defaults to 0 (workers are always warm).
	ColdStart time.Duration
	// IdleTimeout is how long an idle worker stays warm when ColdStart is set.
	// Defaults to 5s (Runpod's default idle timeout).
	IdleTimeout time.Duration
	// LedgerRetention bounds the ledger of jobs ever created (Jobs, Job,
	// GET /_sim/jobs) for long runs such as cmd/worker --dev: a job is
	// dropped from it this long after Runpod's side removed it (retention,
	// TTL, purge). The counters (Stats) keep counting every job, and
	// JobsForgotten counts those dropped. Defaults to 0: keep every job
	// forever, as tests that compare the whole ledger need.
	LedgerRetention time.Duration
	// CrashRetries is how many times a job whose worker crashed is re-run
	// before it ends FAILED. Defaults to 1; -1 means never re-run.
	CrashRetries int

	// TimeScale speeds simulated time: 10 makes every simulated timer fire
	// ten times sooner in wall time (a 30m retention takes 3m). Ignored when
	// Clock is set. Defaults to 1.
	TimeScale float64
	// Clock overrides the scaled wall clock, e.g. with a *ManualClock for
	// exact sequences. Defaults to a wall clock scaled by TimeScale.
	Clock Clock
	// Seed makes ids, worker ids and fault draws deterministic when non-zero.
	// Defaults to a time-based seed.
	Seed int64

	// RateLimits overrides RateLimitsDefault per operation (requests per
	// 10-second window); operations not in the map keep their default, and a
	// value of 0 means unlimited. /status-sync counts against "status".
	RateLimits map[string]int
	// DisableRateLimits turns off every rate and concurrency limit.
	DisableRateLimits bool
	// ConcurrencyLimits overrides ConcurrencyLimitsDefault the same way.
	ConcurrencyLimits map[string]int
	// RateLimitPerWorker enables Runpod's dynamic limit: the effective limit
	// is max(base, running workers × RateLimitPerWorker). Defaults to 0 (off).
	RateLimitPerWorker int
	// QueueLimit, when positive, makes /run and /runsync answer 429 while
	// that many jobs are queued (the old queue-size rule). Defaults to 0 (off).
	QueueLimit int
	// RateLimitRetryAfter is the Retry-After header on rate-limit 429s: ""
	// sends none, "auto" sends the whole seconds left in the window, and any
	// other value is sent verbatim (garbage included). Defaults to "".
	RateLimitRetryAfter string

	// RejectOutOfRangeWait makes a ?wait outside 1000–300000 ms a 400;
	// by default it is clamped.
	RejectOutOfRangeWait bool
	// MaxRunBytes and MaxRunsyncBytes cap request bodies. Default to 10 MB
	// and 20 MB.
	MaxRunBytes, MaxRunsyncBytes int64
	// PayloadTooLargeStatus is the status for an oversized body: 413 or 400.
	// Defaults to 413.
	PayloadTooLargeStatus int
	// CancelTerminalStatus is the HTTP status /cancel answers for a job that
	// has already ended. 0 (the default) answers 200 with the job's current
	// {id, status}.
	CancelTerminalStatus int
	// CancelRaceProb is the probability that cancelling a running job loses
	// the race: /cancel answers CANCELLED but the job goes on to finish
	// normally. Defaults to 0.
	CancelRaceProb float64
	// RetryInvalidStatus is the HTTP status /retry answers for a job that is
	// not FAILED or TIMED_OUT. Defaults to 400.
	RetryInvalidStatus int
	// ErrorBodyFunc renders the body of every error response. Defaults to
	// {"error": msg}.
	ErrorBodyFunc func(code int, msg string) []byte

	// WebhookOnCancelled and WebhookOnTimedOut extend webhook delivery,
	// which always covers COMPLETED and FAILED, to those outcomes.
	WebhookOnCancelled, WebhookOnTimedOut bool
	// WebhookAttempts is the number of delivery attempts. Defaults to 3.
	WebhookAttempts int
	// WebhookRetryDelay is the spacing between attempts. Defaults to 10s.
	WebhookRetryDelay time.Duration
	// WebhookTimeout is the wall-clock limit of one attempt. Defaults to 10s.
	WebhookTimeout time.Duration
	// WebhookDropProb is the probability that a job's webhook is never sent
	// at all (Runpod lost it; Stats.WebhooksDropped). Defaults to 0.
	WebhookDropProb float64
	// WebhookDupProb is the probability that a webhook answered 200 is
	// delivered once more right after (an at-least-once sender;
	// Stats.WebhooksDuplicated). Defaults to 0.
	WebhookDupProb float64

	// IDSuffix follows the UUID in job ids. Defaults to "-u1".
	IDSuffix string
	// Logger receives debug logs. Defaults to a null logger.
	Logger hclog.Logger
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if c.GPUWorkers == 0 {
		c.GPUWorkers = GPUWorkersDefault
	}
	def(&c.Retention, RetentionDefault)
	def(&c.SyncRetention, SyncRetentionDefault)
	def(&c.TTL, TTLDefault)
	def(&c.ExecutionTimeout, ExecutionTimeoutDefault)
	def(&c.MockDelay, MockDelayDefault)
	def(&c.IdleTimeout, 5*time.Second)
	def(&c.WebhookRetryDelay, WebhookRetryDelayDefault)
	def(&c.WebhookTimeout, WebhookTimeoutDefault)
	if c.ExecutionTimeoutOutcome == "" {
		c.ExecutionTimeoutOutcome = OutcomeTimedOut
	}
	if c.QueueExpiryOutcome == "" {
		c.QueueExpiryOutcome = OutcomeDelete
	}
	if c.PurgeOutcome == "" {
		c.PurgeOutcome = OutcomeCancelled
	}
	if c.CrashRetries == 0 {
		c.CrashRetries = CrashRetriesDefault
	}
	if c.TimeScale == 0 {
		c.TimeScale = 1
	}
	if c.MaxRunBytes == 0 {
		c.MaxRunBytes = MaxRunBytesDefault
	}
	if c.MaxRunsyncBytes == 0 {
		c.MaxRunsyncBytes = MaxRunsyncBytesDefault
	}
	if c.PayloadTooLargeStatus == 0 {
		c.PayloadTooLargeStatus = 413
	}
	if c.RetryInvalidStatus == 0 {
		c.RetryInvalidStatus = 400
	}
	if c.WebhookAttempts == 0 {
		c.WebhookAttempts = WebhookAttemptsDefault
	}
	if c.IDSuffix == "" {
		c.IDSuffix = IDSuffixDefault
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

func (c Config) validate() error {
	bad := func(field, rule string) error {
		return fmt.Errorf("%w: %s %s", ErrConfig, field, rule)
	}
	switch {
	case c.EndpointID == "":
		return bad("EndpointID", "is required")
	case c.APIKey == "":
		return bad("APIKey", "is required")
	case c.GPUWorkers < 1:
		return bad("GPUWorkers", "must be at least 1")
	case c.TimeScale <= 0:
		return bad("TimeScale", "must be positive")
	case c.ExecutionTimeoutOutcome != OutcomeTimedOut && c.ExecutionTimeoutOutcome != OutcomeFailed:
		return bad("ExecutionTimeoutOutcome", `must be "TIMED_OUT" or "FAILED"`)
	case c.QueueExpiryOutcome != OutcomeDelete && c.QueueExpiryOutcome != OutcomeTimedOut:
		return bad("QueueExpiryOutcome", `must be "DELETE" or "TIMED_OUT"`)
	case c.PurgeOutcome != OutcomeDelete && c.PurgeOutcome != OutcomeCancelled:
		return bad("PurgeOutcome", `must be "DELETE" or "CANCELLED"`)
	case c.CrashRetries < -1:
		return bad("CrashRetries", "must be -1 or more")
	case c.LedgerRetention < 0:
		return errors.New("runpodsim: LedgerRetention must not be negative")
	case c.Retention < 0 || c.SyncRetention < 0 || c.TTL < 0 || c.ExecutionTimeout < 0 || c.MockDelay < 0 || c.ColdStart < 0:
		return bad("durations", "must not be negative")
	case c.CancelRaceProb < 0 || c.CancelRaceProb > 1:
		return bad("CancelRaceProb", "must be in [0,1]")
	case c.WebhookDropProb < 0 || c.WebhookDropProb > 1 || c.WebhookDupProb < 0 || c.WebhookDupProb > 1:
		return bad("WebhookDropProb/WebhookDupProb", "must be in [0,1]")
	case c.WebhookAttempts < 1:
		return bad("WebhookAttempts", "must be at least 1")
	}
	for op, n := range c.RateLimits {
		if n < 0 || !validOp(op) {
			return bad("RateLimits", fmt.Sprintf("has a bad entry %q=%d", op, n))
		}
	}
	for op, n := range c.ConcurrencyLimits {
		if n < 0 || !validOp(op) {
			return bad("ConcurrencyLimits", fmt.Sprintf("has a bad entry %q=%d", op, n))
		}
	}
	return nil
}

func validOp(op string) bool {
	for _, o := range Ops {
		if o == op {
			return true
		}
	}
	return false
}
