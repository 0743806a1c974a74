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

// idWriteFails fails, while on, every checkpoint that records a Runpod id
// with a transient error (Redis LOADING after a restart), and skips every
// heartbeat while paused.
type idWriteFails struct {
	pausableHeartbeat
	on atomic.Bool
}

func (s *idWriteFails) Checkpoint(ctx context.Context, cp streams.Checkpoint, now time.Time) error {
	if s.on.Load() && cp.RunpodID != "" {
		return errors.New("LOADING Redis is loading the dataset in memory")
	}
	return s.Store.Checkpoint(ctx, cp, now)
}

// Worker A sends /run and cannot record the Runpod id (a transient error):
// the id lives only in A's pending checkpoint. A pauses past its lease; B
// takes the job over and submits it again. When A learns its lease is lost
// it drops the job: its unrecorded Runpod job must be canceled (or recorded
// in {ns}:orphans), never left running untracked.
func TestUnrecordedRunpodIDCanceledWhenLeaseLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sim := startSim(t)
	stA := &idWriteFails{pausableHeartbeat: pausableHeartbeat{Store: b.store}}
	stA.on.Store(true)
	stA.paused.Store(true)

	cfgA := b.config("A")
	cfgA.Runpod = sim.rp
	wA := newWorker(stA, cfgA.WithDefaults())
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan error, 1)
	go func() { doneA <- wA.Run(ctxA) }()
	defer func() { stopA(); <-doneA }()

	b.submit(t, "lk", `{"mock_delay":600000,"mock_return":{"ok":1}}`, 0)
	require.Eventually(t, func() bool { return len(sim.srv.Sim.Jobs()) == 1 }, 15*time.Second, 10*time.Millisecond)
	rpA := sim.srv.Sim.Jobs()[0].ID
	require.Empty(t, b.get(t, "lk").RunpodID, "A could not record its id")

	cfgB := b.config("B")
	cfgB.Runpod = sim.rp
	cfgB.MinIdle = time.Minute
	rB := b.start(t, cfgB)
	ageEntry(t, b, "lk")
	rec := b.waitRecord(t, "lk", 15*time.Second, func(r streams.Record) bool {
		_, _ = rB.w.RecoverNow(context.Background())
		return r.Owner == "B" && r.RunpodID != ""
	})
	require.NotEqual(t, rpA, rec.RunpodID)

	stA.paused.Store(false) // A wakes: its heartbeat learns the lease is lost
	require.Eventually(t, func() bool { return wA.Stats().LeasesLost >= 1 }, 15*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		info, _ := sim.srv.Sim.Job(rpA)
		if info.Status == workflow.RunpodCancelled {
			return true
		}
		ok, _ := b.rdb.HExists(context.Background(), b.store.Keys().Orphans(), rpA).Result()
		return ok
	}, 15*time.Second, 20*time.Millisecond, "A's unrecorded Runpod job %s is neither canceled nor in orphans", rpA)
	info, _ := sim.srv.Sim.Job(rec.RunpodID)
	require.NotEqual(t, workflow.RunpodCancelled, info.Status, "B's job is left alone")
}

// Worker A cannot record its Runpod id and shuts down: the job is handed
// off, and the id known only to A's memory must be canceled (or recorded in
// {ns}:orphans) before A stops.
func TestUnrecordedRunpodIDCanceledAtShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sim := startSim(t)
	stA := &idWriteFails{pausableHeartbeat: pausableHeartbeat{Store: b.store}}
	stA.on.Store(true)

	cfgA := b.config("A")
	cfgA.Runpod = sim.rp
	wA := newWorker(stA, cfgA.WithDefaults())
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan error, 1)
	go func() { doneA <- wA.Run(ctxA) }()

	b.submit(t, "ls", `{"mock_delay":600000,"mock_return":{"ok":1}}`, 0)
	require.Eventually(t, func() bool { return len(sim.srv.Sim.Jobs()) == 1 }, 15*time.Second, 10*time.Millisecond)
	rpA := sim.srv.Sim.Jobs()[0].ID
	stopA()
	<-doneA
	info, _ := sim.srv.Sim.Job(rpA)
	inOrphans, _ := b.rdb.HExists(context.Background(), b.store.Keys().Orphans(), rpA).Result()
	require.True(t, info.Status == workflow.RunpodCancelled || inOrphans,
		"A's unrecorded Runpod job %s is %s and not in orphans", rpA, info.Status)
}
