package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestStats: jobs no worker has read yet show as backlog with their age,
// delivered ones as pending, outcomes of the last minute are counted, and
// the workers' reports are summed (a stale one is shown but not summed).
func TestStats(t *testing.T) {
	t.Parallel()
	b := setup(t, client.Config{PersistInput: true})
	ctx := context.Background()
	for _, id := range []string{"s1", "s2", "s3", "s4", "s5"} {
		b.submit(t, id)
	}
	st, err := b.client.Stats(ctx, client.StatsOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(5), st.Backlog, "read by no worker yet: the backlog")
	require.Zero(t, st.Pending)
	require.Positive(t, st.OldestWaiting)
	require.Zero(t, st.ActiveConsumers)

	recs := b.worker.admit(ctx, 2, streams.AdmitOpts{})
	for _, r := range recs {
		b.worker.finish(ctx, r, workflow.StateFailed, "", "boom")
	}
	more := b.worker.admit(ctx, 1, streams.AdmitOpts{})
	require.NoError(t, b.client.ReportWorker(ctx, client.WorkerReport{Instance: "w-fresh", AtMs: time.Now().UnixMilli(),
		InFlight: 1, InFlightByState: map[string]int{"QUEUED": 1},
		RunpodCalls: map[string]map[string]uint64{"run": {"ok": 3, "transient": 1}}}))
	require.NoError(t, b.client.ReportWorker(ctx, client.WorkerReport{Instance: "w-stale", AtMs: time.Now().Add(-time.Hour).UnixMilli(),
		InFlight: 7, InFlightByState: map[string]int{"QUEUED": 7}}))

	st, err = b.client.Stats(ctx, client.StatsOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(2), st.Backlog)
	require.Equal(t, int64(1), st.Pending)
	require.Len(t, more, 1)
	require.Equal(t, 2, st.Outcomes[workflow.StateFailed])
	require.InDelta(t, 2.0, st.OutcomesPerMinute, 0.001)
	require.Equal(t, 1, st.ActiveConsumers)
	require.Equal(t, "fake-worker", st.Consumers[0].Name)
	require.Equal(t, map[workflow.State]int{workflow.StateQueued: 1}, st.InFlightByState)
	require.Equal(t, uint64(4), st.RunpodCalls["run"])
	require.Equal(t, uint64(1), st.RunpodErrors["run"])
	require.Len(t, st.Workers, 2)
	require.True(t, st.Workers[1].Stale)
	require.Equal(t, 1, st.LiveWorkers)
}

// TestListDeadRetryPurge: list by state, read the dead letters, retry a
// FAILED and a dead-lettered job as run 2 (a COMPLETED one is refused), the
// audit checks one outcome per run, and purge deletes finished records only.
func TestListDeadRetryPurge(t *testing.T) {
	t.Parallel()
	b := setup(t, client.Config{PersistInput: true})
	ctx := context.Background()
	for _, id := range []string{"l-ok", "l-fail", "l-live"} {
		b.submit(t, id)
	}
	recs := b.worker.admit(ctx, 3, streams.AdmitOpts{})
	b.worker.finish(ctx, recs["l-ok"], workflow.StateCompleted, `{"x":1}`, "")
	b.worker.finish(ctx, recs["l-fail"], workflow.StateFailed, "", "boom")
	// A raw poison submission (a wire version no worker knows): dead-lettered.
	_, err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "{" + b.ns + "}:submissions",
		Values: []any{"job_id", "l-poison", "input", `{"big":"xxxxxxxx"}`, "v", "99"}}).Result()
	require.NoError(t, err)
	b.worker.admit(ctx, 1, streams.AdmitOpts{})

	page, err := b.client.List(ctx, client.ListOptions{State: workflow.StateFailed})
	require.NoError(t, err)
	ids := []string{}
	for _, j := range page.Jobs {
		ids = append(ids, j.ID)
	}
	require.ElementsMatch(t, []string{"l-fail", "l-poison"}, ids)
	all, err := b.client.List(ctx, client.ListOptions{})
	require.NoError(t, err)
	require.Len(t, all.Jobs, 4)

	dead, err := b.client.Dead(ctx, client.DeadOptions{})
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "l-poison", dead[0].JobID)
	require.NotEmpty(t, dead[0].Reason)
	require.JSONEq(t, `{"big":"xxxxxxxx"}`, string(dead[0].Input))

	_, err = b.client.Retry(ctx, "l-ok")
	require.ErrorIs(t, err, client.ErrCompleted)
	_, err = b.client.Retry(ctx, "l-live")
	require.ErrorIs(t, err, client.ErrNotFinished)
	_, err = b.client.Retry(ctx, "nope")
	require.ErrorIs(t, err, workflow.ErrJobNotFound)
	res, err := b.client.Retry(ctx, "l-fail")
	require.NoError(t, err)
	require.Equal(t, 2, res.Run)
	require.Equal(t, workflow.StateFailed, res.PreviousState)

	done, skipped, err := b.client.RetryDead(ctx, client.DeadOptions{})
	require.NoError(t, err)
	require.Empty(t, skipped)
	require.Len(t, done, 1)
	require.True(t, done[0].FromDeadLetter)
	dead, err = b.client.Dead(ctx, client.DeadOptions{})
	require.NoError(t, err)
	require.Empty(t, dead, "a redriven dead letter leaves the dead stream")

	// Both runs 2 end COMPLETED: one terminal outcome per run.
	again := b.worker.admit(ctx, 2, streams.AdmitOpts{})
	for _, r := range again {
		require.Equal(t, 2, r.Run)
		b.worker.finish(ctx, r, workflow.StateCompleted, `{"ok":true}`, "")
	}
	job, err := b.client.Get(ctx, "l-fail")
	require.NoError(t, err)
	require.Equal(t, workflow.StateCompleted, job.State)
	require.Equal(t, 2, job.Run)
	runs := map[client.EventType][]int{}
	for ev, err := range b.client.Events(ctx, client.EventsOptions{From: client.FromStart, JobID: "l-fail", StopAtEnd: true}) {
		require.NoError(t, err)
		runs[ev.Type] = append(runs[ev.Type], ev.Run)
	}
	require.Equal(t, []int{0}, runs[client.EventFailed], "run 1's events carry no run")
	require.Equal(t, []int{2}, runs[client.EventRetried])
	require.Equal(t, []int{2}, runs[client.EventCompleted], "run 2's events say so")
	rep, err := b.client.Audit(ctx, client.AuditOptions{})
	require.NoError(t, err)
	require.True(t, rep.OK(), "violations: %v", rep.Violations)
	require.Equal(t, 2, rep.Retries)

	pr, err := b.client.Purge(ctx, client.PurgeOptions{States: []workflow.State{workflow.StateCompleted}})
	require.NoError(t, err)
	require.Equal(t, 3, pr.Jobs)
	_, err = b.client.Get(ctx, "l-live")
	require.NoError(t, err, "a live job is never purged")
	_, err = b.client.Get(ctx, "l-ok")
	require.True(t, errors.Is(err, workflow.ErrJobNotFound))
}

// TestAuditRunViolations: a retried event while the run has no outcome, or
// two outcomes within one run, are violations; one outcome per run is not.
func TestAuditRunViolations(t *testing.T) {
	t.Parallel()
	ev := func(id string, typ client.EventType, st workflow.State, run int) client.Event {
		return client.Event{ID: id, Type: typ, JobID: "j", State: st, Run: run}
	}
	ok := client.AuditEvents([]client.Event{
		ev("1", client.EventSubmitted, workflow.StateSubmitted, 0),
		ev("2", client.EventFailed, workflow.StateFailed, 0),
		ev("3", client.EventRetried, workflow.StateSubmitted, 2),
		ev("4", client.EventQueued, workflow.StateQueued, 2),
		ev("5", client.EventCompleted, workflow.StateCompleted, 2),
	}, client.FromStart)
	require.True(t, ok.OK(), "%v", ok.Violations)
	bad := client.AuditEvents([]client.Event{
		ev("1", client.EventSubmitted, workflow.StateSubmitted, 0),
		ev("2", client.EventRetried, workflow.StateSubmitted, 2),
		ev("3", client.EventFailed, workflow.StateFailed, 2),
		ev("4", client.EventCompleted, workflow.StateCompleted, 2),
		ev("5", client.EventProgress, workflow.StateInProgress, 0),
	}, client.FromStart)
	require.Len(t, bad.Violations, 4, "%v", bad.Violations)
	require.Equal(t, client.ViolationRetryLive, bad.Violations[0].Kind, "retried while run 1 is live")
	require.Equal(t, client.ViolationDuplicateTerminal, bad.Violations[1].Kind, "two outcomes in run 2")
	require.Equal(t, client.ViolationRetryLive, bad.Violations[2].Kind, "a run-1 event during run 2")
}
