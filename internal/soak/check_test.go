package soak

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// history builds a synthetic soak outcome: each job added is clean (one
// submitted → queued → completed history, one Runpod job answered to slot
// 0), and tests then break one promise at a time.
type history struct {
	t0   time.Time
	seq  int
	in   CheckInput
	spec map[string]*JobFacts
}

func newHistory() *history {
	return &history{t0: time.Unix(1_800_000_000, 0), spec: map[string]*JobFacts{},
		in: CheckInput{Replies: map[string]RunReply{}, CrashWindow: 3 * time.Second}}
}

func (h *history) event(job string, typ client.EventType, st workflow.State, epoch int64) client.Event {
	h.seq++
	ev := client.Event{ID: fmt.Sprintf("%d-0", 1000+h.seq), Type: typ, JobID: job, State: st, Epoch: epoch}
	h.in.Events = append(h.in.Events, ev)
	h.in.Live = append(h.in.Live, ev)
	return ev
}

// job adds a clean fast job that completed on Runpod job "rp-<id>".
func (h *history) job(id string) {
	out := mustJSON(map[string]any{"job": id})
	rp := "rp-" + id
	h.event(id, client.EventSubmitted, workflow.StateSubmitted, 0)
	h.event(id, client.EventQueued, workflow.StateQueued, 1)
	h.event(id, client.EventCompleted, workflow.StateCompleted, 1)
	h.in.Jobs = append(h.in.Jobs, JobFacts{
		Spec:   JobSpec{ID: id, Kind: KindFast, Output: out},
		Acked:  true,
		Record: &streams.Record{JobID: id, State: string(workflow.StateCompleted), Epoch: 1, RunpodID: rp, Attempts: 1, Output: out},
	})
	h.sim(id, rp, workflow.RunpodCompleted)
	h.in.Replies[rp] = RunReply{Slot: 0, At: h.t0.Add(time.Duration(h.seq) * time.Second)}
}

func (h *history) sim(job, rp string, st workflow.RunpodStatus) {
	h.in.Sim = append(h.in.Sim, runpodsim.JobInfo{ID: rp, Input: mustJSON(map[string]any{"job": job}), Status: st,
		CreatedAt: h.t0.Add(time.Duration(h.seq) * time.Second)})
}

func (h *history) facts(id string) *JobFacts {
	for i := range h.in.Jobs {
		if h.in.Jobs[i].Spec.ID == id {
			return &h.in.Jobs[i]
		}
	}
	panic(id)
}

func kinds(r Report) map[string]int {
	m := map[string]int{}
	for _, v := range r.Violations {
		m[v.Kind]++
	}
	return m
}

func TestCheckCleanHistoryPasses(t *testing.T) {
	t.Parallel()
	h := newHistory()
	for i := range 5 {
		h.job(fmt.Sprintf("j%d", i))
	}
	r := Check(h.in)
	require.True(t, r.OK(), "violations: %v", r.Violations)
	require.Equal(t, 5, r.ByState["COMPLETED"])
	require.Equal(t, 5, r.RunpodJobs)
	require.Zero(t, r.ExtraRunpodJobs)
}

func TestCheckReportsDuplicateTerminal(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	h.job("b")
	h.event("a", client.EventFailed, workflow.StateFailed, 2) // a second outcome
	r := Check(h.in)
	require.False(t, r.OK())
	require.Equal(t, 1, r.DuplicateTerminal)
	require.Equal(t, 1, kinds(r)[string(client.ViolationDuplicateTerminal)])
	require.Equal(t, 1, r.LiveDupTerminal, "the live reader saw it too")
	require.Equal(t, "a", r.Violations[0].JobID)
}

func TestCheckReportsIllegalTransition(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	// QUEUED after COMPLETED is reported as an event after terminal; an
	// illegal move between live states needs its own job.
	h.event("b", client.EventSubmitted, workflow.StateSubmitted, 0)
	h.event("b", client.EventProgress, workflow.StateInProgress, 1)
	h.event("b", client.EventProgress, workflow.StateSubmitted, 1) // IN_PROGRESS → SUBMITTED
	h.event("b", client.EventCompleted, workflow.StateCompleted, 1)
	out := mustJSON(map[string]any{"job": "b"})
	h.in.Jobs = append(h.in.Jobs, JobFacts{Spec: JobSpec{ID: "b", Kind: KindFast, Output: out}, Acked: true,
		Record: &streams.Record{JobID: "b", State: "COMPLETED", Epoch: 1, Attempts: 1, RunpodID: "rp-b", Output: out}})
	h.sim("b", "rp-b", workflow.RunpodCompleted)
	h.in.Replies["rp-b"] = RunReply{Slot: 1, At: h.t0}
	r := Check(h.in)
	require.Equal(t, 1, r.IllegalTransitions, "violations: %v", r.Violations)
	require.Equal(t, 1, kinds(r)[string(client.ViolationIllegalTransition)])
}

func TestCheckReportsLostAndPendingJobs(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	// Acknowledged, then gone from Redis (a lost tail after a restart).
	h.in.Jobs = append(h.in.Jobs, JobFacts{Spec: JobSpec{ID: "lost", Kind: KindFast}, Acked: true})
	h.sim("lost", "rp-lost", workflow.RunpodInProgress) // its GPU job runs on, untracked
	// Acknowledged and never finished.
	h.event("open", client.EventSubmitted, workflow.StateSubmitted, 0)
	h.in.Jobs = append(h.in.Jobs, JobFacts{Spec: JobSpec{ID: "open", Kind: KindFast}, Acked: true,
		Record: &streams.Record{JobID: "open", State: "SUBMITTED"}})
	// Never acknowledged: no promise, no violation.
	h.in.Jobs = append(h.in.Jobs, JobFacts{Spec: JobSpec{ID: "never", Kind: KindFast}})
	h.in.Pending = 1
	r := Check(h.in)
	require.Equal(t, 1, r.Lost)
	require.Equal(t, 1, r.LostRunpodJobs)
	require.Equal(t, 1, r.LostRunning)
	require.Equal(t, 1, r.Pending)
	k := kinds(r)
	require.Equal(t, 1, k[VLost])
	require.Equal(t, 1, k[VPending])
	require.Equal(t, 1, k[VSubmissionsLeft])
}

func TestCheckReportsUnexplainedExtraRunpodJob(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	// A second Runpod job for "a", answered to slot 2 with nothing
	// disrupted around it: a /run nobody can account for.
	h.sim("a", "rp-a-2", workflow.RunpodInProgress)
	h.in.Replies["rp-a-2"] = RunReply{Slot: 2, At: h.t0.Add(time.Minute)}
	h.facts("a").Record.Attempts = 2
	r := Check(h.in)
	require.Equal(t, 1, r.ExtraRunpodJobs)
	require.Zero(t, r.ExtraExplained)
	k := kinds(r)
	require.Equal(t, 1, k[VExtraUnexplained], "violations: %v", r.Violations)
	require.Equal(t, 1, k[VLeftRunning], "it is still running with nobody tracking it")

	// The same extra is explained once its worker was SIGKILLed right
	// after the answer, and its running on is then the documented cost.
	h.in.Disruptions = []Disruption{{Kind: DisruptKill, Slot: 2, Start: h.t0.Add(time.Minute + 10*time.Millisecond), End: h.t0.Add(time.Minute + 10*time.Millisecond)}}
	r = Check(h.in)
	require.True(t, r.OK(), "violations: %v", r.Violations)
	require.Equal(t, 1, r.ExtraExplained)
	require.Equal(t, 1, r.ExtraByReason[ReasonSenderKilled])
	require.Equal(t, 1, r.LeftRunningExplained)

	// A kill of another slot explains nothing.
	h.in.Disruptions[0].Slot = 3
	require.Equal(t, 1, kinds(Check(h.in))[VExtraUnexplained])

	// A paused worker knows the id: its orphan still running is a leak.
	h.in.Disruptions = []Disruption{{Kind: DisruptStop, Slot: 2, Start: h.t0.Add(time.Minute - 500*time.Millisecond), End: h.t0.Add(time.Minute + 3*time.Second)}}
	r = Check(h.in)
	require.Equal(t, 1, r.ExtraByReason[ReasonSenderStopped])
	require.Equal(t, 1, kinds(r)[VLeftRunning], "violations: %v", r.Violations)
}

func TestCheckReportsMoreRunpodJobsThanAttempts(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	h.sim("a", "rp-a-2", workflow.RunpodCompleted) // reply lost: explained, but attempts says 1
	r := Check(h.in)
	require.Equal(t, 1, kinds(r)[VRunsOverAttempts], "violations: %v", r.Violations)
}

func TestCheckReportsUnexpectedOutcomes(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	h.job("b")
	h.job("c")
	// "a" was never cancelled but ends CANCELED.
	h.in.Events[2].Type, h.in.Events[2].State = client.EventCanceled, workflow.StateCanceled
	h.in.Live[2] = h.in.Events[2]
	h.facts("a").Record.State = "CANCELED"
	// "b" completed without its output (a cancel that lost the race).
	h.facts("b").Record.Output = nil
	// "c" is a failing job that completed.
	h.facts("c").Spec.Kind = KindFail
	r := Check(h.in)
	k := kinds(r)
	require.Equal(t, 2, k[VUnexpectedOutcome], "violations: %v", r.Violations)
	require.Equal(t, 1, k[VOutputMismatch])
	require.Equal(t, 3, r.UnexpectedOutcomes)
}

func TestCheckCancelRaceFollowsRunpod(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	f := h.facts("a")
	f.Spec.Kind, f.CancelRequested = KindCancelRace, true
	// Runpod finished it COMPLETED, the record says CANCELED.
	h.in.Events[2].Type, h.in.Events[2].State = client.EventCanceled, workflow.StateCanceled
	h.in.Live[2] = h.in.Events[2]
	f.Record.State = "CANCELED"
	r := Check(h.in)
	require.Equal(t, 1, kinds(r)[VUnexpectedOutcome], "violations: %v", r.Violations)
	require.Contains(t, r.Violations[0].Detail, "Runpod finished it COMPLETED")
}

func TestCheckReportsStaleEpochAndRecordMismatch(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.event("a", client.EventSubmitted, workflow.StateSubmitted, 0)
	h.event("a", client.EventQueued, workflow.StateQueued, 3)
	h.event("a", client.EventProgress, workflow.StateInProgress, 2) // the fenced owner wrote
	h.event("a", client.EventCompleted, workflow.StateCompleted, 3)
	out := mustJSON(map[string]any{"job": "a"})
	h.in.Jobs = append(h.in.Jobs, JobFacts{Spec: JobSpec{ID: "a", Kind: KindFast, Output: out}, Acked: true,
		Record: &streams.Record{JobID: "a", State: "COMPLETED", Epoch: 4, Attempts: 1, RunpodID: "rp-a", Output: out}})
	h.sim("a", "rp-a", workflow.RunpodCompleted)
	h.in.Replies["rp-a"] = RunReply{At: h.t0}
	r := Check(h.in)
	k := kinds(r)
	require.Equal(t, 1, k[VStaleEpoch], "violations: %v", r.Violations)
	require.Equal(t, 1, k[VRecordMismatch])
}

func TestCheckReportsLiveReaderMismatch(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	h.job("b")
	// The live reader saw b's terminal event, the final stream lost it
	// (and the record with it): a lost tail after a Redis restart.
	h.in.Events = h.in.Events[:len(h.in.Events)-1]
	h.facts("b").Record.State = "QUEUED"
	// And an id reused for another event after the restart.
	h.in.Events[1].Type = client.EventProgress
	r := Check(h.in)
	require.Equal(t, 1, r.LiveOnly)
	require.Equal(t, 1, r.LiveChanged)
	require.Equal(t, 2, r.LiveReaderMismatch)
	require.Equal(t, 2, kinds(r)[VLiveMismatch], "violations: %v", r.Violations)
}

func TestSummaryJSONHasTheFields(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	sum := Summary{Report: Check(h.in), Violations: []Violation{}}
	b, err := json.Marshal(sum)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"jobs", "seconds", "lost", "duplicate_terminal", "unexpected_outcomes", "extra_runpod_jobs",
		"extra_explained", "left_running", "live_reader_mismatch", "faults", "violations"} {
		require.Contains(t, m, k)
	}
}

func TestMixIsDeterministic(t *testing.T) {
	t.Parallel()
	a := makeMix(newRand(7), 200, AllKinds)
	b := makeMix(newRand(7), 200, AllKinds)
	require.Equal(t, a, b)
	seen := map[Kind]bool{}
	for _, s := range a {
		seen[s.Kind] = true
	}
	require.Len(t, seen, len(AllKinds), "200 jobs draw every kind")
}

func TestCheckReportsRunpodIDChangedWithoutAttempt(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.event("a", client.EventSubmitted, workflow.StateSubmitted, 0)
	h.event("a", client.EventQueued, workflow.StateQueued, 2)
	h.in.Events[len(h.in.Events)-1].RunpodID, h.in.Events[len(h.in.Events)-1].Attempt = "rp-B", 2
	h.in.Live[len(h.in.Live)-1] = h.in.Events[len(h.in.Events)-1]
	// The stale owner's /run answer is recorded at epoch 3 with its old
	// attempt number: rp-B is overwritten.
	h.event("a", client.EventQueued, workflow.StateQueued, 3)
	h.in.Events[len(h.in.Events)-1].RunpodID, h.in.Events[len(h.in.Events)-1].Attempt = "rp-A", 1
	h.in.Live[len(h.in.Live)-1] = h.in.Events[len(h.in.Events)-1]
	h.event("a", client.EventCompleted, workflow.StateCompleted, 3)
	out := mustJSON(map[string]any{"job": "a"})
	h.in.Jobs = append(h.in.Jobs, JobFacts{Spec: JobSpec{ID: "a", Kind: KindFast, Output: out}, Acked: true,
		Record: &streams.Record{JobID: "a", State: "COMPLETED", Epoch: 3, Attempts: 2, RunpodID: "rp-A", Output: out}})
	h.sim("a", "rp-A", workflow.RunpodCompleted)
	h.sim("a", "rp-B", workflow.RunpodCompleted)
	h.in.Replies["rp-A"] = RunReply{Slot: 0, At: h.t0}
	h.in.Replies["rp-B"] = RunReply{Slot: 1, At: h.t0}
	r := Check(h.in)
	k := kinds(r)
	require.Equal(t, 1, k[VRunpodIDChanged], "violations: %v", r.Violations)
	require.Equal(t, 1, k[VExtraUnexplained], "rp-B, recorded by its owner, then overwritten")

	// A new attempt may record a new id (an uncertain /run resubmitted).
	h.in.Events[2].Attempt = 3
	require.Zero(t, kinds(Check(h.in))[VRunpodIDChanged])
}

// A Runpod job deleted by its TTL (the /run policy the worker sets to the
// deadline plus a minute) no longer runs: a job whose /cancel lost the race
// to the TTL ends with a 404 and is not left running, but one finalized
// while its Runpod job still ran, and stopped only later by the TTL, is.
func TestCheckRunpodTTLRemoval(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	f := h.facts("a")
	f.Spec.Kind = KindTimeout
	f.Record.State = string(workflow.StateTimedOut)
	f.Record.Output = nil
	h.in.Events[2].Type, h.in.Events[2].State = client.EventTimedOut, workflow.StateTimedOut
	h.in.Live[2] = h.in.Events[2]
	removed := h.t0.Add(time.Minute)
	h.in.Sim[0].Status, h.in.Sim[0].Removed, h.in.Sim[0].RemovedAt = workflow.RunpodInProgress, "ttl", removed

	f.Record.FinishedMs = removed.Add(time.Second).UnixMilli() // the 404 after the TTL
	r := Check(h.in)
	require.True(t, r.OK(), "violations: %v", r.Violations)
	require.Zero(t, r.LeftRunning)

	f.Record.FinishedMs = removed.Add(-time.Second).UnixMilli() // ended while Runpod still ran it
	r = Check(h.in)
	require.Equal(t, 1, kinds(r)[VLeftRunning], "violations: %v", r.Violations)

	// A job Runpod had cancelled before its TTL removed it was not running.
	h.in.Sim[0].Status = workflow.RunpodCancelled
	r = Check(h.in)
	require.True(t, r.OK(), "violations: %v", r.Violations)
	h.in.Sim[0].Status = workflow.RunpodInProgress

	// An extra Runpod job the TTL removed runs no more either (it is still
	// an extra that must be explained).
	f.Record.FinishedMs = removed.Add(time.Second).UnixMilli()
	h.sim("a", "rp-a-2", workflow.RunpodInProgress)
	h.in.Sim[1].Removed, h.in.Sim[1].RemovedAt = "ttl", removed
	h.in.Replies["rp-a-2"] = RunReply{Slot: 2, At: h.t0.Add(30 * time.Second)}
	h.in.Disruptions = []Disruption{{Kind: DisruptKill, Slot: 2, Start: h.t0.Add(30*time.Second + 10*time.Millisecond), End: h.t0.Add(30*time.Second + 10*time.Millisecond)}}
	f.Record.Attempts = 2
	r = Check(h.in)
	require.True(t, r.OK(), "violations: %v", r.Violations)
	require.Equal(t, 1, r.ExtraExplained)
	require.Zero(t, r.LeftRunning+r.LeftRunningExplained)
}

// TestCheckLiveEqualIDsAcrossPartitions: with several partitions each
// events stream numbers its own entries, so two partitions' events can have
// the same id; the live reader and the final read also interleave the
// partitions differently. A clean history passes, and a live reader that
// missed one partition's events is reported. Seen failing before (events
// keyed by id alone): the missed events had the ids of events seen in the
// other partition, so no mismatch was reported (FinalOnly 0, want 3).
func TestCheckLiveEqualIDsAcrossPartitions(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	h.job("b")
	// b's events are in partition 1 with the same ids as a's in partition 0.
	for i := 3; i < 6; i++ {
		h.in.Events[i].ID, h.in.Events[i].Partition = h.in.Events[i-3].ID, 1
	}
	// The live reader read partition 1 first.
	h.in.Live = append(append([]client.Event(nil), h.in.Events[3:]...), h.in.Events[:3]...)
	r := Check(h.in)
	require.Zero(t, r.LiveReaderMismatch, "violations: %v", r.Violations)
	require.True(t, r.OK(), "violations: %v", r.Violations)
	require.Equal(t, 6, r.LiveEvents)
}

func TestCheckLiveGapInOnePartition(t *testing.T) {
	t.Parallel()
	h := newHistory()
	h.job("a")
	h.job("b")
	for i := 3; i < 6; i++ {
		h.in.Events[i].ID, h.in.Events[i].Partition = h.in.Events[i-3].ID, 1
	}
	h.in.Live = append([]client.Event(nil), h.in.Events[3:]...) // partition 0 never read live
	r := Check(h.in)
	require.Equal(t, 3, r.FinalOnly, "violations: %v", r.Violations)
	require.False(t, r.OK())
}
