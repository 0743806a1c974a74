package soak

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Violation kinds the checker reports (besides client.ViolationKind values,
// which it passes through from the event audit).
const (
	VLost              = "lost"                // acknowledged submission without a record
	VPending           = "pending"             // record not terminal when the soak ended
	VSubmissionsLeft   = "submissions_pending" // entries left in the consumer group's pending list
	VNoTerminalEvent   = "missing_terminal_event"
	VRecordMismatch    = "record_event_mismatch" // record and terminal event disagree
	VStaleEpoch        = "stale_epoch_write"     // a worker event under an older epoch than one before it
	VUnexpectedOutcome = "unexpected_outcome"
	VOutputMismatch    = "output_mismatch"
	VUnknownRunpodID   = "runpod_id_unknown"  // the recorded id is not one Runpod created for the job
	VRunsOverAttempts  = "runs_over_attempts" // more Runpod jobs than /run attempts on the record
	VExtraUnexplained  = "extra_runpod_job_unexplained"
	VLeftRunning       = "left_running"
	VLiveMismatch      = "live_reader_mismatch"
	VLiveDupTerminal   = "live_duplicate_terminal" // the live reader saw a job end twice
	VUnknownJob        = "unknown_job"             // an event names a job the soak never submitted
	// VRunpodIDChanged: a queued event names a Runpod id other than an
	// earlier one's without a later /run attempt: a stale owner's /run
	// overwrote the id another owner recorded (issue 7 item 1).
	VRunpodIDChanged = "runpod_id_changed_without_attempt"
)

// Reasons an extra Runpod job is explained.
const (
	ReasonReplyLost      = "reply_lost"        // the /run reply never reached a worker (fault after creation, hang)
	ReasonSenderKilled   = "sender_killed"     // the worker it was delivered to was SIGKILLed in the crash window
	ReasonSenderStopped  = "sender_stopped"    // ... was paused past its lease
	ReasonSenderTermed   = "sender_terminated" // ... was stopped by SIGTERM
	ReasonRedisRestarted = "redis_restart"     // redis-server was killed in the crash window
)

// Disruption kinds, as recorded by the chaos loop.
const (
	DisruptKill  = "worker_sigkill"
	DisruptStop  = "worker_sigstop"
	DisruptTerm  = "worker_sigterm"
	DisruptRedis = "redis_kill"
)

var disruptionReason = map[string]string{
	DisruptKill: ReasonSenderKilled, DisruptStop: ReasonSenderStopped,
	DisruptTerm: ReasonSenderTermed, DisruptRedis: ReasonRedisRestarted,
}

// leftRunningExplained are the reasons that make an extra Runpod job still
// running at the end the documented cost of the /run window rather than a
// leak: nobody alive ever learned its id. A paused or gracefully stopped
// worker, or one that outlived a Redis restart, knows the id and must
// cancel its orphan.
var leftRunningExplained = map[string]bool{ReasonReplyLost: true, ReasonSenderKilled: true}

// Violation is one broken promise, with the job and what was seen.
type Violation struct {
	Kind   string `json:"kind"`
	JobID  string `json:"job,omitempty"`
	Detail string `json:"detail"`
}

// JobFacts is what the soak knows of one job from outside the workers: what
// it submitted, whether Redis acknowledged it, whether it cancelled it, and
// the record read from Redis at the end (nil when absent).
type JobFacts struct {
	Spec JobSpec
	// Acked: Submit returned success (the job must then never be lost).
	Acked bool
	// CancelRequested: a Cancel call was recorded while the job was not
	// terminal.
	CancelRequested bool
	Record          *streams.Record
}

// RunReply is a /run answer that reached a worker: a 200 with the Runpod
// id, written to the loopback front of worker slot Slot at At.
type RunReply struct {
	Slot int
	At   time.Time
}

// Disruption is one chaos action against a process, over [Start, End].
// Slot is the worker slot, or -1 for redis-server (every worker).
type Disruption struct {
	Kind       string
	Slot       int
	Start, End time.Time
}

// CheckInput is everything the checker looks at: all of it comes from
// Redis, the simulator's ledger and the soak's own bookkeeping, none from
// the workers.
type CheckInput struct {
	Jobs []JobFacts
	// Events is the final events stream, in order.
	Events []client.Event
	// Live is what the live reader saw during the soak, in order.
	Live []client.Event
	// EndPosition is the events streams' end when Events was read
	// (Client.Position), for waiting on the live reader.
	EndPosition string `json:"-"`
	// Pending is the consumer group's pending count at the end.
	Pending int64
	// Sim is the simulator's ledger: every Runpod job ever created.
	Sim []runpodsim.JobInfo
	// Replies maps Runpod ids to the /run answer that delivered them.
	Replies map[string]RunReply
	// Disruptions are the chaos actions, for attributing extra Runpod jobs.
	Disruptions []Disruption
	// CrashWindow is how long after a /run answer a disruption of its
	// receiver (or of Redis) can still lose the id before it is recorded.
	CrashWindow time.Duration
}

// Report is the checker's verdict.
type Report struct {
	ByState map[string]int `json:"by_state"`
	Lost    int            `json:"lost"`
	// LostRunpodJobs counts the Runpod jobs of lost jobs: GPU work nobody
	// tracks any more (LostRunning of them still running at the end).
	LostRunpodJobs     int            `json:"lost_runpod_jobs"`
	LostRunning        int            `json:"lost_running"`
	Pending            int            `json:"pending"`
	SubmissionsPending int64          `json:"submissions_pending"`
	DuplicateTerminal  int            `json:"duplicate_terminal"`
	IllegalTransitions int            `json:"illegal_transitions"`
	AuditViolations    int            `json:"audit_violations"`
	StaleEpochWrites   int            `json:"stale_epoch_writes"`
	UnexpectedOutcomes int            `json:"unexpected_outcomes"`
	RunpodJobs         int            `json:"runpod_jobs"`
	ExtraRunpodJobs    int            `json:"extra_runpod_jobs"`
	ExtraExplained     int            `json:"extra_explained"`
	ExtraByReason      map[string]int `json:"extra_by_reason"`
	LeftRunning        int            `json:"left_running"`
	// LeftRunningExplained counts extra Runpod jobs still running whose id
	// no live worker ever held (the documented /run window's cost).
	LeftRunningExplained int `json:"left_running_explained"`
	FinalEvents          int `json:"final_events"`
	LiveEvents           int `json:"live_events"`
	// LiveReaderMismatch counts events that differ between the live reader
	// and the final stream (LiveOnly + FinalOnly + Changed).
	LiveReaderMismatch int         `json:"live_reader_mismatch"`
	LiveOnly           int         `json:"live_only"`
	FinalOnly          int         `json:"final_only"`
	LiveChanged        int         `json:"live_changed"`
	LiveDupTerminal    int         `json:"live_duplicate_terminal"`
	Violations         []Violation `json:"-"`
}

// OK reports whether nothing was violated.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// Check holds the final history to every promise (docs/reliability.md,
// "What the soak checks").
func Check(in CheckInput) Report {
	r := Report{ByState: map[string]int{}, ExtraByReason: map[string]int{}, SubmissionsPending: in.Pending}
	add := func(kind, job, format string, args ...any) {
		r.Violations = append(r.Violations, Violation{Kind: kind, JobID: job, Detail: fmt.Sprintf(format, args...)})
	}

	// 1. The event audit: one terminal event per job, legal transitions
	// (workflow.CanTransition), nothing after terminal, submitted first.
	audit := client.AuditEvents(in.Events, client.FromStart)
	r.FinalEvents = audit.Events
	for _, v := range audit.Violations {
		r.AuditViolations++
		switch v.Kind {
		case client.ViolationDuplicateTerminal:
			r.DuplicateTerminal++
		case client.ViolationIllegalTransition:
			r.IllegalTransitions++
		}
		add(string(v.Kind), v.JobID, "event %s: %s", v.EventID, v.Detail)
	}

	byJob := map[string][]client.Event{}
	for _, ev := range in.Events {
		byJob[ev.JobID] = append(byJob[ev.JobID], ev)
	}
	known := map[string]bool{}
	for _, f := range in.Jobs {
		known[f.Spec.ID] = true
	}
	for _, id := range sortedKeys(byJob) {
		if id != "" && !known[id] {
			add(VUnknownJob, id, "%d events for a job the soak never submitted", len(byJob[id]))
		}
	}
	sims := map[string][]runpodsim.JobInfo{}
	for _, j := range in.Sim {
		var tag struct {
			Job string `json:"job"`
		}
		_ = json.Unmarshal(j.Input, &tag)
		sims[tag.Job] = append(sims[tag.Job], j)
		r.RunpodJobs++
	}

	for _, f := range in.Jobs {
		id := f.Spec.ID
		if !f.Acked {
			continue // never acknowledged: the soak promised nothing
		}
		rec := f.Record
		if rec == nil {
			r.Lost++
			r.LostRunpodJobs += len(sims[id])
			for _, j := range sims[id] {
				if j.Status == workflow.RunpodInQueue || j.Status == workflow.RunpodInProgress {
					r.LostRunning++
				}
			}
			add(VLost, id, "acknowledged submission has no record (events: %s; Runpod jobs: %v)", summarize(byJob[id]), simIDs(sims[id]))
			continue
		}
		st := workflow.State(rec.State)
		if !st.Terminal() {
			r.Pending++
			add(VPending, id, "record %s/%s epoch %d owner %q at the end", rec.State, rec.Step, rec.Epoch, rec.Owner)
			continue
		}
		r.ByState[rec.State]++
		evs := byJob[id]
		checkEvents(id, rec, evs, add, &r)
		checkOutcome(f, sims[id], add, &r)
		checkRunpod(in, f, sims[id], add, &r)
	}
	if in.Pending > 0 {
		add(VSubmissionsLeft, "", "%d submissions still pending in the consumer group", in.Pending)
	}
	checkLive(in.Live, in.Events, add, &r)
	return r
}

// checkEvents holds a terminal record to its job's events: exactly one
// terminal event, in the record's state and epoch; worker events never go
// back to an older epoch (a fenced-out owner's write).
func checkEvents(id string, rec *streams.Record, evs []client.Event, add func(string, string, string, ...any), r *Report) {
	var term []client.Event
	var maxEpoch int64
	stale := false
	var lastID string
	var lastAttempt int
	for _, ev := range evs {
		if ev.Type == client.EventQueued && ev.RunpodID != "" {
			if lastID != "" && ev.RunpodID != lastID && ev.Attempt <= lastAttempt {
				add(VRunpodIDChanged, id, "queued event %s records Runpod id %s at attempt %d after %s at attempt %d: %s",
					ev.ID, ev.RunpodID, ev.Attempt, lastID, lastAttempt, summarize(evs))
			}
			lastID, lastAttempt = ev.RunpodID, max(lastAttempt, ev.Attempt)
		}
		if ev.Type.Terminal() {
			term = append(term, ev)
		}
		if ev.Type.Terminal() || ev.Type == client.EventQueued || ev.Type == client.EventProgress {
			if ev.Epoch < maxEpoch && !stale {
				stale = true
				r.StaleEpochWrites++
				add(VStaleEpoch, id, "%s event %s under epoch %d after epoch %d: %s", ev.Type, ev.ID, ev.Epoch, maxEpoch, summarize(evs))
			}
			maxEpoch = max(maxEpoch, ev.Epoch)
		}
	}
	switch {
	case len(term) == 0:
		add(VNoTerminalEvent, id, "record is %s but the stream has no terminal event: %s", rec.State, summarize(evs))
	case len(term) == 1:
		t := term[0]
		if string(t.State) != rec.State || t.Epoch != rec.Epoch {
			add(VRecordMismatch, id, "record %s@%d, terminal event %s@%d", rec.State, rec.Epoch, t.State, t.Epoch)
		}
	}
	// More than one terminal event is reported by the audit.
}

// checkOutcome holds the job to its kind's expected outcome. A job nobody
// cancelled is never CANCELED; a COMPLETED job carries its output; for
// KindCancelRace what Runpod really finished as wins.
func checkOutcome(f JobFacts, sims []runpodsim.JobInfo, add func(string, string, string, ...any), r *Report) {
	rec, id := f.Record, f.Spec.ID
	st := workflow.State(rec.State)
	bad := func(format string, args ...any) {
		r.UnexpectedOutcomes++
		add(VUnexpectedOutcome, id, "%s job: "+format, append([]any{f.Spec.Kind}, args...)...)
	}
	if st == workflow.StateCanceled && !f.CancelRequested {
		bad("CANCELED though nobody cancelled it (error %q)", rec.Error)
		return
	}
	if !slices.Contains(f.Spec.Expected(), st) {
		bad("ended %s (error %q), want %v", st, rec.Error, f.Spec.Expected())
		return
	}
	if f.Spec.Kind == KindCancelRace && rec.RunpodID != "" {
		var rp *runpodsim.JobInfo
		for i := range sims {
			if sims[i].ID == rec.RunpodID {
				rp = &sims[i]
			}
		}
		if rp != nil {
			switch {
			case rp.Status == workflow.RunpodCompleted && st != workflow.StateCompleted:
				bad("ended %s but Runpod finished it COMPLETED (its output is lost)", st)
				return
			case rp.Status == workflow.RunpodCancelled && st != workflow.StateCanceled:
				bad("ended %s but Runpod cancelled it", st)
				return
			}
		}
	}
	if st == workflow.StateCompleted && !jsonEqual(rec.Output, f.Spec.Output) {
		r.UnexpectedOutcomes++
		add(VOutputMismatch, id, "COMPLETED with output %q, want %s", rec.Output, f.Spec.Output)
	}
}

// checkRunpod compares the record with the simulator's ledger: the
// recorded id is one Runpod created for this job; no more Runpod jobs than
// /run attempts; every extra one explained; nothing left running.
func checkRunpod(in CheckInput, f JobFacts, sims []runpodsim.JobInfo, add func(string, string, string, ...any), r *Report) {
	rec, id := f.Record, f.Spec.ID
	found := rec.RunpodID == ""
	for _, j := range sims {
		found = found || j.ID == rec.RunpodID
	}
	if !found {
		add(VUnknownRunpodID, id, "recorded Runpod id %s is not among Runpod's jobs for it %v", rec.RunpodID, simIDs(sims))
	}
	if len(sims) > rec.Attempts {
		add(VRunsOverAttempts, id, "%d Runpod jobs %v for %d /run attempts on the record", len(sims), simIDs(sims), rec.Attempts)
	}
	for _, j := range sims {
		// A job Runpod deleted (its TTL, which the worker sets to the deadline
		// plus a minute) runs no more, whatever status it last had.
		live := j.Status == workflow.RunpodInQueue || j.Status == workflow.RunpodInProgress
		running := live && j.Removed == ""
		if j.ID == rec.RunpodID {
			if live && j.Removed != "" && rec.FinishedMs > 0 && rec.FinishedMs < j.RemovedAt.UnixMilli() {
				// Finalized while Runpod still ran it: only the TTL stopped it.
				r.LeftRunning++
				add(VLeftRunning, id, "job ended %s at %s while its recorded Runpod job %s was still %s until Runpod removed it (%s) at %s",
					rec.State, time.UnixMilli(rec.FinishedMs).UTC().Format(time.RFC3339Nano), j.ID, j.Status, j.Removed, j.RemovedAt.UTC().Format(time.RFC3339Nano))
				continue
			}
			if running {
				r.LeftRunning++
				add(VLeftRunning, id, "job ended %s but its recorded Runpod job %s is still %s", rec.State, j.ID, j.Status)
			}
			continue
		}
		r.ExtraRunpodJobs++
		reason := explain(in, j)
		if reason == "" {
			reply := in.Replies[j.ID]
			add(VExtraUnexplained, id, "extra Runpod job %s (%s, created %s, answered to worker slot %d at %s) with no fault, crash or restart around it; recorded %q, attempts %d",
				j.ID, j.Status, j.CreatedAt.Format(time.RFC3339Nano), reply.Slot, reply.At.Format(time.RFC3339Nano), rec.RunpodID, rec.Attempts)
		} else {
			r.ExtraExplained++
			r.ExtraByReason[reason]++
		}
		if running {
			if leftRunningExplained[reason] {
				r.LeftRunningExplained++
			} else {
				r.LeftRunning++
				add(VLeftRunning, id, "job ended %s but extra Runpod job %s (%s) is still %s; reason %q", rec.State, j.ID, explainDetail(in, j), j.Status, reason)
			}
		}
	}
}

// explain returns why an extra Runpod job exists, or "" if nothing does:
// its /run answer never reached a worker, or the worker it reached (or
// Redis) was disrupted within the crash window after it.
func explain(in CheckInput, j runpodsim.JobInfo) string {
	reply, ok := in.Replies[j.ID]
	if !ok {
		return ReasonReplyLost
	}
	from, to := reply.At.Add(-time.Second), reply.At.Add(in.CrashWindow)
	best := ""
	for _, d := range in.Disruptions {
		if d.Slot != -1 && d.Slot != reply.Slot {
			continue
		}
		if d.End.Before(from) || d.Start.After(to) {
			continue
		}
		reason := disruptionReason[d.Kind]
		if best == "" || leftRunningExplained[reason] {
			best = reason
		}
	}
	return best
}

func explainDetail(in CheckInput, j runpodsim.JobInfo) string {
	reply, ok := in.Replies[j.ID]
	if !ok {
		return "answer never delivered"
	}
	return fmt.Sprintf("answered to worker slot %d at %s", reply.Slot, reply.At.Format(time.RFC3339Nano))
}

// liveKey is what must agree between an event seen live and the same
// entry in the final stream.
type liveKey struct {
	Type  client.EventType
	Job   string
	State workflow.State
	Epoch int64
}

// entryKey names one events-stream entry: ids are per partition.
type entryKey struct {
	Partition int
	ID        string
}

// checkLive compares what the live reader saw with the final stream, entry
// by entry (partition and id: two partitions' entries may share an id, and
// the two reads interleave the partitions differently), and counts jobs
// the live reader saw end twice.
func checkLive(live, final []client.Event, add func(string, string, string, ...any), r *Report) {
	r.LiveEvents = len(live)
	fin := make(map[entryKey]liveKey, len(final))
	for _, ev := range final {
		fin[entryKey{ev.Partition, ev.ID}] = liveKey{ev.Type, ev.JobID, ev.State, ev.Epoch}
	}
	seen := make(map[entryKey]bool, len(live))
	terminals := map[string]int{}
	const detailed = 20 // each mismatch is counted; the first ones are listed
	for _, ev := range live {
		ek := entryKey{ev.Partition, ev.ID}
		if seen[ek] {
			continue
		}
		seen[ek] = true
		if ev.Type.Terminal() {
			terminals[ev.JobID]++
			if terminals[ev.JobID] == 2 {
				r.LiveDupTerminal++
				add(VLiveDupTerminal, ev.JobID, "the live reader saw a second terminal event %s (%s@%d)", ev.ID, ev.State, ev.Epoch)
			}
		}
		k := liveKey{ev.Type, ev.JobID, ev.State, ev.Epoch}
		f, ok := fin[ek]
		switch {
		case !ok:
			r.LiveOnly++
			if r.LiveOnly+r.LiveChanged <= detailed {
				add(VLiveMismatch, ev.JobID, "live reader saw %s %s (%s@%d) that the final stream does not hold", ev.ID, ev.Type, ev.State, ev.Epoch)
			}
		case f != k:
			r.LiveChanged++
			if r.LiveOnly+r.LiveChanged <= detailed {
				add(VLiveMismatch, ev.JobID, "entry %s was %s %s (%s@%d) live, %s %s (%s@%d) in the final stream", ev.ID, ev.JobID, ev.Type, ev.State, ev.Epoch, f.Job, f.Type, f.State, f.Epoch)
			}
		}
	}
	for _, ev := range final {
		if !seen[entryKey{ev.Partition, ev.ID}] {
			r.FinalOnly++
			if r.FinalOnly <= detailed {
				add(VLiveMismatch, ev.JobID, "final stream holds %s %s (%s@%d) that the live reader never saw", ev.ID, ev.Type, ev.State, ev.Epoch)
			}
		}
	}
	r.LiveReaderMismatch = r.LiveOnly + r.FinalOnly + r.LiveChanged
	if extra := r.LiveReaderMismatch - min(r.LiveOnly+r.LiveChanged, detailed) - min(r.FinalOnly, detailed); extra > 0 {
		add(VLiveMismatch, "", "%d more live reader mismatches not listed", extra)
	}
}

func summarize(evs []client.Event) string {
	if len(evs) == 0 {
		return "none"
	}
	var b bytes.Buffer
	for i, ev := range evs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s/%s@%d", ev.Type, ev.State, ev.Epoch)
	}
	return b.String()
}

func simIDs(js []runpodsim.JobInfo) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = j.ID + ":" + string(j.Status)
	}
	return out
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
