package worker

import (
	"context"
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
			_, cerr := s.Store.Cancel(ctx, reqs[i].Sub.JobID, time.Now())
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
