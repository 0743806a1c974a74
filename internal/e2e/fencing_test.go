package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestFencingPausedWorker pauses a worker process with SIGSTOP right after a
// /run returned (before it recorded the Runpod id), lets a survivor take all
// its jobs over after MinIdle, then resumes it with SIGCONT while the
// survivor is still running them. The stale worker must write nothing:
//
//   - the records' owner and epoch after it resumed (and exited) are the ones
//     the survivor set — a stale heartbeat, checkpoint or outcome that got
//     through would change them or the state history;
//   - no event written after the takeover carries an older epoch than the
//     job's takeover epoch (audit checks epochs never go back, per job);
//   - the Runpod job it created and could no longer record is cancelled on
//     the simulator (no orphan GPU spend), and so is any other Runpod job
//     that is not a job's recorded one;
//   - every job still ends COMPLETED exactly once.
func TestFencingPausedWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, runpodsim.Config{})
	const n = 6
	ids := jobIDs("fence", n)
	for _, id := range ids {
		// Long enough that the survivor is still polling when the stale
		// worker resumes: the epoch guard, not the terminal guard, refuses.
		e.submit(id, jobInput(id, map[string]any{"mock_delay": 10000}), 0)
	}
	// One executor: when it pauses, no other /run is in flight in the stale
	// worker. A /run in flight across the takeover is the subject of
	// TestFencingStaleRunInFlight (a known bug makes it leave an orphan).
	stale := e.startChild(childOpts{ID: "stale", Concurrency: 1,
		HookPoint: worker.PointAfterRun, HookAfter: n - 1, HookAction: "stop"})
	// Stopped, and its hook line copied out of the pipe (which lags).
	eventually(t, 20*time.Second, func() (bool, string) {
		return stale.stopped() && stale.hookJob() != "", "stale worker not stopped yet: " + stale.stderr.String()
	})
	hit := stale.hookJob()
	hitRec, err := e.record(hit)
	require.NoError(t, err)
	require.Equal(t, string(workflow.StepSubmitting), hitRec.Step, "paused between /run and its checkpoint: %+v stat %s", hitRec, procStat(stale))
	require.Equal(t, "stale", hitRec.Owner)

	survivor := e.startWorker(e.workerConfig("survivor", e.runpod()))
	snap := make(map[string]streams.Record, n)
	eventually(t, 20*time.Second, func() (bool, string) {
		for _, id := range ids {
			rec, err := e.record(id)
			// Taken over, and (for the hit job) resubmitted and recorded:
			// from here on only the survivor's own writes may change it.
			if err != nil || rec.Owner != "survivor" || rec.RunpodID == "" {
				return false, id + " owned by " + rec.Owner + " at " + rec.Step
			}
			snap[id] = rec
		}
		return true, ""
	})
	for id, rec := range snap {
		require.False(t, workflow.State(rec.State).Terminal(), "job %s ended before the stale worker resumed: the test would only exercise the terminal guard", id)
	}
	lastBefore, err := e.store.LastEventID(context.Background())
	require.NoError(t, err)

	// The simulator's clock is the wall clock (TimeScale 1).
	resumedAt := time.Now()
	stale.signal(t, syscall.SIGCONT)
	// The resumed worker finds its /run's id unrecordable and cancels that
	// Runpod job.
	eventually(t, 20*time.Second, func() (bool, string) {
		js := e.simJobs()[hit]
		if len(js) == 0 {
			return false, "no runpod job for the hit job"
		}
		return js[0].Status == workflow.RunpodCancelled, "orphan status " + string(js[0].Status)
	})
	// Let it finish whatever it still does, then exit gracefully.
	stale.signal(t, syscall.SIGTERM)
	st := stale.wait(t, 20*time.Second)
	require.True(t, st.Success(), "stale worker exit: %v", st)
	stats := stale.stats(t)
	require.GreaterOrEqual(t, stats.OrphansCanceled, uint64(1), "stale worker stats %+v", stats)
	require.GreaterOrEqual(t, stats.LeasesLost, uint64(1), "stale worker stats %+v", stats)
	for _, c := range stats.Finalized {
		require.Zero(t, c, "the stale worker wrote an outcome: %+v", stats)
	}

	for _, id := range ids {
		rec, err := e.record(id)
		require.NoError(t, err)
		require.Equal(t, snap[id].Owner, rec.Owner, "job %s: owner changed by the stale worker", id)
		require.Equal(t, snap[id].Epoch, rec.Epoch, "job %s: epoch changed by the stale worker", id)
		require.Equal(t, snap[id].RunpodID, rec.RunpodID, "job %s: runpod id changed", id)
		require.Equal(t, snap[id].Attempts, rec.Attempts, "job %s: attempts changed", id)
	}
	// Nothing was written since the takeover under a stale epoch.
	evs, err := e.store.ReadEvents(context.Background(), lastBefore, 10000, 0)
	require.NoError(t, err)
	for _, ev := range evs {
		if workerEvent(ev.Type) {
			require.GreaterOrEqual(t, ev.Epoch, snap[ev.JobID].Epoch, "event %s %s of %s under a stale epoch", ev.ID, ev.Type, ev.JobID)
		}
	}

	recs := e.waitTerminal(ids, 30*time.Second)
	e.audit(ids)
	for id, rec := range recs {
		require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		require.Equal(t, "survivor", rec.Owner)
	}
	e.checkRunpodSide(recs, false)
	// Every Runpod job nobody recorded is cancelled — the stale worker's
	// orphans — with one documented exception: a /run whose answer the
	// stale worker never read (its request timed out during the pause) left
	// an id nobody knows; that is the uncertain-/run window, so the record
	// must show the extra attempt, and the job must predate the resume.
	for id, js := range e.simJobs() {
		for _, j := range js {
			if j.ID == recs[id].RunpodID || j.Status == workflow.RunpodCancelled {
				continue
			}
			require.NotEqual(t, hit, id, "the hit job's orphan (its id was read) left running: %+v", j)
			require.Greater(t, recs[id].Attempts, 1, "job %s: unrecorded runpod job %s left running outside the /run window", id, j.ID)
			require.True(t, j.CreatedAt.Before(resumedAt), "job %s: runpod job %s created after the resume and left running", id, j.ID)
		}
	}
	require.Len(t, e.simJobs()[hit], 2, "hit job: the orphan and the survivor's resubmit")
	survivor.stop(t)
}

// runProxy forwards to the simulator. It holds the first /run answer (the
// simulator has already created the job): it reports the arrival on arrived,
// waits for release, then holds the answer a further delay (or until the
// caller gives up). The test pauses the worker and takes its job over while
// the answer is held: a /run in flight across a takeover.
type runProxy struct {
	*httptest.Server
	arrived chan struct{}
	release chan struct{}
	delay   time.Duration
	once    sync.Once
	gaveUp  atomic.Bool // the worker hung up before the answer was sent
}

func newRunProxy(t *testing.T, root string, delay time.Duration) *runProxy {
	t.Helper()
	target, err := url.Parse(root)
	require.NoError(t, err)
	p := &runProxy{arrived: make(chan struct{}), release: make(chan struct{}), delay: delay}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/run") {
			return nil
		}
		first := false
		p.once.Do(func() { first = true })
		if !first {
			return nil
		}
		ctx := resp.Request.Context()
		close(p.arrived)
		select {
		case <-p.release:
		case <-ctx.Done():
		}
		tm := time.NewTimer(p.delay)
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-ctx.Done():
			p.gaveUp.Store(true)
		}
		return nil
	}
	p.Server = httptest.NewServer(rp)
	t.Cleanup(func() {
		select {
		case <-p.release:
		default:
			close(p.release)
		}
		p.Close()
	})
	return p
}

// TestFencingStaleRunInFlight: a worker's /run reaches Runpod (the job is
// created), and before the answer gets back the worker is paused (SIGSTOP)
// and its job taken over; on resume (SIGCONT) its heartbeat learns the lease
// is lost while the /run answer is still on its way. Guarantee 3: "a
// fenced-out worker that created a Runpod job it can no longer record cancels
// it (no orphan GPU spend)". The worker can learn the id — the answer does
// arrive — so the Runpod job must end CANCELLED. If the worker abandons the
// /run on lease loss instead, the job runs on a GPU with nobody recording it,
// and this test fails.
//
// Regression: submit() once ran /run under the action's ctx, which a lost
// lease cancels; the client hung up, the id was lost, the Runpod job ran on.
func TestFencingStaleRunInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t, runpodsim.Config{})
	const id = "inflight"
	e.submit(id, jobInput(id, map[string]any{"mock_delay": 600000}), 0)
	proxy := newRunProxy(t, e.srv.Root, 1500*time.Millisecond)
	stale := e.startChild(childOpts{ID: "stale", Concurrency: 1, SimURL: proxy.URL + "/v2"})
	select {
	case <-proxy.arrived:
	case <-time.After(20 * time.Second):
		t.Fatalf("the stale worker sent no /run; stderr:\n%s", stale.stderr.String())
	}
	js := e.simJobs()[id]
	require.Len(t, js, 1, "the stale worker's /run created the Runpod job")
	orphan := js[0].ID

	stale.signal(t, syscall.SIGSTOP)
	eventually(t, 10*time.Second, stale.stoppedCond)
	e.startWorker(e.workerConfig("survivor", e.runpod()))
	taken := e.waitRecord(id, 20*time.Second, func(r streams.Record) bool { return r.Owner == "survivor" && r.RunpodID != "" })
	require.NotEqual(t, orphan, taken.RunpodID, "the survivor resubmitted (the record said SUBMITTING)")
	require.Equal(t, 2, taken.Attempts)

	stale.signal(t, syscall.SIGCONT)
	close(proxy.release)
	eventually(t, 20*time.Second, func() (bool, string) {
		return strings.Contains(stale.stderr.String(), "lease lost"), "stale worker has not noticed the takeover"
	})
	// Whatever the stale worker does with the answer, it has done it once
	// it exits gracefully.
	stale.signal(t, syscall.SIGTERM)
	require.True(t, stale.wait(t, 20*time.Second).Success())
	t.Logf("stale worker hung up on its /run before the answer: %v; stats %+v", proxy.gaveUp.Load(), stale.stats(t))

	sj, ok := e.srv.Sim.Job(orphan)
	require.True(t, ok)
	require.Equal(t, workflow.RunpodCancelled, sj.Status,
		"Runpod job %s, created by the fenced-out worker's /run, is left %s: an orphan nobody records or cancels", orphan, sj.Status)

	e.cancel(id) // end the survivor's long job
	e.waitTerminal([]string{id}, 20*time.Second)
	e.audit([]string{id})
}
