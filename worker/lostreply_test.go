package worker

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Worker A records its Runpod id; Redis applies the write but the reply is
// lost (the proxy swallows it and cuts the connection); meanwhile B takes
// the job over with that id and polls it. A's retried write comes back
// fenced. A must learn from the record that the id is recorded, and not
// cancel the Runpod job B is polling: B completes the job.
func TestLostReplyIsNotAnOrphan(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sim := startSim(t)
	proxy := redistest.NewProxy(t, redistest.Addr())
	rdbA := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	t.Cleanup(func() { _ = rdbA.Close() })
	stRaw, err := streams.New(rdbA, streams.Config{Namespace: b.ns})
	require.NoError(t, err)
	stA := &pausableHeartbeat{Store: stRaw}
	stA.paused.Store(true) // A's retry must be what meets the takeover, not its heartbeat

	claimed := make(chan struct{})
	bReady := make(chan *running, 1)
	onSwallow := func() {
		// The write is applied; before A hears anything, B takes over.
		defer close(claimed)
		rB := <-bReady
		ageEntry(t, b, "lr")
		require.Eventually(t, func() bool {
			_, _ = rB.w.RecoverNow(context.Background())
			return b.get(t, "lr").Owner == "B"
		}, 10*time.Second, 20*time.Millisecond)
	}

	cfgA := b.config("A")
	cfgA.Runpod = sim.rp
	cfgA.StepHook = func(id, point string) {
		if id == "lr" && point == PointAfterRun {
			proxy.SwallowReplyAfter(onSwallow, "\r\n"+streams.EventQueued+"\r\n")
		}
	}
	wA := newWorker(stA, cfgA.WithDefaults())
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan error, 1)
	go func() { doneA <- wA.Run(ctxA) }()
	defer func() { stopA(); <-doneA }()

	b.submit(t, "lr", `{"mock_delay":1000,"mock_return":{"ok":1}}`, 0)
	b.waitRecord(t, "lr", 10*time.Second, func(r streams.Record) bool { return r.Owner == "A" })
	// B starts once A owns the job; its MinIdle is long, so only the aged
	// entry (ageEntry, at the swallowed reply) is taken over.
	cfgB := b.config("B")
	cfgB.Runpod = sim.rp
	cfgB.MinIdle = time.Minute
	cfgB.HeartbeatInterval = time.Second
	bReady <- b.start(t, cfgB)
	select {
	case <-claimed:
	case <-time.After(15 * time.Second):
		t.Fatal("the Runpod id write was never swallowed")
	}
	rec := b.get(t, "lr")
	require.Equal(t, "B", rec.Owner)
	require.NotEmpty(t, rec.RunpodID, "A's write was applied")
	rp := rec.RunpodID

	// A's retry is refused; whatever A does about it must not cancel rp.
	require.Eventually(t, func() bool {
		return wA.Stats().LeasesLost >= 1 || wA.Stats().InFlight == 0
	}, 10*time.Second, 10*time.Millisecond)
	sim.clock.Advance(10 * time.Second)
	rec = b.waitRecord(t, "lr", 10*time.Second, func(r streams.Record) bool { return workflow.State(r.State).Terminal() })
	require.Equal(t, string(workflow.StateCompleted), rec.State, "error=%q", rec.Error)
	require.Equal(t, "B", rec.Owner)
	info, _ := sim.srv.Sim.Job(rp)
	require.Equal(t, workflow.RunpodCompleted, info.Status)
	require.Zero(t, sim.srv.Sim.Stats().Requests["cancel"], "nobody asked for a cancel")
	require.Zero(t, wA.Stats().OrphansCanceled)
	require.Len(t, sim.srv.Sim.Jobs(), 1)
}
