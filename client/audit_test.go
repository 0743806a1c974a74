package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// history builds events for hand-written histories: "job:type:STATE".
func history(specs ...string) []client.Event {
	evs := make([]client.Event, len(specs))
	for i, s := range specs {
		var job, typ, st string
		n, _ := fmt.Sscanf(replaceColons(s), "%s %s %s", &job, &typ, &st)
		if n < 2 {
			panic("bad spec " + s)
		}
		evs[i] = client.Event{ID: fmt.Sprintf("%d-0", i+1), JobID: job, Type: client.EventType(typ), State: workflow.State(st)}
	}
	return evs
}

func replaceColons(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == ':' {
			b[i] = ' '
		}
	}
	return string(b)
}

func kinds(r client.AuditReport) []client.ViolationKind {
	var ks []client.ViolationKind
	for _, v := range r.Violations {
		ks = append(ks, v.Kind)
	}
	return ks
}

func TestAuditEvents(t *testing.T) {
	t.Parallel()

	t.Run("CleanHistories", func(t *testing.T) {
		t.Parallel()
		r := client.AuditEvents(history(
			"a:submitted:SUBMITTED",
			"b:submitted:SUBMITTED",
			"a:queued:QUEUED",
			"a:progress:IN_PROGRESS",
			"a:progress:IN_PROGRESS", // progress may repeat a state
			"a:progress:QUEUED",      // Runpod re-queued it
			"a:progress:IN_PROGRESS",
			"b:cancel_requested:SUBMITTED",
			"a:completed:COMPLETED",
			"b:canceled:CANCELED",
			"c:submitted:SUBMITTED",
			"c:queued:QUEUED",
			"d:deduplicated", // alias of another job: no state, no outcome
		), "0")
		require.True(t, r.OK(), "violations: %v", r.Violations)
		require.Equal(t, 13, r.Events)
		require.Equal(t, 4, r.Jobs)
		require.Equal(t, 2, r.Terminal)
		require.Equal(t, 1, r.Aliases)
		require.Equal(t, []string{"c"}, r.InFlight)
		require.Equal(t, map[workflow.State]int{workflow.StateCompleted: 1, workflow.StateCanceled: 1, workflow.StateQueued: 1}, r.ByState)
	})

	t.Run("PoisonRawSubmissionMayStartFailed", func(t *testing.T) {
		t.Parallel()
		evs := history("p:failed:FAILED")
		evs[0].Reason = "input is not valid JSON"
		r := client.AuditEvents(evs, "0")
		require.True(t, r.OK(), "violations: %v", r.Violations)
		// Without the dead-letter reason it is a job that skipped submitted.
		r = client.AuditEvents(history("p:failed:FAILED"), "0")
		require.Equal(t, []client.ViolationKind{client.ViolationNotSubmittedFirst}, kinds(r))
	})

	t.Run("EachViolation", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name string
			evs  []client.Event
			from string
			want []client.ViolationKind
		}{
			{"DuplicateTerminal", history("a:submitted:SUBMITTED", "a:completed:COMPLETED", "a:failed:FAILED"), "0",
				[]client.ViolationKind{client.ViolationDuplicateTerminal}},
			{"SameTerminalTwice", history("a:submitted:SUBMITTED", "a:completed:COMPLETED", "a:completed:COMPLETED"), "0",
				[]client.ViolationKind{client.ViolationDuplicateTerminal}},
			{"AfterTerminal", history("a:submitted:SUBMITTED", "a:canceled:CANCELED", "a:progress:IN_PROGRESS"), "0",
				[]client.ViolationKind{client.ViolationAfterTerminal}},
			{"IllegalTransition", history("a:submitted:SUBMITTED", "a:progress:IN_PROGRESS", "a:progress:SUBMITTED"), "0",
				[]client.ViolationKind{client.ViolationIllegalTransition}},
			{"NotSubmittedFirst", history("a:queued:QUEUED"), "0",
				[]client.ViolationKind{client.ViolationNotSubmittedFirst}},
			{"UnknownState", history("a:submitted:SUBMITTED", "a:progress:RUNNING"), "0",
				[]client.ViolationKind{client.ViolationBadState}},
			{"TerminalTypeStateMismatch", history("a:submitted:SUBMITTED", "a:completed:FAILED"), "0",
				[]client.ViolationKind{client.ViolationBadState}},
			{"TerminalStateOnProgress", history("a:submitted:SUBMITTED", "a:progress:COMPLETED"), "0",
				[]client.ViolationKind{client.ViolationBadState}},
			{"MissingState", history("a:submitted:SUBMITTED", "a:queued"), "0",
				[]client.ViolationKind{client.ViolationBadState}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				r := client.AuditEvents(tc.evs, tc.from)
				require.Equal(t, tc.want, kinds(r), "violations: %v", r.Violations)
				v := r.Violations[0]
				require.Equal(t, "a", v.JobID)
				require.Equal(t, tc.evs[len(tc.evs)-1].ID, v.EventID, "the violation names the offending event")
				require.NotEmpty(t, v.Detail)
			})
		}
	})

	t.Run("FromMidHistoryIsLenient", func(t *testing.T) {
		t.Parallel()
		evs := history("a:progress:IN_PROGRESS", "a:completed:COMPLETED", "b:queued:QUEUED")
		r := client.AuditEvents(evs, "1700000000000-0")
		require.True(t, r.OK(), "violations: %v", r.Violations)
		require.Equal(t, []string{"b"}, r.InFlight)
		// The same events from the start are a violation per job.
		r = client.AuditEvents(evs, "0")
		require.Equal(t, []client.ViolationKind{client.ViolationNotSubmittedFirst, client.ViolationNotSubmittedFirst}, kinds(r))
	})

	t.Run("UndecodableAndUnattributedAreCounted", func(t *testing.T) {
		t.Parallel()
		evs := []client.Event{{ID: "1-0"}, {ID: "2-0", Type: client.EventRejected, Reason: "missing job_id"}}
		r := client.AuditEvents(evs, "0")
		require.True(t, r.OK())
		require.Equal(t, 1, r.Undecodable)
		require.Equal(t, 1, r.Unattributed)
		require.Zero(t, r.Jobs)
	})

	t.Run("ReportIsASnapshot", func(t *testing.T) {
		t.Parallel()
		a := client.NewAuditor("0")
		for _, ev := range history("a:submitted:SUBMITTED", "a:completed:COMPLETED") {
			a.Add(ev)
		}
		r1 := a.Report()
		a.Add(history("x:x:x", "a:failed:FAILED")[1])
		require.True(t, r1.OK(), "an earlier report does not change")
		require.False(t, a.Report().OK())
	})
}

// TestAudit replays a real events stream written by the client and the
// scripts a worker uses, then one with a forged second outcome.
func TestAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, client.Config{})
	for i := range 6 {
		b.submit(t, fmt.Sprint("j", i))
	}
	// A raw producer's entry a worker refuses as poison: it ends FAILED
	// without a submitted event, which is a legal history.
	require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "{" + b.ns + "}:submissions",
		Values: []any{"job_id", "poison", "input", "{not json"}}).Err())
	recs := b.worker.admit(ctx, 7, streams.AdmitOpts{})
	for i := range 4 {
		b.worker.accept(ctx, recs[fmt.Sprint("j", i)], fmt.Sprint("rp-", i))
	}
	b.worker.progress(ctx, recs["j0"], workflow.StateInProgress)
	b.worker.finish(ctx, recs["j0"], workflow.StateCompleted, `1`, "")
	b.worker.finish(ctx, recs["j1"], workflow.StateFailed, "", "boom")
	b.worker.finish(ctx, recs["j2"], workflow.StateTimedOut, "", "deadline")
	_, err := b.client.Cancel(ctx, "j4")
	require.NoError(t, err)
	b.worker.finish(ctx, recs["j4"], workflow.StateCanceled, "", "canceled")

	rep, err := b.client.Audit(ctx, client.AuditOptions{})
	require.NoError(t, err)
	require.True(t, rep.OK(), "violations: %v", rep.Violations)
	require.Equal(t, 6+1+4+1+4+1, rep.Events)
	require.Equal(t, 7, rep.Jobs)
	require.Equal(t, 5, rep.Terminal)
	require.Equal(t, []string{"j3", "j5"}, rep.InFlight)
	require.Equal(t, map[workflow.State]int{
		workflow.StateCompleted: 1, workflow.StateFailed: 2, workflow.StateTimedOut: 1, workflow.StateCanceled: 1,
		workflow.StateQueued: 1, workflow.StateSubmitted: 1,
	}, rep.ByState)

	// A forged second outcome for j0, as a buggy writer would append it.
	payload, err := streams.EncodePayload(streams.EventPayload{Error: "late"})
	require.NoError(t, err)
	forged, err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "{" + b.ns + "}:events", Values: []any{
		"type", "failed", "job_id", "j0", "state", "FAILED", "epoch", "1",
		"ts", fmt.Sprint(time.Now().UnixMilli()), "payload", string(payload),
	}}).Result()
	require.NoError(t, err)

	rep, err = b.client.Audit(ctx, client.AuditOptions{})
	require.NoError(t, err)
	require.Equal(t, []client.Violation{{JobID: "j0", EventID: forged, Kind: client.ViolationDuplicateTerminal,
		Detail: "failed event (FAILED) after the job ended COMPLETED"}}, rep.Violations)
}

// A Runpod id that changes without the queued event of a new /run attempt
// is flagged: a stale owner's Runpod job replaced the recorded one.
func TestAuditRunpodIDChange(t *testing.T) {
	t.Parallel()
	ev := func(id int, typ client.EventType, st workflow.State, rp string, attempt int) client.Event {
		return client.Event{ID: fmt.Sprintf("%d-0", id), JobID: "j", Type: typ, State: st, RunpodID: rp, Attempt: attempt}
	}
	clean := client.AuditEvents([]client.Event{
		ev(1, client.EventSubmitted, workflow.StateSubmitted, "", 0),
		ev(2, client.EventQueued, workflow.StateQueued, "rp-1", 1),
		ev(3, client.EventQueued, workflow.StateQueued, "rp-2", 2), // resubmitted after an uncertain /run
		ev(4, client.EventProgress, workflow.StateInProgress, "rp-2", 0),
		ev(5, client.EventCompleted, workflow.StateCompleted, "rp-2", 0),
	}, client.FromStart)
	require.Empty(t, clean.Violations)

	// A (attempt 1, stale) overwrites B's rp-B (attempt 2).
	bad := client.AuditEvents([]client.Event{
		ev(1, client.EventSubmitted, workflow.StateSubmitted, "", 0),
		ev(2, client.EventQueued, workflow.StateQueued, "rp-B", 2),
		ev(3, client.EventQueued, workflow.StateQueued, "rp-1", 1),
		ev(4, client.EventCompleted, workflow.StateCompleted, "rp-1", 0),
	}, client.FromStart)
	require.Equal(t, []client.ViolationKind{client.ViolationRunpodIDChanged}, kinds(bad))

	// A webhook revealed attempt 1's Runpod job (never recorded) and it won.
	revealed := client.AuditEvents([]client.Event{
		ev(1, client.EventSubmitted, workflow.StateSubmitted, "", 0),
		ev(2, client.EventQueued, workflow.StateQueued, "rp-2", 2),
		ev(3, client.EventRunpodJobRevealed, workflow.StateQueued, "rp-1", 1),
		ev(4, client.EventCompleted, workflow.StateCompleted, "rp-1", 0),
	}, client.FromStart)
	require.Empty(t, revealed.Violations)
	// A "revealed" job of the current attempt is not one.
	bad = client.AuditEvents([]client.Event{
		ev(1, client.EventSubmitted, workflow.StateSubmitted, "", 0),
		ev(2, client.EventQueued, workflow.StateQueued, "rp-2", 2),
		ev(3, client.EventRunpodJobRevealed, workflow.StateQueued, "rp-x", 2),
	}, client.FromStart)
	require.Equal(t, []client.ViolationKind{client.ViolationRunpodIDChanged}, kinds(bad))

	// A terminal event naming another job than the recorded one.
	bad = client.AuditEvents([]client.Event{
		ev(1, client.EventSubmitted, workflow.StateSubmitted, "", 0),
		ev(2, client.EventQueued, workflow.StateQueued, "rp-1", 1),
		ev(3, client.EventCompleted, workflow.StateCompleted, "rp-9", 0),
	}, client.FromStart)
	require.Equal(t, []client.ViolationKind{client.ViolationRunpodIDChanged}, kinds(bad))
}

// TestAuditCountsPossibleDuplicates: every /run attempt with an unknown
// outcome (submit_uncertain) is a possible duplicate GPU job, counted once
// per job and attempt even if two workers recorded it; it is not a
// violation.
func TestAuditCountsPossibleDuplicates(t *testing.T) {
	t.Parallel()
	evs := history("a:submitted:SUBMITTED", "a:submit_uncertain:SUBMITTED", "b:submitted:SUBMITTED",
		"a:submit_uncertain:SUBMITTED", "a:submit_uncertain:SUBMITTED", "a:queued:QUEUED", "a:completed:COMPLETED",
		"b:queued:QUEUED")
	evs[1].Attempt, evs[3].Attempt, evs[4].Attempt = 1, 1, 2
	r := client.AuditEvents(evs, client.FromStart)
	require.True(t, r.OK(), "%v", r.Violations)
	require.Equal(t, 2, r.PossibleDuplicateGPUJobs)
	require.Equal(t, []string{"a"}, r.UncertainJobs)
}
