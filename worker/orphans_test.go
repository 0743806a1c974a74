package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// flakyCancel fails the first n cancels with a transient error.
type flakyCancel struct {
	*fakeRunpod
	failLeft atomic.Int32
}

func (f *flakyCancel) Cancel(ctx context.Context, id string) (workflow.RunpodJob, error) {
	if f.failLeft.Add(-1) >= 0 {
		return workflow.RunpodJob{}, &workflow.ActivityError{Op: "cancel", StatusCode: 503, Transient: true, Err: errors.New("unavailable")}
	}
	return f.fakeRunpod.Cancel(ctx, id)
}

// gatedOrphans lets the orphan loop list the recorded orphans only when the
// test opens the gate, one pass per value sent.
type gatedOrphans struct {
	*streams.Store
	gate chan struct{}
}

func (s *gatedOrphans) Orphans(ctx context.Context, max int) (map[string]string, error) {
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Store.Orphans(ctx, max)
}

// A worker is fenced after /run (another worker took the job over) and
// Runpod refuses the orphan's cancel: the orphan is recorded in Redis and
// the next retry pass cancels it. The retry pass is the worker's own orphan
// loop, let through a gate: a pass the test ran itself could overlap the
// loop's (its first one, late under load, or a tick) and cancel twice.
func TestFailedOrphanCancelIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	rp := &flakyCancel{fakeRunpod: b.rp}
	rp.failLeft.Store(1)
	cfg := b.config("victim")
	cfg.Runpod = rp
	var hooked, hookedFailed atomic.Int32
	cfg.Hooks.OnOrphanCancel = func(ok bool) {
		if ok {
			hooked.Add(1)
		} else {
			hookedFailed.Add(1)
		}
	}
	stole := make(chan struct{}, 1)
	cfg.StepHook = func(jobID, point string) {
		if point != PointAfterRun {
			return
		}
		if _, err := b.steal(ctx); err != nil {
			t.Error(err)
			return
		}
		stole <- struct{}{}
	}
	st := &gatedOrphans{Store: b.store, gate: make(chan struct{})}
	w := newWorker(st, cfg.WithDefaults())
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() { stop(); <-done }()

	b.submit(t, "o1", `{"mock_delay":60000}`, 0)
	select {
	case <-stole:
	case <-time.After(time.Minute):
		t.Fatal("the job was never submitted")
	}
	require.Eventually(t, func() bool { return w.Stats().OrphanCancelFailures == 1 }, time.Minute, 10*time.Millisecond)
	var orphans map[string]string
	require.Eventually(t, func() bool {
		var err error
		orphans, err = b.store.Orphans(ctx, 10)
		return err == nil && len(orphans) > 0
	}, time.Minute, 10*time.Millisecond, "the failed cancel is recorded")
	require.Equal(t, map[string]string{"rp-1": "o1"}, orphans, "the failed cancel is recorded")
	require.False(t, b.rp.canceled("rp-1"))

	st.gate <- struct{}{} // one retry pass
	require.Eventually(t, func() bool { return b.rp.canceled("rp-1") }, time.Minute, 10*time.Millisecond,
		"the retry cancels the orphan")
	require.Eventually(t, func() bool {
		orphans, err := b.store.Orphans(ctx, 10)
		return err == nil && len(orphans) == 0
	}, time.Minute, 10*time.Millisecond, "the canceled orphan is forgotten")
	stats := w.Stats()
	require.EqualValues(t, 1, stats.OrphansCanceled)
	require.EqualValues(t, 1, stats.OrphanCancelFailures)
	require.EqualValues(t, 1, hooked.Load())
	require.EqualValues(t, 1, hookedFailed.Load())
}

// A durability the server cannot give (no replica connected) stops Run at
// once with an error, rather than running with weaker guarantees.
func TestDurabilityUnavailableRefusesToStart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("d")
	cfg.Durability = streams.Durability{Replicas: 1, Timeout: 100 * time.Millisecond}
	w, err := New(b.rdb, cfg)
	require.NoError(t, err)
	err = w.Run(context.Background())
	require.ErrorContains(t, err, "replicas")
	runs, _, _ := b.rp.counts()
	require.Zero(t, runs)
}

// failIDWrites fails every checkpoint that records a Runpod id, as a Redis
// that is away exactly then would.
type failIDWrites struct{ *streams.Store }

func (f failIDWrites) Checkpoint(ctx context.Context, cp streams.Checkpoint, now time.Time) error {
	if cp.RunpodID != "" {
		return errors.New("redis: connection refused (test)")
	}
	return f.Store.Checkpoint(ctx, cp, now)
}

// A /run answer that cannot be recorded stays in memory as a pending
// checkpoint; when the lease is lost meanwhile the job is dropped, and its
// unrecorded Runpod job must be canceled, not left running.
func TestUnrecordedIDDroppedWithLeaseIsCanceled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	cfg := b.config("victim")
	w := newWorker(failIDWrites{b.store}, cfg.WithDefaults())
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() { stop(); <-done }()

	b.submit(t, "u1", `{"mock_delay":60000}`, 0)
	require.Eventually(t, func() bool { runs, _, _ := b.rp.counts(); return runs == 1 }, 10*time.Second, 10*time.Millisecond)
	// Another worker takes the job over; the victim's heartbeat finds out.
	_, err := b.steal(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return b.rp.canceled("rp-1") }, 10*time.Second, 10*time.Millisecond,
		"the unrecorded Runpod job must be canceled when its job is dropped")
	require.EqualValues(t, 1, w.Stats().OrphansCanceled)
}

// Two faults: Redis loses the write of a recorded Runpod id (an older
// snapshot restored, an async replica promoted) and the job is taken over.
// The worker that created the Runpod job holds the id only in memory now;
// when its lease is lost it must cancel it (the record does not name it),
// not drop it with the job.
func TestRecordedIDLostByRedisThenDroppedIsCanceled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	cfg := b.config("victim")
	w := newWorker(b.store, cfg.WithDefaults())
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() { stop(); <-done }()

	b.submit(t, "u1", `{"mock_delay":60000}`, 0)
	key := b.store.Keys().Job("u1")
	require.Eventually(t, func() bool { return b.rdb.HGet(ctx, key, "runpod_id").Val() == "rp-1" },
		10*time.Second, 10*time.Millisecond)
	// The rollback: the record is as it was before the id was written.
	require.NoError(t, b.rdb.HDel(ctx, key, "runpod_id", "runpod_status").Err())
	require.NoError(t, b.rdb.HSet(ctx, key, "step", "SUBMITTING", "state", "SUBMITTED").Err())
	_, err := b.steal(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return b.rp.canceled("rp-1") }, 10*time.Second, 10*time.Millisecond,
		"a Runpod id the record no longer names must be canceled when its job is dropped")
}
