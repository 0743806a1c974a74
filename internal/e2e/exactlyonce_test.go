package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// xadd appends a raw submission, as a producer in any language would.
func (e *env) xadd(values ...any) string {
	e.t.Helper()
	id, err := e.rdb.XAdd(context.Background(), &redis.XAddArgs{
		Stream: e.store.Keys().Submissions(), Values: values,
	}).Result()
	require.NoError(e.t, err)
	return id
}

// rawSubmit XADDs a well-formed v1 submission for id.
func (e *env) rawSubmit(id string, input json.RawMessage) string {
	e.t.Helper()
	return e.xadd(streams.SubmissionValues(streams.Submission{JobID: id, Input: input})...)
}

// TestExactlyOnceRedelivered: a job's submission entry is redelivered to
// another consumer (a raw XCLAIM, as if the owner's lease had been taken)
// while the job runs. The owner must drop it (its heartbeat sees the entry is
// no longer its own), the next owner must re-attach to the same Runpod job,
// and the job must end with one terminal event and one Runpod job. A second
// /run, or a second outcome written by the first owner, fails the audit or
// the strict Runpod check.
func TestExactlyOnceRedelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, runpodsim.Config{})
	const n = 5
	ids := jobIDs("redeliver", n)
	for _, id := range ids {
		e.submit(id, jobInput(id, map[string]any{"mock_delay": 2500}), 0)
	}
	rp := e.runpod()
	ws := map[string]*inproc{}
	for _, name := range []string{"ra", "rb"} {
		ws[name] = e.startWorker(e.workerConfig(name, rp))
	}
	first := map[string]streams.Record{}
	eventually(t, 20*time.Second, func() (bool, string) {
		for _, id := range ids {
			rec, err := e.record(id)
			if err != nil || rec.RunpodID == "" {
				return false, id + " not on runpod yet"
			}
			first[id] = rec
		}
		return true, ""
	})
	for _, id := range ids {
		// Delivery count +1, owner "ghost" in the PEL.
		n, err := e.rdb.XClaim(context.Background(), &redis.XClaimArgs{
			Stream: e.store.Keys().Submissions(), Group: e.store.Group(), Consumer: "ghost",
			MinIdle: 0, Messages: []string{first[id].Entry},
		}).Result()
		require.NoError(t, err)
		require.Len(t, n, 1, "job %s: entry redelivered", id)
	}
	recs := e.waitTerminal(ids, 30*time.Second)
	e.audit(ids)
	var lost uint64
	for _, w := range ws {
		lost += w.w.Stats().LeasesLost
	}
	for _, id := range ids {
		rec := recs[id]
		require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		require.Equal(t, first[id].RunpodID, rec.RunpodID, "job %s: re-attached, not re-run", id)
		require.Greater(t, rec.Epoch, first[id].Epoch, "job %s: taken over after the redelivery", id)
		// Deliveries count admits before Runpod only (a job already on Runpod
		// is just polled, so its takeovers cannot be what crashes workers):
		// this redelivery came after /run, so it must not count.
		require.Equal(t, 1, rec.Deliveries, "job %s: a takeover after /run is not a counted delivery", id)
	}
	require.GreaterOrEqual(t, lost, uint64(n), "the first owners dropped the redelivered jobs")
	e.checkRunpodSide(recs, true)
}

// TestExactlyOnceRacingOwners: two workers hold the same job under two
// epochs and both decide its outcome; their finalize writes are released at
// the same instant. Exactly one may land: the current owner's. If the stale
// owner's write got through (or both did) the audit sees two terminal
// events, or the terminal event carries the stale epoch.
func TestExactlyOnceRacingOwners(t *testing.T) {
	t.Parallel()
	e := newEnv(t, runpodsim.Config{})
	const id = "race-0"
	e.submit(id, jobInput(id, map[string]any{"mock_delay": 200, "mock_return": "done"}), 0)
	rp := e.runpod()

	release := make(chan struct{})
	var reachedMu sync.Mutex
	reached := map[string]bool{}
	blockAt := func(name string) func(string, string) {
		return func(job, point string) {
			if point != worker.PointFinalize {
				return
			}
			reachedMu.Lock()
			reached[name] = true
			reachedMu.Unlock()
			<-release
		}
	}
	hasReached := func(name string) func() (bool, string) {
		return func() (bool, string) {
			reachedMu.Lock()
			defer reachedMu.Unlock()
			return reached[name], name + " has not decided yet"
		}
	}
	defer func() {
		select {
		case <-release:
		default:
			close(release) // never leave a worker blocked in its hook
		}
	}()

	// A: a long lease and a single slot, so neither its heartbeat nor its
	// own claim pass interferes: it holds epoch 1 with the outcome decided.
	cfgA := e.workerConfig("owner-a", rp)
	cfgA.MinIdle, cfgA.HeartbeatInterval, cfgA.MaxInFlight = 30*time.Second, 20*time.Second, 1
	cfgA.StepHook = blockAt("a")
	a := e.startWorker(cfgA)
	eventually(t, 20*time.Second, hasReached("a"))
	recA, err := e.record(id)
	require.NoError(t, err)
	require.Equal(t, "owner-a", recA.Owner)

	// Hand A's lease over behind its back; B takes the job (epoch+1),
	// re-attaches to the Runpod job and decides too.
	nh, err := e.store.Handoff(context.Background(), "owner-a", []streams.Lease{{JobID: id, Entry: recA.Entry, Epoch: recA.Epoch}})
	require.NoError(t, err)
	require.Equal(t, 1, nh)
	cfgB := e.workerConfig("owner-b", rp)
	cfgB.StepHook = blockAt("b")
	b := e.startWorker(cfgB)
	eventually(t, 20*time.Second, hasReached("b"))
	recB, err := e.record(id)
	require.NoError(t, err)
	require.Equal(t, "owner-b", recB.Owner)
	require.Greater(t, recB.Epoch, recA.Epoch)

	close(release) // both finalizers write now
	recs := e.waitTerminal([]string{id}, 10*time.Second)
	eventually(t, 10*time.Second, func() (bool, string) {
		s := a.w.Stats()
		return s.InFlight == 0, fmt.Sprintf("owner-a stats %+v", s)
	})
	by := e.audit([]string{id})
	require.Equal(t, string(workflow.StateCompleted), recs[id].State)
	require.Equal(t, "owner-b", recs[id].Owner)
	require.Equal(t, recB.Epoch, by[id][len(by[id])-1].Epoch, "the terminal event is the current owner's")
	require.JSONEq(t, `"done"`, string(recs[id].Output))
	for st, c := range a.w.Stats().Finalized {
		require.Zero(t, c, "stale owner wrote a %s outcome", st)
	}
	require.Equal(t, uint64(1), b.w.Stats().Finalized[workflow.StateCompleted])
	e.checkRunpodSide(recs, true)
}

// TestExactlyOnceDuplicateSubmissions: the same id submitted twice by the
// client, by a raw XADD after the client, by two raw XADDs, by a raw XADD
// after the job completed, and by the client after a raw XADD: one job each,
// one terminal event, one Runpod job, and no submission entry left behind.
func TestExactlyOnceDuplicateSubmissions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, runpodsim.Config{})
	ctx := context.Background()
	in := func(id string) json.RawMessage { return jobInput(id, map[string]any{"mock_delay": 50}) }

	// Before any worker runs: client twice, client then raw, raw twice.
	e.submit("dup-client", in("dup-client"), 0)
	res, err := e.cli.Submit(ctx, client.SubmitOptions{ClientJobID: "dup-client", Input: in("dup-client")})
	require.NoError(t, err)
	require.True(t, res.Existing, "second client submit answers with the existing job")
	e.submit("dup-client-raw", in("dup-client-raw"), 0)
	e.rawSubmit("dup-client-raw", in("dup-client-raw"))
	e.rawSubmit("dup-raw-raw", in("dup-raw-raw"))
	e.rawSubmit("dup-raw-raw", in("dup-raw-raw"))

	e.startWorker(e.workerConfig("dw", e.runpod()))
	ids := []string{"dup-client", "dup-client-raw", "dup-raw-raw"}
	e.waitTerminal(ids, 20*time.Second)

	// After completion: raw again (must be acknowledged, not re-run), and
	// the client after a raw submission.
	e.rawSubmit("dup-client", in("dup-client"))
	e.rawSubmit("dup-raw-client", in("dup-raw-client"))
	e.waitTerminal([]string{"dup-raw-client"}, 20*time.Second)
	res, err = e.cli.Submit(ctx, client.SubmitOptions{ClientJobID: "dup-raw-client", Input: in("dup-raw-client")})
	require.NoError(t, err)
	require.True(t, res.Existing)
	require.Equal(t, workflow.StateCompleted, res.State)
	ids = append(ids, "dup-raw-client")

	// Every submission entry is consumed: duplicates acknowledged and
	// deleted, not left pending or re-run.
	eventually(t, 10*time.Second, func() (bool, string) {
		l, err := e.rdb.XLen(ctx, e.store.Keys().Submissions()).Result()
		return err == nil && l == 0, fmt.Sprintf("submissions stream length %d (%v)", l, err)
	})
	recs := e.waitTerminal(ids, 10*time.Second)
	e.audit(ids)
	for id, rec := range recs {
		require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		require.Equal(t, 1, rec.Attempts, "job %s", id)
	}
	e.checkRunpodSide(recs, true)
	require.Len(t, e.srv.Sim.Jobs(), len(ids), "one Runpod job per job id")
}
