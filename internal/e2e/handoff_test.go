package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestSIGTERMHandoff: a worker subprocess holding jobs gets SIGTERM; a peer
// whose MinIdle and ClaimInterval are both 30s takes every job over in under
// 2s. Only the handoff (entries marked long idle + the "handoff" message that
// triggers the peer's claim pass) can explain a pickup that fast: without it
// the peer would wait 30s for the leases to lapse, and this test would fail
// on the bound. The pickup time is measured from the SIGTERM to the moment
// every record names the new owner under a newer epoch.
func TestSIGTERMHandoff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, runpodsim.Config{})
	const n = 20
	ids := jobIDs("handoff", n)
	for i, id := range ids {
		// Jobs that run for a few seconds: held at POLL when SIGTERM comes.
		e.submit(id, jobInput(id, map[string]any{"mock_delay": 3000 + 20*i}), 0)
	}
	leaving := e.startChild(childOpts{ID: "leaving", MinIdle: 30 * time.Second, Heartbeat: time.Second,
		Claim: 30 * time.Second, PollInitial: 100 * time.Millisecond, PollMax: 300 * time.Millisecond})
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
	cfg.MinIdle, cfg.HeartbeatInterval, cfg.ClaimInterval = 30*time.Second, time.Second, 30*time.Second
	staying := e.startWorker(cfg)
	// The peer's first claim pass (at its start) must have found nothing:
	// the leases are fresh.
	require.Zero(t, staying.w.Stats().InFlight)
	// The handoff message is a hint: wait until both workers listen on the
	// control channel, or a slow start could miss it and the peer would
	// wait for its 30 s claim interval.
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
	eventually(t, 20*time.Second, func() (bool, string) {
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
	t.Logf("handoff: %d jobs picked up %s after SIGTERM (MinIdle and ClaimInterval 30s)", n, pickup)
	require.Less(t, pickup, 2*time.Second, "pickup after SIGTERM")

	st := leaving.wait(t, 15*time.Second)
	require.True(t, st.Success(), "graceful exit: %v", st)
	stats := leaving.stats(t)
	require.Equal(t, uint64(n), stats.HandedOff, "leases handed off: %+v", stats)

	recs := e.waitTerminal(ids, 30*time.Second)
	e.audit(ids)
	for id, rec := range recs {
		require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		require.Equal(t, held[id].RunpodID, rec.RunpodID, "job %s: re-attached to its Runpod job", id)
	}
	e.checkRunpodSide(recs, true)
}
