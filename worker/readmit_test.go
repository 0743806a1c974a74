package worker

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// simBundle is a Runpod simulator on a manual clock (its jobs finish only
// when the test advances it) and an HTTP client for it.
type simBundle struct {
	srv   *runpodsim.Server
	clock *runpodsim.ManualClock
	rp    *activities.Client
}

func startSim(t *testing.T) *simBundle {
	t.Helper()
	clock := runpodsim.NewManualClock(time.Now())
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep-test", APIKey: "sim-key", GPUWorkers: 4, Clock: clock})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	httpClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(httpClient.CloseIdleConnections)
	rp, err := activities.New(activities.Config{APIKey: "sim-key", EndpointID: "ep-test", BaseURL: srv.URL, HTTPClient: httpClient})
	require.NoError(t, err)
	return &simBundle{srv: srv, clock: clock, rp: rp}
}

// pausableHeartbeat skips every heartbeat while paused, as a worker whose
// VM is paused (or partitioned away) would.
type pausableHeartbeat struct {
	*streams.Store
	paused atomic.Bool
}

func (p *pausableHeartbeat) Beat(ctx context.Context, consumer string, lv streams.Liveness, leases []streams.Lease) (streams.BeatResult, error) {
	if p.paused.Load() {
		return streams.BeatResult{}, nil
	}
	return p.Store.Beat(ctx, consumer, lv, leases)
}

// ageEntry makes the job's entry look idle for an hour, so any claim pass
// takes it (its lease lapsed).
func ageEntry(t *testing.T, b *testBundle, jobID string) {
	t.Helper()
	rec := b.get(t, jobID)
	require.NoError(t, b.rdb.Do(context.Background(), "XCLAIM", b.store.Keys().Submissions(), b.store.Group(), rec.Owner, 0, rec.Entry,
		"IDLE", 3600000, "JUSTID").Err())
	// A lapsed lease: the owner's liveness key expired with the idle time.
	require.NoError(t, b.rdb.Del(context.Background(), b.store.Keys().Alive(rec.Owner)).Err())
}

// Worker A owns a job (epoch 1) and stalls with its /run answer (rp-1) in
// hand; B takes the job over (epoch 2), resubmits, records rp-B and shuts
// down; A's claimer takes the job back (epoch 3). A must resume from the
// record (poll rp-B) and cancel rp-1, not write rp-1 over rp-B.
func TestReadmitAfterAnotherOwnerResumesFromRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sim := startSim(t)

	stalled, release := make(chan struct{}), make(chan struct{})
	var stalls atomic.Int32
	cfgA := b.config("A")
	cfgA.Runpod = sim.rp
	cfgA.StepHook = func(id, point string) {
		if id == "j" && point == PointAfterRun && stalls.Add(1) == 1 {
			close(stalled)
			<-release
		}
	}
	stA := &pausableHeartbeat{Store: b.store}
	wA := newWorker(stA, cfgA.WithDefaults())
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan error, 1)
	go func() { doneA <- wA.Run(ctxA) }()
	released := false
	defer func() {
		if !released {
			close(release)
		}
		stopA()
		<-doneA
	}()

	b.submit(t, "j", `{"mock_delay":1000,"mock_return":{"ok":1}}`, 0)
	<-stalled // A holds rp-1, not yet recorded
	stA.paused.Store(true)
	require.Len(t, sim.srv.Sim.Jobs(), 1)
	rp1 := sim.srv.Sim.Jobs()[0].ID

	// B takes the job over and resubmits (SubmitUncertainPolicy resubmit).
	cfgB := b.config("B")
	cfgB.Runpod = sim.rp
	// B's lease must not lapse on a loaded box (a 1s lease with 200ms beats
	// did: a late beat let a claim pass re-admit the job at epoch 3 before
	// the test read epoch 2); B's handoff at stop ends it, not its TTL.
	cfgB.MinIdle = time.Minute
	cfgB.HeartbeatInterval = time.Second
	rB := b.start(t, cfgB)
	ageEntry(t, b, "j")
	require.Eventually(t, func() bool {
		_, _ = rB.w.RecoverNow(context.Background())
		return b.get(t, "j").Owner == "B"
	}, 10*time.Second, 20*time.Millisecond)
	rec := b.waitRecord(t, "j", 10*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	rpB := rec.RunpodID
	require.NotEqual(t, rp1, rpB)
	require.EqualValues(t, 2, rec.Epoch)
	rB.stop(t) // hands the lease off

	// A's claimer takes the job back at epoch 3 (nudged by B's handoff).
	require.Eventually(t, func() bool {
		r := b.get(t, "j")
		if r.Owner != "A" {
			_, _ = wA.RecoverNow(context.Background())
			return false
		}
		return r.Epoch == 3
	}, 10*time.Second, 20*time.Millisecond)
	close(release)
	released = true

	// rp-1 gets canceled; rp-B is what the job ends with.
	require.Eventually(t, func() bool {
		info, _ := sim.srv.Sim.Job(rp1)
		return info.Status == workflow.RunpodCancelled
	}, 10*time.Second, 20*time.Millisecond, "rp-1 is an orphan and must be canceled")
	require.Equal(t, rpB, b.get(t, "j").RunpodID, "the record must keep naming rp-B")
	sim.clock.Advance(10 * time.Second)
	rec = b.waitRecord(t, "j", 10*time.Second, func(r streams.Record) bool { return workflow.State(r.State).Terminal() })
	require.Equal(t, string(workflow.StateCompleted), rec.State, "error=%q", rec.Error)
	require.Equal(t, rpB, rec.RunpodID)
	info, _ := sim.srv.Sim.Job(rpB)
	require.Equal(t, workflow.RunpodCompleted, info.Status)
	require.Len(t, sim.srv.Sim.Jobs(), 2)
	for _, e := range b.events(t)["j"] {
		require.NotEqual(t, rp1, e.Payload.RunpodID, "event %s names the orphan", e.Type)
	}
	require.EqualValues(t, 1, wA.Stats().OrphansCanceled)
}
