package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// faultRun submits n jobs, runs them on two workers with policy, and returns
// the records once all are terminal (audited).
func faultRun(t *testing.T, e *env, n int, policy workflow.SubmitUncertainPolicy) (map[string]streams.Record, []string) {
	t.Helper()
	ids := jobIDs("fault", n)
	for i, id := range ids {
		e.submit(id, jobInput(id, map[string]any{"mock_delay": 50 + 5*i, "mock_return": id}), 0)
	}
	rp := e.runpod()
	for i := range 2 {
		cfg := e.workerConfig(fmt.Sprintf("fw%d", i), rp)
		cfg.SubmitUncertain = policy
		e.startWorker(cfg)
	}
	recs := e.waitTerminal(ids, 60*time.Second)
	e.audit(ids)
	return recs, ids
}

// TestRunpodFaults: the simulator answers a quarter of /run and /status
// calls with 500, 503 or 429 (with and without Retry-After), with added
// latency. Every job still ends with exactly one terminal outcome (audit).
//
//   - Faults that Runpod raises before taking the job (503, 429 on /run;
//     anything on /status): every job COMPLETED with exactly one Runpod job —
//     a /run retried after it may have created a job would show two.
//   - 500 after /run took effect (the run-uncertain case): with resubmit,
//     every job COMPLETED, and only jobs whose record counts several /run
//     attempts have several Runpod jobs; with fail, the hit jobs end FAILED
//     "submit outcome uncertain" with their single Runpod job, and no job gets
//     a second one.
func TestRunpodFaults(t *testing.T) {
	t.Parallel()
	const n = 60
	latency := runpodsim.Faults{Latency: 2 * time.Millisecond, Jitter: 20 * time.Millisecond}

	t.Run("transient", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, runpodsim.Config{})
		run, status := latency, latency
		run.Status = map[int]float64{503: 0.15, 429: 0.10}
		run.Retry429After = "1"
		status.Status = map[int]float64{500: 0.10, 503: 0.10, 429: 0.10} // 429 without Retry-After
		require.NoError(t, e.srv.Sim.SetFaults(runpodsim.OpRun, run))
		require.NoError(t, e.srv.Sim.SetFaults(runpodsim.OpStatus, status))
		recs, _ := faultRun(t, e, n, workflow.SubmitUncertainResubmit)
		for id, rec := range recs {
			require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
			require.JSONEq(t, fmt.Sprintf("%q", id), string(rec.Output))
		}
		e.checkRunpodSide(recs, true)
		st := e.srv.Sim.Stats()
		t.Logf("faults injected: %v (run %d, status %d)", st.FaultsInjected, st.Faults[runpodsim.OpRun], st.Faults[runpodsim.OpStatus])
		require.Positive(t, st.Faults[runpodsim.OpRun], "faults on /run were injected")
		require.Positive(t, st.Faults[runpodsim.OpStatus], "faults on /status were injected")
	})

	uncertain := func(t *testing.T, policy workflow.SubmitUncertainPolicy) (*env, map[string]streams.Record) {
		e := newEnv(t, runpodsim.Config{})
		run, status := latency, latency
		run.Status = map[int]float64{500: 0.25}
		run.After = true // the job is created, the client sees 500
		status.Status = map[int]float64{503: 0.2}
		require.NoError(t, e.srv.Sim.SetFaults(runpodsim.OpRun, run))
		require.NoError(t, e.srv.Sim.SetFaults(runpodsim.OpStatus, status))
		recs, _ := faultRun(t, e, n, policy)
		require.Positive(t, e.srv.Sim.Stats().Faults[runpodsim.OpRun], "faults on /run were injected")
		return e, recs
	}

	t.Run("run_500_after/resubmit", func(t *testing.T) {
		t.Parallel()
		e, recs := uncertain(t, workflow.SubmitUncertainResubmit)
		e.checkRunpodSide(recs, false)
		sims := e.simJobs()
		dups := 0
		for id, rec := range recs {
			require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
			if len(sims[id]) > 1 {
				dups++
				require.Greater(t, rec.Attempts, 1, "job %s: a duplicate outside the /run window", id)
			}
		}
		t.Logf("%d of %d jobs resubmitted after an uncertain /run", dups, n)
		require.Positive(t, dups, "the injected 500s made some /run outcomes uncertain")
	})

	t.Run("run_500_after/fail", func(t *testing.T) {
		t.Parallel()
		e, recs := uncertain(t, workflow.SubmitUncertainFail)
		sims := e.simJobs()
		failed := 0
		for id, rec := range recs {
			// Attempts may exceed 1: an open circuit or a 503 is a /run
			// intent recorded but never sent. What must not happen is a
			// second Runpod job.
			require.Len(t, sims[id], 1, "job %s (attempts %d): a second Runpod job under the fail policy", id, rec.Attempts)
			if rec.State == string(workflow.StateFailed) {
				failed++
				require.True(t, strings.HasPrefix(rec.Error, workflow.ReasonSubmitUncertain), "job %s error %q", id, rec.Error)
				require.Empty(t, rec.RunpodID)
				continue
			}
			require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		}
		t.Logf("%d of %d jobs failed as submit-uncertain", failed, n)
		require.Positive(t, failed)
		require.Equal(t, int(e.srv.Sim.Stats().Faults[runpodsim.OpRun]), failed, "one FAILED job per uncertain /run")
	})
}

// TestRedisRestart kills redis-server with SIGKILL in the middle of a run and
// restarts it on the same port and data (AOF, appendfsync always). Workers (a
// subprocess and an in-process one) and the producer reconnect by
// themselves. Every job — submitted before the crash, or after the restart —
// must end with exactly one terminal outcome: none lost (waitTerminal), none
// with two terminal events or a stale-epoch write (audit), and no Runpod job
// beyond the recorded /run attempts.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	srv, err := redistest.StartWith(redistest.Options{AppendOnly: true})
	require.NoError(t, err)
	dir := srv.Dir
	current := srv
	t.Cleanup(func() { current.Stop(); _ = os.RemoveAll(dir) })
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	e := newEnvOn(t, rdb, srv.Addr, redistest.Namespace(t), runpodsim.Config{})

	const n = 60
	ids := jobIDs("rr", n)
	for i, id := range ids {
		e.submit(id, jobInput(id, map[string]any{"mock_delay": 300 + 30*i, "mock_return": id}), 0)
	}
	e.startChild(childOpts{ID: "rr-child", Concurrency: 8})
	inproc := e.startWorker(e.workerConfig("rr-inproc", e.runpod()))
	// Mid-run: some jobs done, most not.
	eventually(t, 30*time.Second, func() (bool, string) {
		done := 0
		for _, id := range ids {
			if rec, err := e.record(id); err == nil && workflow.State(rec.State).Terminal() {
				done++
			}
		}
		return done >= 5, fmt.Sprintf("%d terminal", done)
	})

	inFlight := 0
	for _, id := range ids {
		if rec, err := e.record(id); err == nil && !workflow.State(rec.State).Terminal() {
			inFlight++
		}
	}
	srv.Kill()
	killedAt := time.Now()
	// The outage is the fault being injected, not a wait for async work:
	// it outlasts MinIdle (1s), so every lease looks lapsed when Redis is
	// back and the workers race to reclaim each other's jobs.
	time.Sleep(1500 * time.Millisecond)
	srv2, err := redistest.StartWith(redistest.Options{Port: srv.Port, Dir: dir, AppendOnly: true})
	require.NoError(t, err, "restart redis-server on the same port and data")
	current = srv2
	t.Logf("redis killed with %d of %d jobs unfinished, down for %s", inFlight, n, time.Since(killedAt))

	more := jobIDs("rr-after", 10)
	eventually(t, 20*time.Second, func() (bool, string) {
		// The producer's first calls may still meet dead connections.
		_, err := e.store.Get(t.Context(), ids[0])
		return err == nil, fmt.Sprint(err)
	})
	for _, id := range more {
		e.submit(id, jobInput(id, map[string]any{"mock_delay": 20, "mock_return": id}), 0)
	}
	all := append(append([]string{}, ids...), more...)
	recs := e.waitTerminal(all, 60*time.Second)
	e.audit(all)
	for id, rec := range recs {
		require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		require.JSONEq(t, fmt.Sprintf("%q", id), string(rec.Output))
	}
	s := inproc.w.Stats()
	t.Logf("in-process survivor: admitted %d, reclaimed %d, leases lost %d, orphans canceled %d", s.Admitted, s.Reclaimed, s.LeasesLost, s.OrphansCanceled)
	e.checkRunpodSide(recs, false)
	sims := e.simJobs()
	for id, rec := range recs {
		for _, j := range sims[id] {
			if j.ID != rec.RunpodID && j.Status != workflow.RunpodCancelled {
				require.Greater(t, rec.Attempts, 1, "job %s: unrecorded Runpod job %s (%s) outside the /run window", id, j.ID, j.Status)
			}
		}
	}
}
