package e2e

import (
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestSIGTERMHandoff: a worker subprocess holding jobs gets SIGTERM; a peer
// whose MinIdle and ClaimInterval are both 10 minutes takes every job over
// within the test's one-minute wait. Only the handoff (entries marked long
// idle + the "handoff" message that triggers the peer's claim pass) can
// explain that: without it the peer would wait 10 minutes for the leases to
// lapse, on any machine. The pickup time is measured from the SIGTERM to the
// moment every record names the new owner under a newer epoch, and logged.
func TestSIGTERMHandoff(t *testing.T) {
	t.Parallel()
	// The simulator's clock stands still until the handoff is measured: the
	// jobs are held at POLL however long a loaded machine takes to start
	// the peer and hand off, and finish as soon as the clock moves (30 s
	// jobs on the wall clock made the test wait 30 s).
	clock := runpodsim.NewManualClock(time.Now())
	e := newEnv(t, runpodsim.Config{Clock: clock})
	const n = 20
	ids := jobIDs("handoff", n)
	for i, id := range ids {
		e.submit(id, jobInput(id, map[string]any{"mock_delay": 30000 + 20*i}), 0)
	}
	leaving := e.startChild(childOpts{ID: "leaving", MinIdle: 10 * time.Minute, Heartbeat: time.Second,
		Claim: 10 * time.Minute, PollInitial: 100 * time.Millisecond, PollMax: 300 * time.Millisecond})
	held := make(map[string]streams.Record, n)
	eventually(t, 20*time.Second, func() (bool, string) {
		for _, id := range ids {
			rec, err := e.record(id)
			if err != nil || rec.Owner != "leaving" || rec.RunpodID == "" {
				return false, id + ": owner " + rec.Owner + " step " + rec.Step
			}
			held[id] = rec
		}
		return true, ""
	})

	cfg := e.workerConfig("staying", e.runpod())
	cfg.MinIdle, cfg.HeartbeatInterval, cfg.ClaimInterval = 10*time.Minute, time.Second, 10*time.Minute
	staying := e.startWorker(cfg)
	// The peer's first claim pass (at its start) must have found nothing:
	// the leases are fresh.
	require.Zero(t, staying.w.Stats().InFlight)
	// The handoff message is a hint: wait until both workers listen on the
	// control channel, or a slow start could miss it and the peer would
	// wait for its 10-minute claim interval.
	keys, err := streams.NewKeys(e.ns)
	require.NoError(t, err)
	eventually(t, 20*time.Second, func() (bool, string) {
		subs, err := e.rdb.PubSubNumSub(t.Context(), keys.Control()).Result()
		if err != nil {
			return false, err.Error()
		}
		return subs[keys.Control()] >= 2, "control subscribers: not both workers yet"
	})

	sigterm := time.Now()
	leaving.signal(t, syscall.SIGTERM)
	var pickup time.Duration
	eventually(t, time.Minute, func() (bool, string) {
		for _, id := range ids {
			rec, err := e.record(id)
			if err != nil {
				return false, err.Error()
			}
			if workflow.State(rec.State).Terminal() {
				t.Fatalf("job %s ended (%s) before the handoff could be measured; make the jobs longer", id, rec.State)
			}
			if rec.Owner != "staying" || rec.Epoch <= held[id].Epoch {
				return false, id + " still owned by " + rec.Owner
			}
		}
		pickup = time.Since(sigterm)
		return true, ""
	})
	t.Logf("handoff: %d jobs picked up %s after SIGTERM (MinIdle and ClaimInterval 10m)", n, pickup)

	st := leaving.wait(t, 15*time.Second)
	require.True(t, st.Success(), "graceful exit: %v", st)
	stats := leaving.stats(t)
	require.Equal(t, uint64(n), stats.HandedOff, "leases handed off: %+v", stats)

	// Let the jobs run out: the clock moves on until every job ended.
	ended, advanced := make(chan struct{}), make(chan struct{})
	var once sync.Once
	stop := func() { once.Do(func() { close(ended) }); <-advanced }
	t.Cleanup(stop)
	go func() {
		defer close(advanced)
		for {
			clock.Advance(5 * time.Second)
			select {
			case <-ended:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	recs := e.waitTerminal(ids, 2*time.Minute)
	stop()
	e.audit(ids)
	for id, rec := range recs {
		require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		require.Equal(t, held[id].RunpodID, rec.RunpodID, "job %s: re-attached to its Runpod job", id)
	}
	e.checkRunpodSide(recs, true)
}
