package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Errors returned by Client methods. Match with errors.Is. A job that does
// not exist is reported with workflow.ErrJobNotFound.
var (
	// ErrClosed: the Client was closed; waits in progress end with it.
	ErrClosed = errors.New("client: closed")
	// ErrNotDurable: Submit created the job (or found it) on the primary,
	// but Config.Durability's replicas or AOF did not confirm it in time; a
	// failover now could lose it. Submitting the same id again is safe.
	ErrNotDurable = streams.ErrNotDurable
	// ErrNotAccepted: Submit with WaitAccepted saw the job end before Runpod
	// accepted it (cancelled before it was sent, or refused as poison).
	ErrNotAccepted = errors.New("client: job ended before Runpod accepted it")
	// ErrCancelPending: Cancel found no job with the id (a raw submission
	// not yet admitted, or an id that never arrives). The cancel is kept for
	// Config.PendingCancelTTL: a job with that id arriving meanwhile ends
	// CANCELED without being sent to Runpod. After that it is forgotten.
	ErrCancelPending = errors.New("client: no such job yet; the cancel is kept for when it arrives")
	// ErrDedupeContention: Submit with dedupe gave up because other
	// submissions of the same input hash kept changing its dedupe key
	// between the read and the write (a few attempts). Nothing was written;
	// retrying later is safe. It is streams.ErrDedupeContention.
	ErrDedupeContention = streams.ErrDedupeContention
	// ErrCancelHintNotPublished: Cancel recorded the cancel, but its hint
	// to the workers could not be published (see Cancel). It is
	// streams.ErrHintNotPublished.
	ErrCancelHintNotPublished = streams.ErrHintNotPublished
	// ErrPartitionsMismatch: CheckPartitions found the namespace recorded
	// with another partition count than Config.Partitions. It is
	// streams.ErrPartitionsMismatch.
	ErrPartitionsMismatch = streams.ErrPartitionsMismatch
)

// Client submits jobs and observes them. It is safe for concurrent use.
type Client struct {
	cfg   Config
	parts *streams.Partitions
	base  *streams.Store   // the namespace's own keys: worker reports ({ns}:workers)
	hubs  []*hub           // one events reader per partition
	now   func() time.Time // this process's clock (tests skew it)

	// awaitRecheck is how often a waiting AwaitResult re-reads its job's
	// record (awaitRecheckDefault; tests shorten it).
	awaitRecheck time.Duration

	// checkedUntil (unix nanos, monotonic-free: only compared with
	// time.Now) is until when the last passing partition-count check
	// holds (checkParts).
	checkedUntil atomic.Int64
}

// partsRecheck is how long a passing check of the recorded partition count
// holds before an entry point reads it again: a count recorded later (the
// first worker), or changed by a migration, is noticed within it.
const partsRecheck = 5 * time.Second

// checkParts is CheckPartitions for the entry points (Submit, Get, Cancel,
// AwaitResult, Events, ...), cached for partsRecheck: a client configured
// with another count than the workers recorded would write jobs where no
// worker reads them and read the wrong keys. The error names
// Config.Partitions and both counts.
func (c *Client) checkParts(ctx context.Context) error {
	if time.Now().UnixNano() < c.checkedUntil.Load() {
		return nil
	}
	if err := c.parts.CheckPartitions(ctx, false); err != nil {
		if errors.Is(err, streams.ErrPartitionsMismatch) {
			return fmt.Errorf("client: Config.Partitions: %w", err)
		}
		return fmt.Errorf("client: check the namespace's partition count: %w", err)
	}
	c.checkedUntil.Store(time.Now().Add(partsRecheck).UnixNano())
	return nil
}

// Partitions returns the partition count this client is configured with
// (Config.Partitions, at least 1).
func (c *Client) Partitions() int { return c.parts.Count() }

// PartitionOf returns the partition that holds job id (its events, its
// record): crc32(id) mod Partitions (docs/wire-format.md, Partitions).
func (c *Client) PartitionOf(id string) int { return streams.PartitionOf(id, c.parts.Count()) }

// store returns the store of job id's partition.
func (c *Client) store(id string) *streams.Store { return c.parts.For(id) }

// hubFor returns the events reader of job id's partition.
func (c *Client) hubFor(id string) *hub {
	return c.hubs[streams.PartitionOf(id, len(c.hubs))]
}

// RecordedPartitions returns the partition count the workers of namespace
// recorded, or 1 when none is recorded yet: for tools that should follow
// the deployment rather than be told (cmd/submitter without --partitions).
func RecordedPartitions(ctx context.Context, rdb redis.UniversalClient, namespace string) (int, error) {
	ps, err := streams.NewPartitions(rdb, streams.Config{Namespace: namespace}, 1)
	if err != nil {
		return 0, fmt.Errorf("client: %w", err)
	}
	n, err := ps.StoredPartitions(ctx)
	if err != nil {
		return 0, fmt.Errorf("client: %w", err)
	}
	return max(n, 1), nil
}

// CheckPartitions verifies that the namespace's partition count, as the
// workers recorded it, is Config.Partitions: a mismatch is an error
// matching streams.ErrPartitionsMismatch naming both. A namespace no worker
// ran on yet has no count recorded and passes.
func (c *Client) CheckPartitions(ctx context.Context) error {
	if err := c.parts.CheckPartitions(ctx, false); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// New returns a Client for cfg.Namespace. The caller owns rdb: Close never
// closes it, and it must stay open until Close returns. New does not talk to
// Redis.
func New(rdb redis.UniversalClient, cfg Config) (*Client, error) {
	if rdb == nil {
		return nil, errors.New("client: new: nil Redis client")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	parts, err := streams.NewPartitions(rdb, streams.Config{Namespace: cfg.Namespace}, cfg.Partitions)
	if err != nil {
		return nil, fmt.Errorf("client: new: %w", err)
	}
	base, err := streams.New(rdb, streams.Config{Namespace: cfg.Namespace})
	if err != nil {
		return nil, fmt.Errorf("client: new: %w", err)
	}
	parts.SetDurability(cfg.Durability)
	c := &Client{cfg: cfg, parts: parts, base: base, now: time.Now}
	for i, st := range parts.All() {
		log := cfg.Logger.Named("reader")
		if parts.Count() > 1 {
			log = log.With("partition", i)
		}
		c.hubs = append(c.hubs, newHub(st, log))
	}
	return c, nil
}

// Close stops the shared reader and ends every wait in progress with
// ErrClosed. It waits for the reader to exit (at most one blocking read,
// well under a second). It is idempotent and never closes the Redis client.
func (c *Client) Close() error {
	for _, h := range c.hubs {
		h.close()
	}
	return nil
}

// Ping checks that Redis answers.
func (c *Client) Ping(ctx context.Context) error { return c.base.Ping(ctx) }

// Namespace returns the namespace the client works in.
func (c *Client) Namespace() string { return c.cfg.Namespace }

// Job is a job record as stored in Redis.
type Job struct {
	// ID is the caller's clientJobId.
	ID string `json:"clientJobId"`
	// State is the job's lifecycle state.
	State workflow.State `json:"state"`
	// Step is where the job's workflow stands (SUBMIT, SUBMITTING, POLL, DONE).
	Step workflow.Step `json:"step,omitempty"`
	// RunpodID is Runpod's job id, once Runpod accepted the job.
	RunpodID string `json:"runpodJobId,omitempty"`
	// RunpodStatus is the last status Runpod reported.
	RunpodStatus workflow.RunpodStatus `json:"runpodStatus,omitempty"`
	// Output is the handler's JSON output once COMPLETED, or its latest
	// progress output while running.
	Output json.RawMessage `json:"output,omitempty"`
	// Error says why the job ended FAILED, TIMED_OUT or CANCELED.
	Error string `json:"error,omitempty"`
	// ErrorJSON is Runpod's error as a JSON value, when Runpod sent an
	// object (or a JSON string holding one, as the Python worker does);
	// Error then holds its readable message.
	ErrorJSON json.RawMessage `json:"errorJson,omitempty"`
	// Attempts counts the /run calls started for the job.
	Attempts int `json:"attempts"`
	// Deliveries counts how often a worker took the job (first = 1).
	Deliveries int `json:"deliveries"`
	// Run is the job's run: 1, then one more per Retry.
	Run int `json:"run"`
	// Epoch is the fencing token of the current owner.
	Epoch int64 `json:"epoch"`
	// Owner is the worker consumer that owns the job now.
	Owner string `json:"owner,omitempty"`
	// InputHash is the dedupe key given at submission.
	InputHash string `json:"inputHash,omitempty"`
	// Input is the job's input, when Config.PersistInput kept it.
	Input json.RawMessage `json:"input,omitempty"`
	// CancelRequested reports that a cancel was asked for.
	CancelRequested bool `json:"cancelRequested,omitempty"`
	// AliasOf is set on the record of a raw submission that was
	// deduplicated onto another job: the outcome is that job's (see the
	// package doc, "Aliases").
	AliasOf string `json:"aliasOf,omitempty"`
	// Deadline is when the job times out; zero when it has none.
	Deadline time.Time `json:"deadline,omitzero"`
	// CreatedAt, UpdatedAt and FinishedAt are the record's timestamps;
	// FinishedAt is zero until the job is terminal.
	CreatedAt  time.Time `json:"createdAt,omitzero"`
	UpdatedAt  time.Time `json:"updatedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	// DelayMs and ExecutionMs are Runpod's delayTime (time in Runpod's
	// queue) and executionTime (GPU time, what Runpod bills) of the run's
	// Runpod job, in milliseconds; RunpodWorkerID is the Runpod GPU worker
	// that ran it. Set once the job is terminal, when Runpod reported them.
	DelayMs        int64  `json:"delayTimeMs,omitempty"`
	ExecutionMs    int64  `json:"executionTimeMs,omitempty"`
	RunpodWorkerID string `json:"runpodWorkerId,omitempty"`
	// FinalizedBy is the worker (consumer) that owned the job when its
	// outcome was written.
	FinalizedBy string `json:"finalizedBy,omitempty"`
}

// Result returns the job's outcome as AwaitResult would report it; ok is
// false while the job is not terminal.
func (j Job) Result() (r Result, ok bool) {
	if !j.State.Terminal() {
		return Result{}, false
	}
	return Result{ClientJobID: j.ID, Status: j.State, RunpodID: j.RunpodID, Output: j.Output, Error: j.Error,
		ErrorJSON: j.ErrorJSON}, true
}

// Get returns the job record for id. A job that does not exist (never
// submitted, or expired after its result TTL) is an error matching
// workflow.ErrJobNotFound. An alias record is returned as stored, with
// AliasOf set.
func (c *Client) Get(ctx context.Context, id string) (Job, error) {
	if err := c.checkParts(ctx); err != nil {
		return Job{}, err
	}
	rec, err := c.store(id).Get(ctx, id)
	if errors.Is(err, streams.ErrNotFound) {
		return Job{}, fmt.Errorf("client: get job %q: %w", id, workflow.ErrJobNotFound)
	}
	if err != nil {
		return Job{}, fmt.Errorf("client: get job %q: %w", id, err)
	}
	return jobFromRecord(rec), nil
}

// Cancel asks for job id to be cancelled and returns its state at that
// moment. A job not yet on Runpod ends CANCELED without being sent; one on
// Runpod is cancelled there and ends CANCELED (or with whatever outcome
// Runpod reports if it finished first). Cancelling a terminal job changes
// nothing and returns its terminal state. An alias record is not followed
// (its target may answer other callers too): nothing is cancelled and the
// state is empty; cancel Job.AliasOf to mean the target. Use AwaitResult for
// the outcome.
//
// An id with no job yet (a raw producer's submission still waiting in the
// stream, or an id that never arrives) returns an empty state and an error
// matching ErrCancelPending: the cancel is remembered for
// Config.PendingCancelTTL, and a job with that id arriving meanwhile ends
// CANCELED without being sent. With PendingCancelTTL -1 nothing is
// remembered and the error matches workflow.ErrJobNotFound.
//
// A cancel recorded whose hint to the workers could not be published (a
// Redis user whose ACL lacks the namespace's control channel) returns the
// state and an error matching ErrCancelHintNotPublished: the cancel stands,
// and the owner acts on it at its next periodic check of the record rather
// than at once. RequestCancel says the same without an error.
func (c *Client) Cancel(ctx context.Context, id string) (workflow.State, error) {
	r, err := c.RequestCancel(ctx, id)
	if err != nil {
		return "", err
	}
	if r.HintError != "" {
		return r.State, fmt.Errorf("client: cancel job %q: %w: %s", id, ErrCancelHintNotPublished, r.HintError)
	}
	return r.State, nil
}

// CancelReport is what RequestCancel did.
type CancelReport struct {
	// State is the job's state when the cancel was recorded (its terminal
	// state if it had ended; "" for an alias record).
	State workflow.State
	// Requested: the job's cancel flag is set (it was not terminal).
	Requested bool
	// HintReceivers is how many subscribers the hint to the workers
	// reached: 0 means no worker listened at that moment (none running, or
	// reconnecting); the owner then acts at its next periodic check. In
	// Redis Cluster it counts the subscribers of one node only.
	HintReceivers int64
	// HintError is why the hint could not be published, "" when it was.
	HintError string
}

// RequestCancel is Cancel reporting in detail: whether the cancel was
// recorded, and whether and to how many workers its hint was published.
// Errors are Cancel's, except that a failed hint is reported in
// CancelReport.HintError, not as an error.
func (c *Client) RequestCancel(ctx context.Context, id string) (CancelReport, error) {
	if err := c.checkParts(ctx); err != nil {
		return CancelReport{}, err
	}
	r, err := c.store(id).CancelJob(ctx, id, streams.CancelOpts{StubTTL: max(c.cfg.PendingCancelTTL, 0)})
	if errors.Is(err, streams.ErrCancelPending) {
		return CancelReport{}, fmt.Errorf("client: cancel job %q: %w", id, ErrCancelPending)
	}
	if errors.Is(err, streams.ErrNotFound) {
		return CancelReport{}, fmt.Errorf("client: cancel job %q: %w", id, workflow.ErrJobNotFound)
	}
	if err != nil {
		return CancelReport{}, fmt.Errorf("client: cancel job %q: %w", id, err)
	}
	return CancelReport{State: workflow.State(r.State), Requested: r.Requested,
		HintReceivers: r.Receivers, HintError: r.HintError}, nil
}

func jobFromRecord(r streams.Record) Job {
	return Job{
		ID:              r.JobID,
		State:           workflow.State(r.State),
		Step:            workflow.Step(r.Step),
		RunpodID:        r.RunpodID,
		RunpodStatus:    workflow.RunpodStatus(r.RunpodStatus),
		Output:          rawJSON(r.Output),
		Error:           r.Error,
		ErrorJSON:       rawJSON(r.ErrorJSON),
		Attempts:        r.Attempts,
		Deliveries:      r.Deliveries,
		Run:             r.Run,
		Epoch:           r.Epoch,
		Owner:           r.Owner,
		InputHash:       r.InputHash,
		Input:           rawJSON(r.Input),
		CancelRequested: r.Cancel,
		AliasOf:         r.AliasOf,
		Deadline:        msTime(r.DeadlineMs),
		CreatedAt:       msTime(r.CreatedMs),
		UpdatedAt:       msTime(r.UpdatedMs),
		FinishedAt:      msTime(r.FinishedMs),
		DelayMs:         r.DelayMs,
		ExecutionMs:     r.ExecMs,
		RunpodWorkerID:  r.RunpodWorkerID,
		FinalizedBy:     r.FinalizedBy,
	}
}

// msTime converts unix milliseconds to a UTC time; 0 stays the zero time.
func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// rawJSON returns b as JSON, or nil when empty, so that omitempty drops it.
func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return json.RawMessage(b)
}
