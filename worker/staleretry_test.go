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

// firstRun429 answers the first /run with a 429 (nothing created) and
// counts every /run.
type firstRun429 struct {
	workflow.Runpod
	runs atomic.Int32
}

func (r *firstRun429) Run(ctx context.Context, req workflow.RunRequest) (workflow.RunpodJob, error) {
	if r.runs.Add(1) == 1 {
		return workflow.RunpodJob{}, &workflow.ActivityError{Op: "run", StatusCode: 429, Transient: true, Err: errors.New("too many requests")}
	}
	return r.Runpod.Run(ctx, req)
}

// gateIntent holds A's second /run intent write until the test opens it.
type gateIntent struct {
	pausableHeartbeat
	gate    chan struct{}
	waiting chan struct{}
	intents atomic.Int32
}

func (s *gateIntent) Checkpoint(ctx context.Context, cp streams.Checkpoint, now time.Time) error {
	if cp.Step == string(workflow.StepSubmitting) && cp.RunpodID == "" && s.intents.Add(1) == 2 {
		close(s.waiting)
		<-s.gate
	}
	return s.Store.Checkpoint(ctx, cp, now)
}

// Worker A's first /run is refused (429) and a retry is scheduled; A stalls
// (no heartbeat) and B takes the job over and completes it. A's retry then
// fires: it must never call /run for a job that left it (issue 7 item 1,
// soak 04:27Z and 05:05Z soak-013713).
func TestStaleRunRetryNeverSends(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sim := startSim(t)
	stA := &gateIntent{pausableHeartbeat: pausableHeartbeat{Store: b.store}, gate: make(chan struct{}), waiting: make(chan struct{})}
	stA.paused.Store(true)
	rpA := &firstRun429{Runpod: sim.rp}

	cfgA := b.config("A")
	cfgA.Runpod = rpA
	wA := newWorker(stA, cfgA.WithDefaults())
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan error, 1)
	go func() { doneA <- wA.Run(ctxA) }()
	defer func() { stopA(); <-doneA }()

	b.submit(t, "sr", `{"mock_delay":10,"mock_return":{"ok":1}}`, 0)
	select {
	case <-stA.waiting: // A's retry is at its intent write
	case <-time.After(30 * time.Second):
		t.Fatal("A never retried its /run")
	}
	require.EqualValues(t, 1, rpA.runs.Load())

	cfgB := b.config("B")
	cfgB.Runpod = sim.rp
	cfgB.MinIdle = time.Minute
	rB := b.start(t, cfgB)
	ageEntry(t, b, "sr")
	b.waitRecord(t, "sr", 15*time.Second, func(r streams.Record) bool {
		_, _ = rB.w.RecoverNow(context.Background())
		return r.Owner == "B" && r.RunpodID != ""
	})
	sim.clock.Advance(time.Second)
	rec := b.waitRecord(t, "sr", 15*time.Second, func(r streams.Record) bool {
		sim.clock.Advance(100 * time.Millisecond)
		return workflow.State(r.State).Terminal()
	})
	require.Equal(t, string(workflow.StateCompleted), rec.State, "error=%q", rec.Error)

	close(stA.gate) // A's stale retry goes on
	require.Eventually(t, func() bool { return wA.Stats().InFlight == 0 }, 15*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 1, rpA.runs.Load(), "A sent a /run for a job another worker finished")
	require.Len(t, sim.srv.Sim.Jobs(), 1)
}
