package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// waitRecord waits until id's record satisfies ok and returns it.
func (e *env) waitRecord(id string, within time.Duration, ok func(streams.Record) bool) streams.Record {
	e.t.Helper()
	var last streams.Record
	eventually(e.t, within, func() (bool, string) {
		rec, err := e.record(id)
		if err != nil {
			return false, err.Error()
		}
		last = rec
		return ok(rec), fmt.Sprintf("%+v", rec)
	})
	return last
}

// await waits, bounded, for id's outcome through the client.
func (e *env) await(id string) client.Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := e.cli.AwaitResult(ctx, id)
	require.NoError(e.t, err, "await %s", id)
	return r
}

// simStatus returns the simulator's status of a Runpod job.
func (e *env) simStatus(runpodID string) workflow.RunpodStatus {
	j, ok := e.srv.Sim.Job(runpodID)
	if !ok {
		return ""
	}
	return j.Status
}

func (e *env) cancel(id string) workflow.State {
	e.t.Helper()
	st, err := e.cli.Cancel(context.Background(), id)
	require.NoError(e.t, err)
	return st
}

// terminalOne waits for id's outcome and checks state and error. Callers
// audit the namespace once everything is terminal.
func (e *env) terminalOne(id string, state workflow.State, errPart string) streams.Record {
	e.t.Helper()
	rec := e.waitTerminal([]string{id}, 20*time.Second)[id]
	require.Equal(e.t, string(state), rec.State, "job %s: error %q", id, rec.Error)
	require.Contains(e.t, rec.Error, errPart, "job %s error", id)
	return rec
}

// TestCancelInEveryState: a cancel before admit, while the job is admitted
// but not on Runpod, while QUEUED on Runpod and while IN_PROGRESS there. A job
// not on Runpod must end CANCELED without ever reaching the simulator (a /run
// sent anyway shows in Jobs()); one on Runpod must be cancelled there (the
// simulator's status, not just our record, says CANCELLED).
func TestCancelInEveryState(t *testing.T) {
	t.Parallel()

	t.Run("before_admit", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, runpodsim.Config{})
		e.submit("c-early", jobInput("c-early", nil), 0)
		require.Equal(t, workflow.StateSubmitted, e.cancel("c-early"))
		e.startWorker(e.workerConfig("cw", e.runpod()))
		rec := e.terminalOne("c-early", workflow.StateCanceled, workflow.ReasonCanceledUnsent)
		require.Empty(t, rec.RunpodID)
		require.Zero(t, rec.Attempts, "no /run intent")
		require.Empty(t, e.srv.Sim.Jobs(), "never sent to Runpod")
		e.audit([]string{"c-early"})
	})

	t.Run("submitted_not_on_runpod", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, runpodsim.Config{})
		// Every /run is refused with 503 (Runpod did not take it): the job
		// is admitted and tries /run, but never gets onto Runpod.
		script := make([]int, 1000)
		for i := range script {
			script[i] = 503
		}
		require.NoError(t, e.srv.Sim.SetFaults(runpodsim.OpRun, runpodsim.Faults{Script: script}))
		rp := e.runpod(func(c *activities.Config) { c.MaxAttempts = 1 })
		cfg := e.workerConfig("cw", rp)
		cfg.Retry = workflow.RetryPolicy{Initial: 200 * time.Millisecond, Max: 400 * time.Millisecond}
		e.startWorker(cfg)
		e.submit("c-unsent", jobInput("c-unsent", nil), 0)
		rec := e.waitRecord("c-unsent", 10*time.Second, func(r streams.Record) bool { return r.Attempts >= 1 && r.Owner == "cw" })
		require.Equal(t, string(workflow.StateSubmitted), rec.State)
		require.Equal(t, workflow.StateSubmitted, e.cancel("c-unsent"))
		rec = e.terminalOne("c-unsent", workflow.StateCanceled, workflow.ReasonCanceledUnsent)
		require.Empty(t, rec.RunpodID)
		require.Empty(t, e.srv.Sim.Jobs(), "never created on Runpod")
		require.Positive(t, e.srv.Sim.Stats().Requests[runpodsim.OpRun], "the worker did try /run")
		e.audit([]string{"c-unsent"})
	})

	t.Run("queued_and_in_progress", func(t *testing.T) {
		t.Parallel()
		// One GPU: the first job runs, the second waits IN_QUEUE.
		e := newEnv(t, runpodsim.Config{GPUWorkers: 1})
		e.startWorker(e.workerConfig("cw", e.runpod()))
		e.submit("c-running", jobInput("c-running", map[string]any{"mock_delay": 600000}), 0)
		running := e.waitRecord("c-running", 10*time.Second, func(r streams.Record) bool { return r.State == string(workflow.StateInProgress) })
		e.submit("c-queued", jobInput("c-queued", map[string]any{"mock_delay": 10}), 0)
		queued := e.waitRecord("c-queued", 10*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
		require.Equal(t, string(workflow.StateQueued), queued.State)
		require.Equal(t, workflow.RunpodInQueue, e.simStatus(queued.RunpodID))

		require.Equal(t, workflow.StateQueued, e.cancel("c-queued"))
		rec := e.terminalOne("c-queued", workflow.StateCanceled, workflow.ReasonCanceled)
		require.Equal(t, workflow.RunpodCancelled, e.simStatus(rec.RunpodID))

		require.Equal(t, workflow.StateInProgress, e.cancel("c-running"))
		rec = e.terminalOne("c-running", workflow.StateCanceled, workflow.ReasonCanceled)
		require.Equal(t, running.RunpodID, rec.RunpodID)
		require.Equal(t, workflow.RunpodCancelled, e.simStatus(rec.RunpodID))
		e.checkRunpodSide(map[string]streams.Record{"c-queued": queued, "c-running": rec}, true)
		e.audit([]string{"c-queued", "c-running"})
	})
}

// TestTerminalOutcomes covers every non-COMPLETED way a job can end, each
// against the simulator doing it for real.
func TestTerminalOutcomes(t *testing.T) {
	t.Parallel()

	// Our deadline passes while Runpod still runs the job: TIMED_OUT here,
	// and the Runpod job is cancelled (else it would burn GPU time).
	t.Run("job_timeout", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, runpodsim.Config{})
		e.startWorker(e.workerConfig("ow", e.runpod()))
		e.submit("o-deadline", jobInput("o-deadline", map[string]any{"mock_delay": 600000}), 1500*time.Millisecond)
		rec := e.terminalOne("o-deadline", workflow.StateTimedOut, workflow.ReasonDeadline)
		require.NotEmpty(t, rec.RunpodID)
		eventually(t, 5*time.Second, func() (bool, string) {
			st := e.simStatus(rec.RunpodID)
			return st == workflow.RunpodCancelled, "runpod status " + string(st)
		})
		e.audit([]string{"o-deadline"})
	})

	t.Run("runpod_failed", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, runpodsim.Config{})
		e.startWorker(e.workerConfig("ow", e.runpod()))
		e.submit("o-failed", jobInput("o-failed", map[string]any{"mock_error": "kaput-42"}), 0)
		rec := e.terminalOne("o-failed", workflow.StateFailed, "kaput-42")
		require.Equal(t, string(workflow.RunpodFailed), rec.RunpodStatus)
		e.audit([]string{"o-failed"})
	})

	// Runpod's own execution timeout (simulator option).
	t.Run("runpod_timed_out", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, runpodsim.Config{ExecutionTimeout: 300 * time.Millisecond})
		e.startWorker(e.workerConfig("ow", e.runpod()))
		e.submit("o-rp-timeout", jobInput("o-rp-timeout", map[string]any{"mock_delay": 600000}), 0)
		rec := e.terminalOne("o-rp-timeout", workflow.StateTimedOut, "")
		require.Equal(t, string(workflow.RunpodTimedOut), rec.RunpodStatus)
		require.NotEmpty(t, rec.Error)
		e.audit([]string{"o-rp-timeout"})
	})

	// Someone cancels the job directly on Runpod, behind the worker's back.
	t.Run("runpod_cancelled", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, runpodsim.Config{})
		rp := e.runpod()
		e.startWorker(e.workerConfig("ow", rp))
		e.submit("o-rp-cancel", jobInput("o-rp-cancel", map[string]any{"mock_delay": 600000}), 0)
		rec := e.waitRecord("o-rp-cancel", 10*time.Second, func(r streams.Record) bool { return r.State == string(workflow.StateInProgress) })
		_, err := e.runpod().Cancel(context.Background(), rec.RunpodID)
		require.NoError(t, err)
		rec = e.terminalOne("o-rp-cancel", workflow.StateCanceled, workflow.ReasonRunpodCanceled)
		require.Equal(t, string(workflow.RunpodCancelled), rec.RunpodStatus)
		require.False(t, rec.Cancel, "nobody asked us to cancel")
		e.audit([]string{"o-rp-cancel"})
	})

	// Runpod forgot the job (retention elapsed before our next poll): FAILED
	// "unknown or expired", not polled forever.
	t.Run("status_404_after_retention", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, runpodsim.Config{Retention: 50 * time.Millisecond})
		cfg := e.workerConfig("ow", e.runpod())
		cfg.Poll = workflow.PollPolicy{Initial: 1500 * time.Millisecond, Max: 1500 * time.Millisecond, Jitter: -1}
		e.startWorker(cfg)
		e.submit("o-expired", jobInput("o-expired", map[string]any{"mock_delay": 10}), 0)
		rec := e.terminalOne("o-expired", workflow.StateFailed, "unknown or expired")
		sj, ok := e.srv.Sim.Job(rec.RunpodID)
		require.True(t, ok)
		require.Equal(t, "retention", sj.Removed, "the simulator deleted it by retention")
		require.Equal(t, workflow.RunpodCompleted, sj.Status, "it had completed on Runpod, but nobody can know")
		e.audit([]string{"o-expired"})
	})
}

// TestPoisonSubmissions: undecodable, oversized, unknown-version and id-less
// submissions end FAILED with a reason (or rejected, without an id), each is
// copied to the dead-letter stream, nothing is sent to Runpod for them, and
// the same worker goes on to complete the good jobs that follow.
func TestPoisonSubmissions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, runpodsim.Config{})
	ctx := context.Background()
	cfg := e.workerConfig("pw", e.runpod())
	cfg.MaxInputBytes = 1024
	var poisoned []string
	cfg.Hooks.OnPoison = func(reason string) { poisoned = append(poisoned, reason) } // one fetcher: no race
	w := e.startWorker(cfg)

	big := `{"job":"p-big","pad":"` + strings.Repeat("x", 2048) + `"}`
	e.xadd("job_id", "p-badjson", "input", `{"job": "p-badjson", oops`, "v", "1")
	e.xadd("job_id", "p-big", "input", big, "v", "1")
	e.xadd("job_id", "p-v9", "input", `{"job":"p-v9"}`, "v", "9")
	e.xadd("input", `{"job":"p-noid"}`, "v", "1")
	e.xadd("job_id", "p-noinput", "v", "1")
	good := jobIDs("p-good", 5)
	for _, id := range good {
		e.rawSubmit(id, jobInput(id, map[string]any{"mock_return": id}))
	}

	bad := map[string]string{
		"p-badjson": "not valid JSON",
		"p-big":     "over the limit",
		"p-v9":      "unknown wire version",
		"p-noinput": "missing input",
	}
	ids := append(sortedKeys(bad), good...)
	recs := e.waitTerminal(ids, 20*time.Second)
	for id, part := range bad {
		require.Equal(t, string(workflow.StateFailed), recs[id].State, id)
		require.Contains(t, recs[id].Error, part, id)
	}
	for _, id := range good {
		require.Equal(t, string(workflow.StateCompleted), recs[id].State, "job %s: %s", id, recs[id].Error)
		require.JSONEq(t, fmt.Sprintf("%q", id), string(recs[id].Output))
	}
	by := e.audit(ids)
	for id := range bad {
		last := by[id][len(by[id])-1]
		require.Equal(t, streams.EventFailed, last.Type)
		require.NotEmpty(t, last.Payload.Reason, "job %s: dead-letter reason on the failed event", id)
	}

	// The id-less one is rejected: an event with a reason and no job.
	all, _ := e.events()
	var rejected []streams.Event
	for _, ev := range all {
		if ev.Type == streams.EventRejected {
			rejected = append(rejected, ev)
		}
	}
	require.Len(t, rejected, 1, "one rejected event (the entry without job_id)")
	require.Empty(t, rejected[0].JobID)
	require.Contains(t, rejected[0].Payload.Reason, "missing job_id")

	dead, err := e.rdb.XRange(ctx, e.store.Keys().Dead(), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, dead, len(bad)+1, "one dead-letter copy per poison entry")
	for _, d := range dead {
		require.NotEmpty(t, d.Values["dead_reason"], "dead-letter entry %v", d.Values)
	}
	require.Len(t, poisoned, len(bad)+1)
	require.Equal(t, uint64(len(bad)+1), w.w.Stats().Poisoned)

	// Nothing of the poison reached Runpod.
	sims := e.simJobs()
	require.Len(t, sims, len(good), "runpod jobs: %v", sortedKeys(sims))

	// And the pool still works: a job submitted after all this completes.
	e.submit("p-after", jobInput("p-after", nil), 0)
	out := e.await("p-after")
	require.Equal(t, workflow.StateCompleted, out.Status)
}
