package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// crashRun submits jobs, runs them on one worker subprocess that SIGKILLs
// itself at the hookAfter-th occurrence of point, then lets two in-process
// survivors finish everything. It returns the records and the job the crash
// hit.
func crashRun(t *testing.T, point string, hookAfter, concurrency int, survivorPolicy workflow.SubmitUncertainPolicy) (*env, map[string]streams.Record, string) {
	e := newEnv(t, runpodsim.Config{})
	const n = 12
	ids := jobIDs("crash", n)
	for i, id := range ids {
		// Long enough that the victim holds jobs in every step at once.
		e.submit(id, jobInput(id, map[string]any{"mock_delay": 200 + 40*i, "mock_return": map[string]any{"id": id}}), 0)
	}
	victim := e.startChild(childOpts{ID: "victim", Concurrency: concurrency,
		HookPoint: point, HookAfter: hookAfter, HookAction: "kill"})
	victim.wait(t, 30*time.Second)
	require.True(t, victim.killedBy(syscall.SIGKILL), "victim must die of SIGKILL at %s, got %v; stderr:\n%s",
		point, victim.state, victim.stderr.String())
	hit := victim.hookJob()
	require.NotEmpty(t, hit, "the hook named the job it killed at")

	// The victim died holding jobs: records name it as owner and are not
	// terminal (else this test would prove nothing about recovery).
	held := map[string]int64{} // job → epoch held by the victim
	for _, id := range ids {
		rec, err := e.record(id)
		require.NoError(t, err)
		if rec.Owner == "victim" && !workflow.State(rec.State).Terminal() {
			held[id] = rec.Epoch
		}
	}
	require.NotEmpty(t, held, "the victim held unfinished jobs when it died")
	hitRec, err := e.record(hit)
	require.NoError(t, err)
	t.Logf("%s: victim died holding %d jobs; hit job %s at %s/%s attempts %d", point, len(held), hit, hitRec.State, hitRec.Step, hitRec.Attempts)

	rp := e.runpod()
	for i := range 2 {
		cfg := e.workerConfig(fmt.Sprintf("survivor%d", i), rp)
		cfg.SubmitUncertain = survivorPolicy
		e.startWorker(cfg)
	}
	recs := e.waitTerminal(ids, 30*time.Second)
	e.audit(ids)
	for id, epoch := range held {
		// A survivor took each held job over (new owner, newer epoch) and
		// wrote its outcome.
		require.NotEqual(t, "victim", recs[id].Owner, "job %s", id)
		require.Greater(t, recs[id].Epoch, epoch, "job %s: epoch bumped by the takeover", id)
	}
	return e, recs, hit
}

// TestCrashRecovery kills a real worker process with SIGKILL at each step of
// a job's workflow; the survivors must finish every job it held.
//
// With Concurrency 1 in the victim, nothing else is in flight when it dies,
// so the Runpod side is exact: at before_run (SUBMITTING recorded, /run not
// sent), polling and finalize, every job has exactly one Runpod job — a
// survivor that re-ran /run for a job whose id was recorded, or that lost the
// recorded id, fails checkRunpodSide(strict). At after_run (/run returned,
// id not recorded) the documented window opens: with the default resubmit
// policy the hit job, and only it, gets a second Runpod job and shows
// attempts 2; with SubmitUncertain=fail it ends FAILED "submit outcome
// uncertain" and no second Runpod job is created.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		point string
		after int
	}{
		{worker.PointBeforeRun, 4},
		{worker.PointPolling, 8},
		{worker.PointFinalize, 3},
	} {
		t.Run(tc.point, func(t *testing.T) {
			t.Parallel()
			e, recs, hit := crashRun(t, tc.point, tc.after, 1, workflow.SubmitUncertainResubmit)
			for id, rec := range recs {
				require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
			}
			e.checkRunpodSide(recs, true)
			if tc.point == worker.PointBeforeRun {
				// SUBMITTING was recorded, /run never sent: the survivor's
				// resubmit is the job's only Runpod job.
				require.Equal(t, 2, recs[hit].Attempts, "hit job %s attempts", hit)
			}
		})
	}

	t.Run("after_run/resubmit", func(t *testing.T) {
		t.Parallel()
		e, recs, hit := crashRun(t, worker.PointAfterRun, 4, 1, workflow.SubmitUncertainResubmit)
		for id, rec := range recs {
			require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		}
		e.checkRunpodSide(recs, false)
		sims := e.simJobs()
		for id, rec := range recs {
			if id == hit {
				require.Equal(t, 2, rec.Attempts, "hit job: resubmitted once")
				require.Len(t, sims[id], 2, "hit job: the lost /run and the resubmit")
				require.Equal(t, sims[id][1].ID, rec.RunpodID, "the resubmitted Runpod job is the recorded one")
				continue
			}
			// Duplicates happen ONLY in the window: every other job has one.
			require.Equal(t, 1, rec.Attempts, "job %s attempts", id)
			require.Len(t, sims[id], 1, "job %s: runpod jobs", id)
		}
	})

	t.Run("after_run/fail", func(t *testing.T) {
		t.Parallel()
		e, recs, hit := crashRun(t, worker.PointAfterRun, 4, 1, workflow.SubmitUncertainFail)
		sims := e.simJobs()
		for id, rec := range recs {
			if id == hit {
				require.Equal(t, string(workflow.StateFailed), rec.State)
				require.True(t, strings.HasPrefix(rec.Error, workflow.ReasonSubmitUncertain), "error %q", rec.Error)
				require.Equal(t, 1, rec.Attempts, "no second /run")
				require.Len(t, sims[id], 1, "only the lost /run's Runpod job, no second one")
				continue
			}
			require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
			require.Len(t, sims[id], 1, "job %s: runpod jobs", id)
		}
	})

	// Many jobs in flight at once in the victim: whatever step each was in,
	// every job completes, and a job has a second Runpod job only if its
	// record counts a second /run attempt.
	t.Run("polling/concurrent", func(t *testing.T) {
		t.Parallel()
		e, recs, _ := crashRun(t, worker.PointPolling, 10, 8, workflow.SubmitUncertainResubmit)
		for id, rec := range recs {
			require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		}
		e.checkRunpodSide(recs, false)
	})
}

// TestCrashLoopingJobDeadLettered: a job that kills every worker that runs
// it (two subprocesses SIGKILLed at before_run in turn) is not handed from
// worker to worker forever: the next admit, over MaxDeliveries, ends it
// FAILED with a reason and copies it to the dead-letter stream, and the pool
// goes on with other work. Without the delivery limit the survivor would
// run it (and the job would complete, failing the FAILED assertion).
func TestCrashLoopingJobDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, runpodsim.Config{})
	const id = "crashloop"
	e.submit(id, jobInput(id, nil), 0)
	for i := range 2 {
		c := e.startChild(childOpts{ID: fmt.Sprintf("victim%d", i), Concurrency: 1,
			HookPoint: worker.PointBeforeRun, HookAfter: 1, HookAction: "kill"})
		c.wait(t, 30*time.Second)
		require.True(t, c.killedBy(syscall.SIGKILL), "victim%d: %v", i, c.state)
		require.Equal(t, id, c.hookJob())
	}
	rec, err := e.record(id)
	require.NoError(t, err)
	require.Equal(t, 2, rec.Deliveries, "each victim took the job once")

	cfg := e.workerConfig("survivor", e.runpod())
	cfg.MaxDeliveries = 2
	w := e.startWorker(cfg)
	e.submit("after-crashloop", jobInput("after-crashloop", nil), 0)
	recs := e.waitTerminal([]string{id, "after-crashloop"}, 20*time.Second)
	e.audit([]string{id, "after-crashloop"})
	require.Equal(t, string(workflow.StateFailed), recs[id].State)
	require.NotEmpty(t, recs[id].Error, "a reason")
	require.Equal(t, string(workflow.StateCompleted), recs["after-crashloop"].State)
	dead, err := e.rdb.XRange(t.Context(), e.store.Keys().Dead(), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, dead, 1, "one dead-letter copy")
	// The script ends the job before the worker reads its reply and counts
	// it: the record can be FAILED a moment before the counter moves.
	eventually(t, 30*time.Second, func() (bool, string) {
		n := w.w.Stats().Poisoned
		return n == 1, fmt.Sprintf("poisoned %d, want 1", n)
	})
	// Both victims wrote SUBMITTING and died before /run: nothing on Runpod.
	require.Empty(t, e.simJobs()[id])
	t.Logf("crash-looping job: %s", recs[id].Error)
}
