package worker

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// store is the part of *streams.Store the worker uses. It is an interface
// only so fault-injection tests can wrap the real store (Redis going away
// mid-operation); production always passes *streams.Store.
type store interface {
	EnsureGroup(ctx context.Context) error
	Read(ctx context.Context, consumer string, count int, block time.Duration) ([]redis.XMessage, error)
	WaitNew(ctx context.Context, count int, block time.Duration) (int, error)
	PendingConsumers(ctx context.Context) (map[string]int64, error)
	Alive(ctx context.Context, consumers []string) ([]bool, error)
	ClaimFrom(ctx context.Context, to, from string, minIdle time.Duration, count int, own bool) (streams.ClaimResult, error)
	Admit(ctx context.Context, reqs []streams.AdmitRequest, opts streams.AdmitOpts) ([]streams.AdmitResult, error)
	Get(ctx context.Context, jobID string) (streams.Record, error)
	Checkpoint(ctx context.Context, cp streams.Checkpoint, now time.Time) error
	Finalize(ctx context.Context, outs []streams.Outcome, opts streams.FinalizeOpts) ([]error, error)
	Beat(ctx context.Context, consumer string, lv streams.Liveness, leases []streams.Lease) (streams.BeatResult, error)
	Handoff(ctx context.Context, consumer string, leases []streams.Lease) (int, error)
	TrimEvents(ctx context.Context, before time.Time, limit int64) (int64, error)
	TrimDead(ctx context.Context, before time.Time, limit int64) (int64, error)
	PruneConsumers(ctx context.Context, minIdle time.Duration, keep string) ([]string, error)
	Time(ctx context.Context) (time.Time, error)
	SubscribeControl(ctx context.Context) (<-chan streams.ControlMessage, error)
	CancelsAfter(ctx context.Context, after string, read bool, count int64) (streams.CancelLogRead, error)
	AddOrphan(ctx context.Context, runpodID, jobID string) error
	RemoveOrphan(ctx context.Context, runpodID string) error
	Orphans(ctx context.Context, max int) (map[string]string, error)
	CheckDurability(ctx context.Context) error
	RevealRunpodJob(ctx context.Context, r streams.Reveal, now time.Time) (streams.RevealResult, error)
	AppendChunks(ctx context.Context, c streams.Chunks, now time.Time) (int, error)
	AdmissionTake(ctx context.Context, p streams.AdmissionParams, caller string, unsent, want int,
		reading *streams.AdmissionReading, now time.Time) (streams.AdmissionGrant, error)
	AdmissionReport(ctx context.Context, p streams.AdmissionParams, caller string, unsent int,
		reading string, n int, now time.Time) (bool, error)
}

var _ store = (*streams.Store)(nil)

// redisClock is the time the worker passes to its record writes
// (checkpoints, chunks, reveals, outcomes): the zero time, so the scripts
// stamp updated_ms, finished_ms and their events' ts with Redis's clock,
// like every other timestamp. The worker's own clock may be hours off, and
// readers compare these fields with Redis's times (the dashboard bounds a
// finished job's event read by finished_ms against the stream's ids).
var redisClock time.Time

// refused reports whether a write was refused because the job is no longer
// ours to write: another worker holds a newer epoch, the outcome is already
// written, or the record is gone. The job must be dropped, not retried.
// streams.ErrCancelRequested is deliberately not a refusal: the job is still
// ours and must be finalized CANCELED (see submit).
func refused(err error) bool {
	return errors.Is(err, streams.ErrFenced) || errors.Is(err, streams.ErrTerminal) || errors.Is(err, streams.ErrNotFound)
}
