package worker

import (
	"context"
	"errors"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// cancelAfterAdmit is the real store, except that a client's Cancel lands
// right after admit.lua ran and before the worker adopted the job, so the
// adopted record does not show the cancel flag.
type cancelAfterAdmit struct {
	*streams.Store
	done atomic.Bool
	err  chan error
}

func (s *cancelAfterAdmit) Admit(ctx context.Context, reqs []streams.AdmitRequest, opts streams.AdmitOpts) ([]streams.AdmitResult, error) {
	res, err := s.Store.Admit(ctx, reqs, opts)
	if err != nil {
		return res, err
	}
	for i, r := range res {
		if r.Status == streams.Admitted && s.done.CompareAndSwap(false, true) {
			_, cerr := s.Store.Cancel(ctx, reqs[i].Sub.JobID, streams.CancelOpts{})
			s.err <- cerr
		}
	}
	return res, err
}

// SubscribeControl drops every cancel hint, as pub/sub does while it
// reconnects: only the record's cancel flag tells.
func (s *cancelAfterAdmit) SubscribeControl(ctx context.Context) (<-chan streams.ControlMessage, error) {
	ch, err := s.Store.SubscribeControl(ctx)
	if err != nil {
		return nil, err
	}
	out := make(chan streams.ControlMessage)
	go func() {
		defer close(out)
		for m := range ch {
			if m.Kind == streams.ControlCancel {
				continue
			}
			select {
			case out <- m:
			case <-ctx.Done():
			}
		}
	}()
	return out, nil
}

// A cancel between admit and adopt, whose hint is missed, is not lost: the /run intent checkpoint sees the record's cancel flag, and
// the job ends CANCELED without ever being sent to Runpod.
func TestCancelBetweenAdmitAndAdoptIsNotSent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("w").WithDefaults()
	st := &cancelAfterAdmit{Store: b.store, err: make(chan error, 1)}
	w := newWorker(st, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	b.submit(t, "cx", `{"mock_delay":300,"mock_return":{"ok":1}}`, 0)
	rec := b.waitRecord(t, "cx", 5*time.Second, func(r streams.Record) bool { return workflow.State(r.State).Terminal() })
	require.True(t, st.done.Load())
	require.NoError(t, <-st.err)
	runs, _, _ := b.rp.counts()
	require.True(t, rec.Cancel)
	require.Equal(t, string(workflow.StateCanceled), rec.State, "error=%q", rec.Error)
	require.Equal(t, workflow.ReasonCanceledUnsent, rec.Error)
	require.Zero(t, runs, "a job canceled before submission was sent to Runpod")
	require.Empty(t, rec.RunpodID)
	require.Zero(t, w.Stats().LeasesLost)
}

// failGetOnce is the real store, except that the first Get after arm fails
// (Redis blipped while the step re-read the record).
type failGetOnce struct {
	*streams.Store
	armed  atomic.Bool
	failed chan struct{}
}

func (s *failGetOnce) Get(ctx context.Context, jobID string) (streams.Record, error) {
	if s.armed.CompareAndSwap(true, false) {
		close(s.failed)
		return streams.Record{}, errors.New("injected: connection reset while reading the record")
	}
	return s.Store.Get(ctx, jobID)
}

// TestCancelHintSurvivesAFailedReRead: a cancel hint arrives, the step that
// would act on it cannot re-read the record (the read fails once), and the
// cancel still happens at the following step, not at the periodic recheck
// 30s later. The job polls every few ms; from the second poll after the
// failed read on, a poll of a job not yet cancelled on the simulator blocks
// for good, so a lost hint can never be rescued by the recheck.
func TestCancelHintSurvivesAFailedReRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{Clock: runpodsim.NewManualClock(time.Now())})
	st := &failGetOnce{Store: b.store, failed: make(chan struct{})}
	cfg := b.config("w").WithDefaults()
	cfg.Runpod = rp
	var runpodID atomic.Value
	var pollsAfter atomic.Int32
	release := make(chan struct{})
	cfg.StepHook = func(_ string, point string) {
		if point != PointPolling {
			return
		}
		select {
		case <-st.failed:
		default:
			return
		}
		if pollsAfter.Add(1) < 2 {
			return // the step whose re-read failed polls on
		}
		if id, _ := runpodID.Load().(string); id != "" {
			if j, ok := srv.Sim.Job(id); ok && j.Status == workflow.RunpodCancelled {
				return // the confirming /status after the /cancel
			}
		}
		<-release
	}
	w := newWorker(st, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	t.Cleanup(func() { close(release) })

	b.submit(t, "hint", `{"mock_delay":600000}`, 0)
	rec := b.waitRecord(t, "hint", 10*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	runpodID.Store(rec.RunpodID)
	// The hint must reach the worker: wait for its subscription.
	keys, err := streams.NewKeys(b.ns)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		n, err := b.rdb.PubSubNumSub(ctx, keys.Control()).Result()
		return err == nil && n[keys.Control()] > 0
	}, 10*time.Second, 5*time.Millisecond)

	st.armed.Store(true)
	_, err = b.store.Cancel(ctx, "hint", streams.CancelOpts{})
	require.NoError(t, err)
	<-st.failed
	rec = b.waitRecord(t, "hint", 20*time.Second, func(r streams.Record) bool { return workflow.State(r.State).Terminal() })
	require.Equal(t, string(workflow.StateCanceled), rec.State, "error %q", rec.Error)
	j, ok := srv.Sim.Job(rec.RunpodID)
	require.True(t, ok)
	require.Equal(t, workflow.RunpodCancelled, j.Status)
}
