package streams

// CONTRACT FILE. The types below are the interface the worker and client
// packages are written against. The Store methods are implemented one
// concept per file: submit.go, record.go, lease.go, admit.go, checkpoint.go,
// finalize.go, cancel.go, events.go, control.go.

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors returned by Store methods. Match with errors.Is.
var (
	// ErrNotFound: no record for the job id.
	ErrNotFound = errors.New("streams: job not found")
	// ErrNoGroup: the consumer group (or the submissions stream) does not
	// exist: Redis lost it (a failover to an empty replica, a restart
	// without persistence) or it was deleted. EnsureGroup recreates it.
	ErrNoGroup = errors.New("streams: consumer group missing (NOGROUP)")
	// ErrFenced: the caller's epoch is no longer the job's epoch (or it is no
	// longer the owner); another worker owns the job. Stop working on it.
	ErrFenced = errors.New("streams: fenced: another owner or a newer epoch holds the job")
	// ErrTerminal: the job already has its terminal outcome.
	ErrTerminal = errors.New("streams: job already terminal")
	// ErrCancelRequested: a checkpoint recording the /run intent (Step
	// SUBMITTING) was refused because the job's cancel flag is set; nothing
	// was written. The job must end CANCELED without being sent.
	ErrCancelRequested = errors.New("streams: cancel requested before submission")
	// ErrDedupeContention: Submit or Admit gave up because the dedupe key
	// of the input hash changed between reading it and the script, on every
	// one of a few attempts (other submissions of the same input kept
	// winning the race). Nothing was written for the refused submission or
	// entry; retrying later is safe.
	ErrDedupeContention = errors.New("streams: dedupe key changed on every attempt")
	// ErrCancelPending: Cancel found no job with the id and recorded a
	// cancel stub instead: a submission with that id arriving before the
	// stub expires (CancelOpts.StubTTL) ends CANCELED without being sent.
	ErrCancelPending = errors.New("streams: no such job yet; the cancel waits for it")
	// ErrUnknownVersion: an envelope or submission names a version this code
	// does not know.
	ErrUnknownVersion = errors.New("streams: unknown wire format version")
)

// Config configures a Store.
type Config struct {
	// Namespace prefixes every key (hash tag {Namespace}). Defaults to NamespaceDefault.
	Namespace string
	// Group is the consumer group name. Defaults to GroupDefault.
	Group string
}

// Store is the only component that talks to Redis: every key, script and
// stream command of the project goes through it. It returns errors and never
// logs. The caller owns rdb; Store never closes it.
type Store struct {
	rdb   redis.UniversalClient
	keys  Keys
	dur   Durability // see SetDurability
	group string
	cps   checkpointBatch // concurrent Checkpoint calls share one script call
	sem   chan struct{}   // the client's limit on blocking reads (blocking.go)
}

// New returns a Store for one namespace.
func New(rdb redis.UniversalClient, cfg Config) (*Store, error) {
	keys, err := NewKeys(cfg.Namespace)
	if err != nil {
		return nil, err
	}
	group := cfg.Group
	if group == "" {
		group = GroupDefault
	}
	return &Store{rdb: rdb, keys: keys, group: group, sem: blockingLimit(rdb)}, nil
}

// Keys returns the store's key builder.
func (s *Store) Keys() Keys { return s.keys }

// Submission is one decoded submission entry (wire format: docs/wire-format.md).
type Submission struct {
	JobID     string
	Input     []byte // JSON text, as given
	InputHash string // optional dedupe key
	TimeoutMs int64  // optional per-job deadline from creation; 0 = worker default
}

// Record is a job record (HASH {ns}:job:<id>) as stored.
type Record struct {
	JobID string
	State string // workflow.State values
	Step  string // workflow.Step values
	Epoch int64
	Owner string // consumer name of the current owner
	// PrevOwner owned epoch Epoch-1 (set by every admit; "" when nobody
	// did). A worker re-admitted at Epoch may continue from its memory
	// only if it held Epoch-1 itself: nobody else owned the job between.
	PrevOwner    string
	Entry        string // submission entry id
	RunpodID     string
	RunpodStatus string
	Attempts     int // /run attempts started (intents recorded)
	// Uncertain counts /run attempts whose outcome is unknown: each may
	// have created a Runpod job whose id nobody learned (a possible
	// duplicate GPU job); UncertainAttempt is the latest such attempt.
	Uncertain, UncertainAttempt int
	Deliveries                  int // admits that counted toward MaxDeliveries (not after a graceful handoff, nor once RunpodID is set)
	InputHash                   string
	Input                       []byte // present when input is persisted
	Cancel                      bool   // a cancel was requested
	AliasOf                     string // set when a raw submission was deduplicated onto another job
	DeadlineMs                  int64  // unix ms; 0 = none
	CreatedMs                   int64
	UpdatedMs                   int64
	FinishedMs                  int64
	Run                         int    // the run: 1, then +1 per retry (retry.lua); a record without the field is run 1
	Output                      []byte // JSON, terminal COMPLETED (or progress output while running)
	Error                       string // terminal FAILED/TIMED_OUT/CANCELED reason
	// ErrorJSON is Runpod's error as a JSON value (an object, or what a
	// JSON-encoded string held), beside the readable Error; nil when none.
	ErrorJSON []byte
	// Chunks is how many /stream chunks of a streaming job are recorded
	// (AppendChunks); ChunkData holds them, a JSON array of their outputs.
	// ChunkData is read by Get only, not in an admitted record (it can be
	// large, and a worker needs only the count to resume).
	Chunks    int
	ChunkData []byte
	// Revealed lists Runpod jobs of this job whose ids were never learned
	// from /run, revealed by their webhooks (RevealRunpodJob).
	Revealed []string
	// RevealedGPUMs is the executionTime of those jobs, summed: GPU time
	// paid for beyond the job's own Runpod job.
	RevealedGPUMs int64
	// DelayMs and ExecMs are Runpod's delayTime and executionTime of the
	// run's Runpod job, RunpodWorkerID its workerId, and FinalizedBy the
	// consumer that wrote the outcome: set at finalize (0 or "" when
	// Runpod did not report them, and while the job runs).
	DelayMs, ExecMs             int64
	RunpodWorkerID, FinalizedBy string
}

// Event types (field "type" of every events-stream entry).
const (
	EventSubmitted       = "submitted"
	EventQueued          = "queued"
	EventProgress        = "progress"
	EventCompleted       = "completed"
	EventFailed          = "failed"
	EventTimedOut        = "timed_out"
	EventCanceled        = "canceled"
	EventCancelRequested = "cancel_requested"
	EventDeduplicated    = "deduplicated"
	EventRejected        = "rejected"
	// EventSubmitUncertain: a /run attempt (Payload.Attempt) has an unknown
	// outcome (an uncertain answer, or a takeover inside the /run window):
	// a Runpod job nobody tracks may run. One per attempt.
	EventSubmitUncertain = "submit_uncertain"
	// EventRetried opens a new run of a finished job (retry.lua); its Run
	// is the new run's number.
	EventRetried = "retried"
	// EventRunpodJobRevealed: a webhook revealed a Runpod job of this job
	// whose id was never learned (an uncertain /run sent again); not a
	// state change.
	EventRunpodJobRevealed = "runpod_job_revealed"
	// EventBreaker: a Runpod endpoint's pool-wide circuit breaker changed
	// state (job_id "", state "open", "half-open" or "closed"; the
	// payload's reason names the endpoint). Written by budget_take.lua and
	// budget_report.lua.
	EventBreaker = "breaker"
)

// EventPayload is the versioned msgpack payload of an event (field "payload").
type EventPayload struct {
	RunpodID     string
	RunpodStatus string
	Output       []byte // JSON
	Error        string
	Reason       string
	AliasOf      string
	DelayMs      int64 // Runpod's delayTime (queue wait), ms
	ExecMs       int64 // Runpod's executionTime (GPU time), ms
	Attempt      int
	// RunpodWorkerID is the Runpod GPU worker (workerId) that ran the job;
	// FinalizedBy is the consumer (worker instance) that wrote the outcome.
	// Both on terminal events.
	RunpodWorkerID string
	FinalizedBy    string
	// ErrorJSON is Runpod's error as a JSON value (an object, not JSON
	// inside a string), beside the readable Error (terminal events).
	ErrorJSON []byte
	// Chunk is, on the progress event of a /stream chunk (Output), the
	// chunk's index from 0; nil on every other event.
	Chunk *int
}

// Event is one decoded entry of the events stream.
type Event struct {
	ID      string // stream entry id
	Type    string
	JobID   string
	State   string
	Epoch   int64
	TS      int64 // unix ms
	Run     int   // the flat field run: set (≥ 2) on a retried event, 0 when absent
	Payload EventPayload
}

// EventInput is an event to append atomically with a state change.
type EventInput struct {
	Type    string
	Payload EventPayload
}

// SubmitOpts tunes Submit.
type SubmitOpts struct {
	Dedupe       bool // apply dedupe by InputHash
	PersistInput bool // keep the input in the record
	Now          time.Time
	// MaxInput caps the input size in bytes, as a worker's DecodeSubmission
	// would; 0 = no cap.
	MaxInput int
}

// SubmitResult is what Submit did.
type SubmitResult struct {
	JobID   string // the job that answers: the new one, the existing one, or the dedupe target
	Created bool   // a new job and submission entry were written
	Deduped bool   // JobID is another job holding the same input hash
	State   string // the answering job's state
	Entry   string // the submission entry id of the answering job
}

// AdmitRequest is one delivered entry to admit.
type AdmitRequest struct {
	Entry  redis.XMessage // the entry as delivered
	Sub    Submission     // decoded; valid when Poison is empty
	Poison string         // non-empty: the entry cannot be run, this is why
	// Foreign marks a poisoned entry written to a partition its job id
	// does not hash to: it is dead-lettered without touching any record
	// or dedupe key (those of its id live in another partition).
	Foreign bool
	// HeldEpoch, when > 0, is the epoch at which the caller still runs
	// this job in memory (its own lease lapsed and its claim pass took the
	// entry back). If the record names the caller at that epoch, nobody
	// crashed since: the admit is not counted toward MaxDeliveries.
	HeldEpoch int64
}

// AdmitOpts tunes Admit.
type AdmitOpts struct {
	Consumer       string
	MaxDeliveries  int // a job with more counted admits (see Record.Deliveries) ends FAILED and is dead-lettered
	Dedupe         bool
	PersistInput   bool
	DefaultTimeout time.Duration // deadline for jobs whose submission names none; 0 = none
	ResultTTL      time.Duration
	// Now, when non-zero, fixes the script's clock (tests); zero uses
	// Redis's clock (TIME), which production always does.
	Now time.Time
}

// AdmitStatus says what Admit did with one entry.
type AdmitStatus int

const (
	// Admitted: the caller now owns the job at Record.Epoch and must run it.
	Admitted AdmitStatus = iota + 1
	// Duplicate: another entry already carries this job id; this one was
	// acknowledged and deleted.
	Duplicate
	// Finished: the job is already terminal; the entry was acknowledged.
	Finished
	// Poisoned: the entry was dead-lettered and acknowledged; if it named a
	// job id, that job ended FAILED with the reason.
	Poisoned
	// Deduplicated: a raw submission whose input hash belongs to another
	// live or completed job; recorded as an alias and acknowledged.
	Deduplicated
	// Lost: the entry's pending entry no longer names this consumer (another
	// worker claimed it, or it was acknowledged meanwhile); nothing was
	// changed. Drop it.
	Lost
	// Unreadable: the script admitted the entry (this consumer owns it at a
	// new epoch) but this code cannot decode the job record, e.g. one
	// written by a newer version during a rolling upgrade; Err says why. Do
	// not run it: the entry stays pending and is reclaimed after MinIdle,
	// perhaps by a worker that can read it. The other entries of the batch
	// are unaffected.
	Unreadable
	// Canceled: the job's id was cancelled before any worker admitted its
	// entry (a cancel stub); the job ended CANCELED without being sent and
	// the entry was acknowledged.
	Canceled
	// Errored: a Redis command failed while handling this entry alone (Err
	// says which); its batch-mates are unaffected. Nothing is promised about
	// the entry: it stays pending and is reclaimed after MinIdle.
	Errored
)

// String returns the status name, for logs and metrics.
func (s AdmitStatus) String() string {
	switch s {
	case Admitted:
		return "admitted"
	case Duplicate:
		return "duplicate"
	case Finished:
		return "finished"
	case Poisoned:
		return "poisoned"
	case Deduplicated:
		return "deduplicated"
	case Lost:
		return "lost"
	case Unreadable:
		return "unreadable"
	case Canceled:
		return "canceled"
	case Errored:
		return "errored"
	}
	return "unknown"
}

// AdmitResult is the outcome for one AdmitRequest (same index).
type AdmitResult struct {
	Status AdmitStatus
	// Record, for Admitted: the record after the epoch bump, as far as a
	// worker resumes a job from it: state, step, epoch, owner, prev_owner,
	// entry, the Runpod id and status, attempts, uncertain_attempt,
	// deliveries, the input and its hash, the cancel flag, deadline_ms,
	// created_ms, the result (progress output), chunks and the run. The
	// other fields (timings, counters, revealed jobs) are zero here; Get
	// reads the whole record.
	Record Record
	Err    error // for Unreadable and Errored: what went wrong
	// RedisNow is Redis's clock when the script ran (or AdmitOpts.Now when
	// set). Record times (CreatedMs, DeadlineMs) are on that clock, so a
	// caller compares them with its own clock through the offset between
	// RedisNow and its own time at the reply.
	RedisNow time.Time
}

// Lease identifies an owned job: its entry and the epoch held.
type Lease struct {
	JobID string
	Entry string
	Epoch int64
}

// Checkpoint is a fenced, non-terminal change to a job record.
type Checkpoint struct {
	JobID string
	// Owner and Epoch are the fence: the write is refused (ErrFenced) unless
	// the record names this owner (consumer) and this epoch.
	Owner        string
	Epoch        int64
	Step         string // "" = unchanged
	State        string // "" = unchanged
	RunpodID     string // "" = unchanged
	RunpodStatus string // "" = unchanged
	// Attempts, when > 0, records this many /run intents (with Step
	// SUBMITTING): an explicit number, not an increment, so a write
	// retried after its reply was lost (applied once or twice) counts once.
	Attempts int
	// UncertainAttempt, when > 0, records that /run attempt as having an
	// unknown outcome: counted (Record.Uncertain) and its Event appended
	// once per attempt number, however often it is written.
	UncertainAttempt int
	Output           []byte // progress output; nil = unchanged
	Event            *EventInput
	// Durable: also wait for the store's Durability (SetDurability) before
	// answering; when the wait falls short the write is applied but
	// ErrNotDurable is returned.
	Durable bool
}

// Outcome is a job's terminal result.
type Outcome struct {
	JobID string
	Entry string
	// Owner and Epoch are the fence, as in Checkpoint.
	Owner  string
	Epoch  int64
	State  string // COMPLETED, FAILED, TIMED_OUT or CANCELED
	Output []byte // JSON
	Error  string
	// ErrorJSON is Runpod's error as a JSON value, when it sent an object
	// (or a string holding one); stored beside Error.
	ErrorJSON    []byte
	RunpodID     string
	RunpodStatus string
	DeadLetter   string // non-empty: also copy the submission to the dead stream with this reason
	// DelayMs, ExecMs and RunpodWorkerID are what Runpod reported for the
	// job (delayTime, executionTime, workerId); 0 or "" when unknown.
	DelayMs, ExecMs int64
	RunpodWorkerID  string
	// Endpoint is the Runpod endpoint the job ran on: ExecMs is added to
	// its GPU counter (GPUUsage) when this outcome is the one written.
	Endpoint string
	// InputHash is the job's input hash (Record.InputHash), so Finalize can
	// release its dedupe key without reading the record first. Empty: Finalize
	// reads it from the record (one extra pipelined round trip per batch)
	// unless InputHashKnown.
	InputHash string
	// InputHashKnown: InputHash is the record's, even when empty (the job
	// has no dedupe key), so Finalize reads nothing first. The worker knows
	// it from admit.
	InputHashKnown bool
	// FinalizeID names this write, recorded with the outcome (finalize_id):
	// a retry of the write (its reply lost) passes the same id and is
	// answered as written; another write of the same outcome (a webhook
	// delivery beside the owner's poll) has its own id and is refused as
	// terminal, so exactly one writer counts the outcome. Empty: derived
	// from the owner, epoch, state and result, so a caller that retries the
	// same outcome needs no id of its own.
	FinalizeID string
}

// FinalizeOpts tunes Finalize.
type FinalizeOpts struct {
	ResultTTL time.Duration
	// Now is a test override of the script's clock; the zero time (what
	// the worker passes) means Redis's own: finished_ms and the events' ts
	// are read beside Redis's times, and a worker's clock may be off.
	Now time.Time
}

// ControlMessage is a hint published on the control channel.
type ControlMessage struct {
	Kind  string // "cancel" or "handoff"
	JobID string // for "cancel"
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }
