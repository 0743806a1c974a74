package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func TestHappyPathAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var outcomes sync.Map
	var outcomeCount atomic.Int64
	const n = 300
	ws := make([]*running, 3)
	for i := range ws {
		cfg := b.config(fmt.Sprintf("w%d", i))
		cfg.MaxInFlight = 50
		cfg.Hooks.OnOutcome = func(id string, st workflow.State) {
			outcomeCount.Add(1)
			if _, dup := outcomes.LoadOrStore(id, st); dup {
				t.Errorf("second outcome for %s", id)
			}
		}
		ws[i] = b.start(t, cfg)
	}
	ids := jobIDs("job", n)
	for i, id := range ids {
		b.submit(t, id, fmt.Sprintf(`{"mock_delay":%d,"mock_return":{"n":%d}}`, 20+i%50, i), 0)
	}
	require.Eventually(t, func() bool { return outcomeCount.Load() == n }, 30*time.Second, 20*time.Millisecond,
		"outcomes: %d of %d", outcomeCount.Load(), n)

	evs := b.events(t)
	for i, id := range ids {
		rec := b.get(t, id)
		require.Equal(t, string(workflow.StateCompleted), rec.State, id)
		require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i), string(rec.Output), id)
		cnt, last := terminalEvents(evs[id])
		require.Equal(t, 1, cnt, "job %s: terminal events", id)
		require.Equal(t, streams.EventCompleted, last.Type)
		require.Equal(t, streams.EventSubmitted, evs[id][0].Type)
		require.Equal(t, streams.EventQueued, evs[id][1].Type, "job %s events %+v", id, evs[id])
	}
	runs, _, _ := b.rp.counts()
	require.Equal(t, n, runs, "one /run per job")
	pending, err := b.store.Pending(context.Background())
	require.NoError(t, err)
	require.Zero(t, pending, "every submission acknowledged")

	var finalized uint64
	busy := 0
	for _, r := range ws {
		r.stop(t)
		s := r.w.Stats()
		require.Zero(t, s.InFlight)
		finalized += s.Finalized[workflow.StateCompleted]
		if s.Finalized[workflow.StateCompleted] > 0 {
			busy++
		}
	}
	require.Equal(t, uint64(n), finalized)
	require.GreaterOrEqual(t, busy, 2, "work spread over the workers")
}

func TestCancelBeforeRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.submit(t, "c1", `{"mock_delay":10}`, 0)
	st, err := b.store.Cancel(context.Background(), "c1", streams.CancelOpts{})
	require.NoError(t, err)
	require.Equal(t, string(workflow.StateSubmitted), st)
	b.start(t, b.config("w"))
	rec := b.waitState(t, "c1", workflow.StateCanceled, 5*time.Second)
	require.Equal(t, workflow.ReasonCanceledUnsent, rec.Error)
	require.Empty(t, rec.RunpodID)
	runs, _, _ := b.rp.counts()
	require.Zero(t, runs, "a job canceled before /run is never sent")
}

func TestCancelAfterRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("w")
	// Polls minutes apart (past the wait below): reaching CANCELED proves
	// the cancel acted at once, not at the next poll, on any machine.
	cfg.Poll = workflow.PollPolicy{Initial: 5 * time.Minute, Max: 5 * time.Minute, Jitter: -1}
	b.start(t, cfg)
	b.submit(t, "c2", `{"mock_delay":60000}`, 0)
	rec := b.waitRecord(t, "c2", 5*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	require.Equal(t, string(workflow.StateQueued), rec.State)

	_, err := b.store.Cancel(context.Background(), "c2", streams.CancelOpts{})
	require.NoError(t, err)
	rec = b.waitState(t, "c2", workflow.StateCanceled, time.Minute)
	require.Equal(t, workflow.ReasonCanceled, rec.Error)
	require.True(t, b.rp.canceled(rec.RunpodID), "runpod /cancel called")
	require.Equal(t, workflow.RunpodCancelled, b.rp.status(rec.RunpodID))
	cnt, last := terminalEvents(b.events(t)["c2"])
	require.Equal(t, 1, cnt)
	require.Equal(t, streams.EventCanceled, last.Type)
}

func TestJobTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.config("w"))
	b.submit(t, "t1", `{"mock_delay":60000}`, 400*time.Millisecond)
	rec := b.waitState(t, "t1", workflow.StateTimedOut, 5*time.Second)
	require.Equal(t, workflow.ReasonDeadline, rec.Error)
	require.NotEmpty(t, rec.RunpodID)
	require.True(t, b.rp.canceled(rec.RunpodID), "a timed-out job is canceled on Runpod")
}

func TestDefaultJobTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("w")
	cfg.JobTimeout = 300 * time.Millisecond
	b.start(t, cfg)
	b.submit(t, "t2", `{"mock_delay":60000}`, 0)
	b.waitState(t, "t2", workflow.StateTimedOut, 5*time.Second)
}

func TestRunpodFailed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.config("w"))
	b.submit(t, "f1", `{"mock_delay":30,"mock_error":"CUDA out of memory"}`, 0)
	rec := b.waitState(t, "f1", workflow.StateFailed, 5*time.Second)
	require.Equal(t, "CUDA out of memory", rec.Error)
	cnt, last := terminalEvents(b.events(t)["f1"])
	require.Equal(t, 1, cnt)
	require.Equal(t, streams.EventFailed, last.Type)
	require.Equal(t, "CUDA out of memory", last.Payload.Error)
}

func TestProgressEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.config("w"))
	b.submit(t, "p1", `{"mock_delay":500,"mock_progress":{"pct":50},"mock_return":1}`, 0)
	b.waitState(t, "p1", workflow.StateCompleted, 5*time.Second)
	var progress []streams.Event
	for _, e := range b.events(t)["p1"] {
		if e.Type == streams.EventProgress {
			progress = append(progress, e)
		}
	}
	require.NotEmpty(t, progress, "IN_QUEUE → IN_PROGRESS emits a progress event")
	require.Equal(t, string(workflow.StateInProgress), progress[0].State)
	require.JSONEq(t, `{"pct":50}`, string(progress[0].Payload.Output))
	require.Len(t, progress, 1, "an unchanged status and output emit nothing more")
}

func TestPermanentRunErrorFails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.rp.runHook = func(int) error {
		return &workflow.ActivityError{Op: "run", StatusCode: 400, Err: fmt.Errorf("input: bad field")}
	}
	b.start(t, b.config("w"))
	b.submit(t, "e1", `{}`, 0)
	rec := b.waitState(t, "e1", workflow.StateFailed, 5*time.Second)
	require.Contains(t, rec.Error, "HTTP 400")
}

func TestTransientRunErrorRetries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.rp.runHook = func(n int) error {
		if n <= 2 {
			return &workflow.ActivityError{Op: "run", StatusCode: 503, Transient: true, Err: fmt.Errorf("unavailable")}
		}
		return nil
	}
	b.start(t, b.config("w"))
	b.submit(t, "e2", `{"mock_delay":10}`, 0)
	rec := b.waitState(t, "e2", workflow.StateCompleted, 5*time.Second)
	require.Equal(t, 3, rec.Attempts, "each /run attempt recorded")
}

func TestSubmitUncertainFailPolicy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.rp.runHook = func(int) error {
		return &workflow.ActivityError{Op: "run", Transient: true, Err: fmt.Errorf("read: %w", workflow.ErrSubmitUncertain)}
	}
	cfg := b.config("w")
	cfg.SubmitUncertain = workflow.SubmitUncertainFail
	b.start(t, cfg)
	b.submit(t, "u1", `{}`, 0)
	rec := b.waitState(t, "u1", workflow.StateFailed, 5*time.Second)
	require.Contains(t, rec.Error, workflow.ReasonSubmitUncertain)
}

// crashAfterRun plays a worker that admitted jobs, submitted them to Runpod,
// recorded the Runpod ids and then died (no heartbeat, no handoff).
func crashAfterRun(t *testing.T, b *testBundle, consumer string, n int) []string {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, b.store.EnsureGroup(ctx))
	msgs, err := b.store.Read(ctx, consumer, n, 0)
	require.NoError(t, err)
	require.Len(t, msgs, n)
	reqs := make([]streams.AdmitRequest, len(msgs))
	for i, m := range msgs {
		reqs[i] = streams.NewAdmitRequest(m, 1<<20)
	}
	res, err := b.store.Admit(ctx, reqs, streams.AdmitOpts{Consumer: consumer, MaxDeliveries: 5, ResultTTL: time.Hour, Now: time.Now()})
	require.NoError(t, err)
	var rpIDs []string
	for i, r := range res {
		require.Equal(t, streams.Admitted, r.Status)
		id, epoch := r.Record.JobID, r.Record.Epoch
		require.NoError(t, b.store.Checkpoint(ctx, streams.Checkpoint{JobID: id, Owner: consumer, Epoch: epoch, Step: string(workflow.StepSubmitting), Attempts: 1}, time.Now()))
		rj, err := b.rp.Run(ctx, workflow.RunRequest{Input: json.RawMessage(reqs[i].Sub.Input)})
		require.NoError(t, err)
		require.NoError(t, b.store.Checkpoint(ctx, streams.Checkpoint{JobID: id, Owner: consumer, Epoch: epoch, Step: string(workflow.StepPoll),
			State: string(workflow.StateQueued), RunpodID: rj.ID, RunpodStatus: string(rj.Status),
			Event: &streams.EventInput{Type: streams.EventQueued, Payload: streams.EventPayload{RunpodID: rj.ID}}}, time.Now()))
		rpIDs = append(rpIDs, rj.ID)
	}
	return rpIDs
}

func TestRecoverNowResumesWithoutSecondRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 20
	for _, id := range jobIDs("r", n) {
		b.submit(t, id, `{"mock_delay":200,"mock_return":"ok"}`, 0)
	}
	rpIDs := crashAfterRun(t, b, "dead", n)
	runsBefore, _, _ := b.rp.counts()
	require.Equal(t, n, runsBefore)

	var reclaimed atomic.Int64
	cfg := b.config("rescuer")
	cfg.Hooks.OnReclaim = func(k int) { reclaimed.Add(int64(k)) }
	r := b.start(t, cfg)
	// Entries become claimable once idle for MinIdle (1s).
	admitted := 0
	require.Eventually(t, func() bool {
		k, err := r.w.RecoverNow(context.Background())
		require.NoError(t, err)
		admitted += k
		return admitted == n
	}, 5*time.Second, 100*time.Millisecond)
	for i, id := range jobIDs("r", n) {
		rec := b.waitState(t, id, workflow.StateCompleted, 5*time.Second)
		require.Equal(t, rpIDs[i], rec.RunpodID, "re-attached to the same Runpod job")
		require.Equal(t, 1, rec.Attempts)
		// Deliveries count admits before Runpod only (streams, M1): this
		// takeover found the job at POLL, so it is not counted.
		require.Equal(t, 1, rec.Deliveries)
	}
	runs, _, _ := b.rp.counts()
	require.Equal(t, n, runs, "no second /run after a takeover at POLL")
	require.EqualValues(t, n, reclaimed.Load())
	require.EqualValues(t, n, r.w.Stats().Reclaimed)
}

func TestTakeoverAtSubmittingAppliesPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		policy workflow.SubmitUncertainPolicy
		want   workflow.State
		runs   int
	}{
		{workflow.SubmitUncertainResubmit, workflow.StateCompleted, 1},
		{workflow.SubmitUncertainFail, workflow.StateFailed, 0},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			b.submit(t, "s1", `{"mock_delay":10}`, 0)
			require.NoError(t, b.store.EnsureGroup(ctx))
			msgs, err := b.store.Read(ctx, "dead", 1, 0)
			require.NoError(t, err)
			res, err := b.store.Admit(ctx, []streams.AdmitRequest{streams.NewAdmitRequest(msgs[0], 1<<20)},
				streams.AdmitOpts{Consumer: "dead", MaxDeliveries: 5, ResultTTL: time.Hour, Now: time.Now()})
			require.NoError(t, err)
			// The dead worker recorded its intent and died during /run.
			require.NoError(t, b.store.Checkpoint(ctx, streams.Checkpoint{JobID: "s1", Owner: res[0].Record.Owner, Epoch: res[0].Record.Epoch,
				Step: string(workflow.StepSubmitting), Attempts: 1}, time.Now()))

			cfg := b.config("rescuer")
			cfg.SubmitUncertain = tc.policy
			r := b.start(t, cfg)
			require.Eventually(t, func() bool {
				k, err := r.w.RecoverNow(ctx)
				require.NoError(t, err)
				return k == 1
			}, 5*time.Second, 100*time.Millisecond)
			rec := b.waitState(t, "s1", tc.want, 5*time.Second)
			runs, _, _ := b.rp.counts()
			require.Equal(t, tc.runs, runs)
			if tc.want == workflow.StateFailed {
				require.Contains(t, rec.Error, workflow.ReasonSubmitUncertain)
			}
		})
	}
}

func TestFencedAfterRunCancelsOrphan(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var lost atomic.Int64
	cfg := b.config("victim")
	cfg.Hooks.OnLeaseLost = func(string) { lost.Add(1) }
	stole := make(chan int64, 1)
	cfg.StepHook = func(jobID, point string) {
		if point != PointAfterRun {
			return
		}
		// Another worker takes the job over while /run's answer is in hand.
		rec, err := b.steal(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		stole <- rec.Epoch
	}
	r := b.start(t, cfg)
	b.submit(t, "o1", `{"mock_delay":60000}`, 0)
	var epoch int64
	select {
	case epoch = <-stole:
	case <-time.After(5 * time.Second):
		t.Fatal("the job was never submitted")
	}
	require.Eventually(t, func() bool { return r.w.Stats().OrphansCanceled == 1 }, 30*time.Second, 10*time.Millisecond)
	runs, _, cancels := b.rp.counts()
	require.Equal(t, 1, runs)
	require.Equal(t, 1, cancels)
	require.True(t, b.rp.canceled("rp-1"))
	rec := b.get(t, "o1")
	require.Equal(t, epoch, rec.Epoch)
	require.Equal(t, "thief", rec.Owner)
	require.Empty(t, rec.RunpodID, "the fenced worker's id was never recorded")
	require.EqualValues(t, 1, lost.Load())
	require.Zero(t, r.w.Stats().InFlight)
}

func TestGracefulShutdownHandsOff(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 10
	// Leases that cannot lapse (the peer's start pass would take lapsed
	// ones) and jobs that outlast a slow start: only the handoff moves them.
	leaving := b.config("leaving")
	leaving.MinIdle = time.Minute
	a := b.start(t, leaving)
	for _, id := range jobIDs("h", n) {
		b.submit(t, id, `{"mock_delay":10000,"mock_return":"done"}`, 0)
	}
	// Wait until the leaving worker has every job on Runpod.
	for _, id := range jobIDs("h", n) {
		b.waitRecord(t, id, 30*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	}
	require.Equal(t, n, a.w.Stats().InFlight)

	var reclaimedAt atomic.Int64
	cfg := b.config("staying")
	cfg.MinIdle = time.Minute
	cfg.ClaimInterval = time.Hour // only the handoff can make it claim
	cfg.Hooks.OnReclaim = func(int) { reclaimedAt.CompareAndSwap(0, time.Now().UnixNano()) }
	peer := b.start(t, cfg)
	// The peer's claimer made its start pass; MinIdle has not passed, so it
	// has nothing yet.
	require.Zero(t, peer.w.Stats().Reclaimed)

	stopped := time.Now()
	a.stop(t)
	require.EqualValues(t, n, a.w.Stats().HandedOff)
	require.Eventually(t, func() bool { return peer.w.Stats().Reclaimed == n }, 30*time.Second, 10*time.Millisecond,
		"peer reclaimed %d of %d", peer.w.Stats().Reclaimed, n)
	t.Logf("handoff picked up %s after stop began", time.Duration(reclaimedAt.Load()-stopped.UnixNano()))
	for _, id := range jobIDs("h", n) {
		rec := b.waitState(t, id, workflow.StateCompleted, time.Minute)
		require.Equal(t, "staying", rec.Owner)
	}
	runs, _, _ := b.rp.counts()
	require.Equal(t, n, runs, "the peer re-attached, no second /run")
}

func TestShutdownCancelsSlowCallsWithErrStopping(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.rp.statusBlock = make(chan struct{}) // /status hangs until ctx ends
	cfg := b.config("w")
	cfg.ShutdownTimeout = 200 * time.Millisecond
	r := b.start(t, cfg)
	b.submit(t, "z1", `{"mock_delay":10}`, 0)
	b.waitRecord(t, "z1", 5*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	_, statuses, _ := b.rp.counts()
	require.Zero(t, statuses)
	// The /status blocks until its ctx ends: Run returning at all (stop
	// fails after 15 s) proves the shutdown canceled the call.
	r.stop(t)
	require.EqualValues(t, 1, r.w.Stats().HandedOff, "the job is handed off, not failed")
	rec := b.get(t, "z1")
	require.Equal(t, string(workflow.StateQueued), rec.State)
}

func TestLeaseLostDropsJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.rp.statusBlock = make(chan struct{})
	var lost atomic.Int64
	cfg := b.config("w")
	cfg.Hooks.OnLeaseLost = func(string) { lost.Add(1) }
	r := b.start(t, cfg)
	b.submit(t, "l1", `{"mock_delay":10}`, 0)
	b.waitRecord(t, "l1", 5*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	// Another worker takes the entry over; the next heartbeat notices.
	_, err := b.steal(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return lost.Load() == 1 && r.w.Stats().InFlight == 0 }, 30*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 1, r.w.Stats().LeasesLost)
}

func TestPoisonSubmission(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var poisoned atomic.Int64
	cfg := b.config("w")
	cfg.MaxInputBytes = 64
	cfg.Hooks.OnPoison = func(string) { poisoned.Add(1) }
	b.start(t, cfg)
	// A raw producer (plain XADD) may send anything; Submit would refuse it.
	big := fmt.Sprintf(`{"pad":"%0100d"}`, 0)
	require.NoError(t, b.rdb.XAdd(context.Background(), &redis.XAddArgs{
		Stream: b.store.Keys().Submissions(), Values: []any{"job_id", "big", "input", big},
	}).Err())
	b.submit(t, "ok", `{"mock_delay":5}`, 0)
	b.waitState(t, "ok", workflow.StateCompleted, 5*time.Second)
	rec := b.waitState(t, "big", workflow.StateFailed, 5*time.Second)
	require.NotEmpty(t, rec.Error)
	require.EqualValues(t, 1, poisoned.Load())
	runs, _, _ := b.rp.counts()
	require.Equal(t, 1, runs)
}

func TestJanitorTrimsOldEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.addOld(t, b.store.Keys().Events(), 3, time.Now().Add(-8*24*time.Hour).UnixMilli())
	b.submit(t, "recent", `{"mock_delay":5}`, 0)

	// Ages are measured on Redis's clock (stream ids are): a worker whose
	// own clock says eight days later trims the old events, not the recent.
	cfg := b.config("w2")
	cfg.Now = func() time.Time { return time.Now().Add(8 * 24 * time.Hour) }
	b.start(t, cfg)
	b.waitState(t, "recent", workflow.StateCompleted, 5*time.Second)
	require.Eventually(t, func() bool {
		evs := b.events(t)
		_, old := evs["old-0"]
		return !old && len(evs["recent"]) > 0
	}, 5*time.Second, 20*time.Millisecond)
}

// TestHooksMayCallStats: a lease-loss hook that reads the worker's Stats
// (as a metrics adapter would) returns, and the worker goes on: no hook
// runs under the worker's lock. Before, the heartbeater called OnLeaseLost
// holding it and the worker deadlocked.
func TestHooksMayCallStats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.rp.statusBlock = make(chan struct{})
	cfg := b.config("w").WithDefaults()
	var w *Worker
	seen := make(chan Stats, 1)
	cfg.Hooks.OnLeaseLost = func(string) { seen <- w.Stats() }
	cfg.Hooks.OnTransition = func(string, workflow.State, workflow.State) { _ = w.Stats() }
	w = newWorker(b.store, cfg)
	r := &running{w: w, done: make(chan error, 1)}
	rctx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	go func() { r.done <- w.Run(rctx) }()
	t.Cleanup(func() { r.stop(t) })

	b.submit(t, "h1", `{"mock_delay":10}`, 0)
	b.waitRecord(t, "h1", 5*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	_, err := b.steal(ctx)
	require.NoError(t, err)
	select {
	case st := <-seen:
		require.EqualValues(t, 1, st.LeasesLost)
	case <-time.After(10 * time.Second):
		t.Fatal("the lease was not lost")
	}
	done := make(chan struct{})
	go func() { _ = w.Stats(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stats blocks: the worker is deadlocked")
	}
}
