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

// TestOwnReadmitsAreNotDeliveries: a job not yet on Runpod (its /run in
// flight) is re-admitted by its own worker MaxDeliveries+1 times (its lease
// lapsed each time, as under load or a Redis blip, and its own claim pass
// took the entry back while the job was still running in memory). Nobody
// crashed: the job must not be judged poison, and completes with one
// Runpod job. A job whose re-deliveries are real (other consumers taking it
// over, no memory of it) is still poisoned: TestAdmitCrashLoopStillPoisoned
// in streams.
func TestOwnReadmitsAreNotDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("w")
	cfg.MaxDeliveries = 2
	cfg.MinIdle = time.Minute // only the test's own aging lapses the lease
	w := newWorker(b.store, cfg.WithDefaults())
	var fired atomic.Bool
	hookErr := make(chan error, 1)
	b.rp.runHook = func(n int) error {
		if n != 1 || !fired.CompareAndSwap(false, true) {
			return nil
		}
		rec, err := b.store.Get(context.Background(), "own")
		for i := 0; err == nil && i < cfg.MaxDeliveries+1; i++ {
			err = selfReclaim(context.Background(), b, w, rec.Entry)
		}
		hookErr <- err
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	b.submit(t, "own", `{"mock_delay":20,"mock_return":{"ok":1}}`, 0)
	var err error
	select {
	case err = <-hookErr:
	case <-time.After(2 * time.Minute):
		err = errors.New("the /run hook never ran")
	}
	require.NoError(t, err)
	rec := b.waitRecord(t, "own", time.Minute, func(r streams.Record) bool { return workflow.State(r.State).Terminal() })
	require.Equal(t, string(workflow.StateCompleted), rec.State, "error=%q", rec.Error)
	require.EqualValues(t, 1+cfg.MaxDeliveries+1, rec.Epoch, "every re-admit took the job")
	require.Equal(t, 1, rec.Deliveries, "own re-admits are not deliveries")
	runs, _, _ := b.rp.counts()
	require.Equal(t, 1, runs)
	require.Zero(t, w.Stats().Poisoned)
	require.Zero(t, b.xlenDead(t))
}

func (b *testBundle) xlenDead(t *testing.T) int64 {
	t.Helper()
	n, err := b.rdb.XLen(context.Background(), b.store.Keys().Dead()).Result()
	require.NoError(t, err)
	return n
}
