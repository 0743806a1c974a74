package worker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// selfReclaim makes our own lease of entry look lapsed (idle for an hour,
// as after a Redis blip longer than MinIdle) and runs our own claim pass,
// which re-admits the job: same owner, new epoch.
func selfReclaim(ctx context.Context, b *testBundle, w *Worker, entry string) error {
	keys := b.store.Keys()
	before, err := b.store.Get(ctx, jobOfEntry(ctx, b, entry))
	if err != nil {
		return fmt.Errorf("read the record: %w", err)
	}
	// The worker's own heartbeat may reset the entry's idle time between the
	// aging and the claim pass, and its background claimer may take the
	// entry first: either way, what counts is that the record shows one
	// re-admit by this worker. Age and claim again until it does.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := b.rdb.Do(ctx, "XCLAIM", keys.Submissions(), b.store.Group(), w.cfg.InstanceID, 0, entry,
			"IDLE", 3600000, "JUSTID").Err(); err != nil {
			return fmt.Errorf("age the entry: %w", err)
		}
		// A lapsed lease: the liveness key expired with the idle time.
		if err := b.rdb.Del(ctx, keys.Alive(w.cfg.InstanceID)).Err(); err != nil {
			return fmt.Errorf("lapse the liveness key: %w", err)
		}
		if _, err := w.RecoverNow(ctx); err != nil {
			return err
		}
		rec, err := b.store.Get(ctx, before.JobID)
		if err != nil {
			return fmt.Errorf("read the record: %w", err)
		}
		if rec.Epoch > before.Epoch {
			if rec.Owner != w.cfg.InstanceID || rec.Epoch != before.Epoch+1 {
				return fmt.Errorf("re-admitted by %s at epoch %d, want %s at %d", rec.Owner, rec.Epoch, w.cfg.InstanceID, before.Epoch+1)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not re-admitted within 30s (epoch %d)", rec.Epoch)
		}
	}
}

// jobOfEntry returns the job id a submission entry names.
func jobOfEntry(ctx context.Context, b *testBundle, entry string) string {
	msgs, err := b.rdb.XRange(ctx, b.store.Keys().Submissions(), entry, entry).Result()
	if err != nil || len(msgs) == 0 {
		return ""
	}
	id, _ := msgs[0].Values["job_id"].(string)
	return id
}

// Our claimer re-admits our own job while its /run is in flight: the id
// checkpoint, fenced by our own new epoch, is written again with it; the
// good Runpod job is neither canceled nor sent twice.
func TestRunFencedBySelfReclaimIsRewritten(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("w").WithDefaults()
	w := newWorker(b.store, cfg)
	var fired atomic.Bool
	hookErr := make(chan error, 1)
	b.rp.runHook = func(n int) error {
		if n == 1 && fired.CompareAndSwap(false, true) {
			rec, err := b.store.Get(context.Background(), "rx")
			if err == nil {
				err = selfReclaim(context.Background(), b, w, rec.Entry)
			}
			hookErr <- err
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	b.submit(t, "rx", `{"mock_delay":50,"mock_return":{"ok":1}}`, 0)
	rec := b.waitRecord(t, "rx", 10*time.Second, func(r streams.Record) bool { return workflow.State(r.State).Terminal() })
	require.True(t, fired.Load())
	require.NoError(t, <-hookErr)
	runs, _, cancels := b.rp.counts()
	require.Equal(t, string(workflow.StateCompleted), rec.State, "error=%q", rec.Error)
	require.Equal(t, 1, runs, "one owner all along (only the epoch moved): one Runpod job")
	require.Zero(t, cancels, "the recorded Runpod job was canceled as an orphan")
	require.Zero(t, w.Stats().OrphansCanceled)
	require.Zero(t, w.Stats().LeasesLost)
	require.EqualValues(t, 2, rec.Epoch)
	require.Equal(t, "rp-1", rec.RunpodID)
}

// selfReclaimDuringFinalize re-admits our own job (selfReclaim) just before
// its first outcome batch reaches finalize.lua.
type selfReclaimDuringFinalize struct {
	*streams.Store
	b    *testBundle
	w    *Worker
	done atomic.Bool
	err  chan error
}

func (s *selfReclaimDuringFinalize) Finalize(ctx context.Context, outs []streams.Outcome, opts streams.FinalizeOpts) ([]error, error) {
	if s.done.CompareAndSwap(false, true) {
		var err error
		for _, o := range outs {
			if err = selfReclaim(ctx, s.b, s.w, o.Entry); err != nil {
				break
			}
		}
		s.err <- err
	}
	return s.Store.Finalize(ctx, outs, opts)
}

// An outcome fenced by our own re-admit is written again with the new
// epoch: the job is ours, no lease is counted lost.
func TestFinalizeFencedBySelfReclaimIsRewritten(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("w").WithDefaults()
	var lost atomic.Int64
	cfg.Hooks.OnLeaseLost = func(string) { lost.Add(1) }
	st := &selfReclaimDuringFinalize{Store: b.store, b: b, err: make(chan error, 1)}
	w := newWorker(st, cfg)
	st.w = w
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	b.submit(t, "fx", `{"mock_delay":50,"mock_return":{"ok":1}}`, 0)
	rec := b.waitRecord(t, "fx", 5*time.Second, func(r streams.Record) bool { return workflow.State(r.State).Terminal() })
	require.True(t, st.done.Load())
	require.NoError(t, <-st.err)
	require.Equal(t, string(workflow.StateCompleted), rec.State)
	require.EqualValues(t, 2, rec.Epoch, "the outcome is written with the new epoch")
	require.Eventually(t, func() bool { return w.Stats().InFlight == 0 }, 30*time.Second, 10*time.Millisecond)
	require.Zero(t, w.Stats().LeasesLost)
	require.Zero(t, lost.Load())
	require.EqualValues(t, 1, w.Stats().Finalized[workflow.StateCompleted])
}

// TestOutcomeCountedAfterALostReply: the finalize that writes a job's
// outcome is applied by Redis but its reply is lost (go-redis re-sends it on
// a new connection, as it does after a broken one). The retry is recognised
// as this worker's own outcome: the job is counted as finished (Stats,
// OnOutcome), not dropped as "already terminal" by someone else.
func TestOutcomeCountedAfterALostReply(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := redistest.NewProxy(t, b.rdb.Options().Addr)
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), DB: b.rdb.Options().DB})
	t.Cleanup(func() { _ = rdb.Close() })
	var outcomes atomic.Int64
	cfg := b.config("w")
	cfg.Hooks.OnOutcome = func(string, workflow.State) { outcomes.Add(1) }
	// Loaded scripts: the lost reply is finalize's own, not a NOSCRIPT.
	require.NoError(t, b.store.LoadScripts(context.Background()))
	lost := p.SwallowReply("lr1", "COMPLETED")
	w, err := New(rdb, cfg)
	require.NoError(t, err)
	r := &running{w: w, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })

	b.submit(t, "lr1", `{"mock_delay":5,"mock_return":{"ok":1}}`, 0)
	b.waitState(t, "lr1", workflow.StateCompleted, time.Minute)
	<-lost
	require.Eventually(t, func() bool { return w.Stats().InFlight == 0 }, time.Minute, 5*time.Millisecond)
	// Finalized is counted with the drop (Stats reads both under one lock);
	// OnOutcome runs just after it, on the finalizer's goroutine.
	require.EqualValues(t, 1, w.Stats().Finalized[workflow.StateCompleted], "our outcome, counted")
	require.Eventually(t, func() bool { return outcomes.Load() > 0 }, time.Minute, 5*time.Millisecond)
	require.EqualValues(t, 1, outcomes.Load())
	cnt, _ := terminalEvents(b.events(t)["lr1"])
	require.Equal(t, 1, cnt)
}

// heartbeatDuringReAdmit runs one heartbeat of the job's old lease (as the
// heartbeat loop does: store.Heartbeat, then loseLease for each lost one)
// right after the re-admit's script bumped the epoch and before the worker
// adopts the new epoch in memory.
type heartbeatDuringReAdmit struct {
	*streams.Store
	w    *Worker
	old  atomic.Pointer[streams.Lease]
	lost atomic.Int64
}

func (s *heartbeatDuringReAdmit) Admit(ctx context.Context, reqs []streams.AdmitRequest, opts streams.AdmitOpts) ([]streams.AdmitResult, error) {
	res, err := s.Store.Admit(ctx, reqs, opts)
	if l := s.old.Swap(nil); l != nil && err == nil {
		lost, herr := s.Store.Heartbeat(ctx, s.w.cfg.InstanceID, []streams.Lease{*l})
		if herr != nil {
			return nil, herr
		}
		s.lost.Add(int64(len(lost)))
		for _, l := range lost {
			s.w.loseLease(l)
		}
	}
	return res, err
}

// A heartbeat of the old epoch that reaches Redis after our own re-admit
// (and reports the lease lost) must not drop the job: it is still ours.
// Whole-package runs once saw TestRunFencedBySelfReclaimIsRewritten count
// a lost lease this way when the heartbeat loop's tick fell in the window.
func TestHeartbeatRacingSelfReAdmitKeepsJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("w").WithDefaults()
	st := &heartbeatDuringReAdmit{Store: b.store}
	w := newWorker(st, cfg)
	st.w = w
	var fired atomic.Bool
	hookErr := make(chan error, 1)
	b.rp.runHook = func(n int) error {
		if n == 1 && fired.CompareAndSwap(false, true) {
			rec, err := b.store.Get(context.Background(), "hb")
			if err == nil {
				st.old.Store(&streams.Lease{JobID: "hb", Entry: rec.Entry, Epoch: rec.Epoch})
				err = selfReclaim(context.Background(), b, w, rec.Entry)
			}
			hookErr <- err
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	b.submit(t, "hb", `{"mock_delay":50,"mock_return":{"ok":1}}`, 0)
	rec := b.waitRecord(t, "hb", time.Minute, func(r streams.Record) bool { return workflow.State(r.State).Terminal() })
	require.NoError(t, <-hookErr)
	require.EqualValues(t, 1, st.lost.Load(), "the old epoch's heartbeat was refused")
	runs, _, cancels := b.rp.counts()
	require.Equal(t, string(workflow.StateCompleted), rec.State, "error=%q", rec.Error)
	require.Zero(t, w.Stats().LeasesLost)
	require.Equal(t, 1, runs, "one owner all along: one Runpod job")
	require.Zero(t, cancels)
	require.EqualValues(t, 2, rec.Epoch)
}
