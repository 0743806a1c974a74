package client

import (
	"context"
	"fmt"
	"slices"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// ViolationKind names a broken invariant of a job's history.
type ViolationKind string

// The invariants Audit checks (docs/architecture.md, guarantees).
const (
	// ViolationDuplicateTerminal: a second terminal event for a job
	// (guarantee 1: exactly one terminal outcome).
	ViolationDuplicateTerminal ViolationKind = "duplicate_terminal"
	// ViolationAfterTerminal: a non-terminal event after the job's terminal
	// event (nothing leaves a terminal state).
	ViolationAfterTerminal ViolationKind = "event_after_terminal"
	// ViolationIllegalTransition: consecutive states that
	// workflow.CanTransition refuses (for example IN_PROGRESS → SUBMITTED).
	ViolationIllegalTransition ViolationKind = "illegal_transition"
	// ViolationNotSubmittedFirst: replaying from the start, a job's first
	// event is not "submitted" ("deduplicated" for an alias, or a "failed"
	// event with a dead-letter reason for a raw submission refused as poison).
	ViolationNotSubmittedFirst ViolationKind = "not_submitted_first"
	// ViolationBadState: an event with an unknown state, a terminal event
	// type whose state does not match it, or a state-changing event without
	// a state.
	ViolationBadState ViolationKind = "bad_state"
	// ViolationRetryLive: a retried event (a new run) for a job whose
	// current run has no terminal event yet, a run number that does not
	// follow the previous one, or an event of another run than the current.
	ViolationRetryLive ViolationKind = "retry_of_live_run"
	// ViolationRunpodIDChanged: an event names a Runpod job other than the
	// one the job's history names, without a queued event of a later /run
	// attempt: a stale owner's Runpod job replaced the recorded one (which
	// then runs on untracked).
	ViolationRunpodIDChanged ViolationKind = "runpod_id_changed"
)

// Violation is one broken invariant, at the event that broke it.
type Violation struct {
	JobID   string        `json:"clientJobId"`
	EventID string        `json:"eventId"`
	Kind    ViolationKind `json:"kind"`
	Detail  string        `json:"detail"`
}

// String renders v as one line.
func (v Violation) String() string {
	return fmt.Sprintf("job %s at event %s: %s: %s", v.JobID, v.EventID, v.Kind, v.Detail)
}

// AuditReport summarises a replay of the events stream.
type AuditReport struct {
	// From is where the replay started ("0" = the beginning).
	From string `json:"from"`
	// Events is how many entries were read, Jobs how many jobs they name.
	Events int `json:"events"`
	Jobs   int `json:"jobs"`
	// ByState counts jobs by their latest state (aliases excluded).
	ByState map[workflow.State]int `json:"byState"`
	// Terminal counts jobs with their terminal event.
	Terminal int `json:"terminal"`
	// InFlight lists, sorted, the jobs without a terminal event yet: still
	// running, not a violation.
	InFlight []string `json:"inFlight"`
	// Aliases counts raw submissions recorded as aliases of another job;
	// they never get a terminal event of their own.
	Aliases int `json:"aliases"`
	// PossibleDuplicateGPUJobs counts /run attempts with an unknown outcome
	// (submit_uncertain events, one per job and attempt): each may have
	// created a Runpod job whose id nobody learned, which runs (and bills)
	// untracked; when the job was sent again, a duplicate. Not a violation:
	// the documented /run windows (docs/architecture.md). UncertainJobs
	// lists, sorted, the jobs concerned.
	PossibleDuplicateGPUJobs int      `json:"possibleDuplicateGpuJobs"`
	UncertainJobs            []string `json:"uncertainJobs"`
	// Undecodable counts entries that could not be decoded; Unattributed
	// counts events that name no job (a refused entry without a job id).
	Undecodable  int `json:"undecodable"`
	Unattributed int `json:"unattributed"`
	// Retries counts retried events: each opens a new run of a job, and the
	// checks above (one terminal outcome, nothing after it) hold per run.
	Retries int `json:"retries"`
	// Violations lists the broken invariants in stream order.
	Violations []Violation `json:"violations"`
}

// OK reports whether the replay found no violation.
func (r AuditReport) OK() bool { return len(r.Violations) == 0 }

// Auditor checks job histories event by event, in stream order, keeping a
// few bytes per job rather than the events. It does no I/O: feed it with
// Add, then read Report. The zero value is not usable; use NewAuditor.
type Auditor struct {
	fromStart bool
	report    AuditReport
	jobs      map[string]*history
}

// history is what the Auditor remembers of one job.
type history struct {
	last     workflow.State // latest state seen ("" before any)
	seen     bool
	terminal bool
	alias    bool
	run      int    // the current run (retried events); 0 = the first
	runpodID string // latest Runpod id named
	attempt  int    // /run attempt of the latest queued event
	// revealed are Runpod jobs of earlier attempts revealed by their
	// webhooks (runpod_job_revealed): one of them may win the outcome.
	revealed  map[string]bool
	uncertain [][2]int // (run, /run attempt) pairs recorded uncertain
}

// NewAuditor returns an Auditor for a replay that starts at from. From the
// beginning ("0", "0-0" or ""), every job must start with its submitted
// event; from a later id a job's first event may be mid-history.
func NewAuditor(from string) *Auditor {
	if from == "" {
		from = FromStart
	}
	return &Auditor{
		fromStart: from == FromStart || from == "0-0",
		report:    AuditReport{From: from, ByState: map[workflow.State]int{}},
		jobs:      map[string]*history{},
	}
}

// Add checks ev against the history of its job so far.
func (a *Auditor) Add(ev Event) {
	a.report.Events++
	if ev.Type == "" {
		a.report.Undecodable++
		return
	}
	if ev.JobID == "" {
		a.report.Unattributed++
		return
	}
	h := a.jobs[ev.JobID]
	if h == nil {
		h = &history{}
		a.jobs[ev.JobID] = h
	}
	violate := func(kind ViolationKind, format string, args ...any) {
		a.report.Violations = append(a.report.Violations, Violation{
			JobID: ev.JobID, EventID: ev.ID, Kind: kind, Detail: fmt.Sprintf(format, args...),
		})
	}
	first := !h.seen
	h.seen = true
	if ev.Type == EventDeduplicated {
		h.alias = true
	}
	if ev.Type == EventSubmitUncertain {
		// Attempts restart with each run (a retry): count per run and attempt.
		if k := [2]int{max(1, h.run), ev.Attempt}; !slices.Contains(h.uncertain, k) {
			h.uncertain = append(h.uncertain, k)
			a.report.PossibleDuplicateGPUJobs++
		}
	}

	if first && a.fromStart && !startsHistory(ev) {
		violate(ViolationNotSubmittedFirst, "first event is %q", ev.Type)
	}
	if ev.Type == EventRetried {
		// A new run of the same id: the guarantee holds per run, so the
		// previous run must have ended, and the new one starts afresh.
		switch {
		case !h.terminal && !first:
			violate(ViolationRetryLive, "retried (run %d) while run %d has no outcome (state %s)", ev.Run, max(1, h.run), h.last)
		case ev.Run != 0 && h.run != 0 && ev.Run != h.run+1:
			violate(ViolationRetryLive, "retried as run %d after run %d", ev.Run, h.run)
		}
		h.terminal, h.last, h.run = false, workflow.StateSubmitted, ev.Run
		h.runpodID, h.attempt = "", 0 // a new run submits anew
		if h.run == 0 {
			h.run = 2
		}
		a.report.Retries++
		return
	}
	if want := max(h.run, 1); max(ev.Run, 1) != want {
		violate(ViolationRetryLive, "%s event of run %d while the job is in run %d", ev.Type, max(ev.Run, 1), want)
	}
	if h.terminal {
		if ev.State.Terminal() || ev.Type.Terminal() {
			violate(ViolationDuplicateTerminal, "%s event (%s) after the job ended %s", ev.Type, ev.State, h.last)
		} else {
			violate(ViolationAfterTerminal, "%s event after the job ended %s", ev.Type, h.last)
		}
		return
	}
	if ev.State == "" {
		// Only events that report on an entry rather than change the job
		// may come without a state.
		if ev.Type != EventRejected && ev.Type != EventDeduplicated {
			violate(ViolationBadState, "%s event without a state", ev.Type)
		}
		return
	}
	if !ev.State.Valid() {
		violate(ViolationBadState, "%s event with unknown state %q", ev.Type, ev.State)
		return
	}
	if want, ok := terminalState[ev.Type]; ok && ev.State != want {
		violate(ViolationBadState, "%s event with state %s", ev.Type, ev.State)
	} else if !ok && ev.State.Terminal() {
		violate(ViolationBadState, "%s event with terminal state %s", ev.Type, ev.State)
	}
	switch {
	case ev.Type == EventRunpodJobRevealed && ev.RunpodID != "":
		// A Runpod job of an earlier attempt, never recorded: it does not
		// replace the current one, but its result may win.
		if h.attempt > 0 && ev.Attempt >= h.attempt {
			violate(ViolationRunpodIDChanged, "%s event names Runpod job %s of attempt %d, not earlier than the current attempt %d",
				ev.Type, ev.RunpodID, ev.Attempt, h.attempt)
		}
		if h.revealed == nil {
			h.revealed = map[string]bool{}
		}
		h.revealed[ev.RunpodID] = true
	case ev.RunpodID != "":
		newAttempt := ev.Type == EventQueued && ev.Attempt > h.attempt
		wonReveal := ev.Type.Terminal() && h.revealed[ev.RunpodID]
		if h.runpodID != "" && ev.RunpodID != h.runpodID && !newAttempt && !wonReveal {
			violate(ViolationRunpodIDChanged, "%s event names Runpod job %s (attempt %d) after %s (attempt %d)",
				ev.Type, ev.RunpodID, ev.Attempt, h.runpodID, h.attempt)
		}
		h.runpodID = ev.RunpodID
		if ev.Type == EventQueued && ev.Attempt > h.attempt {
			h.attempt = ev.Attempt
		}
	}
	if h.last != "" && !workflow.CanTransition(h.last, ev.State) {
		violate(ViolationIllegalTransition, "%s → %s (%s event)", h.last, ev.State, ev.Type)
	}
	h.last = ev.State
	if ev.State.Terminal() {
		h.terminal = true
	}
}

// startsHistory reports whether ev may be a job's first event: its
// submitted event, the deduplicated event of an alias, or the failed event
// of a raw submission a worker refused as poison before creating a record
// (it carries the dead-letter reason).
func startsHistory(ev Event) bool {
	switch ev.Type {
	case EventSubmitted, EventDeduplicated:
		return true
	case EventFailed:
		return ev.Reason != ""
	}
	return false
}

// terminalState maps each terminal event type to the state it must carry.
var terminalState = map[EventType]workflow.State{
	EventCompleted: workflow.StateCompleted,
	EventFailed:    workflow.StateFailed,
	EventTimedOut:  workflow.StateTimedOut,
	EventCanceled:  workflow.StateCanceled,
}

// Report returns the summary of the events added so far.
func (a *Auditor) Report() AuditReport {
	r := a.report
	r.Jobs = len(a.jobs)
	r.ByState = make(map[workflow.State]int, len(a.report.ByState))
	r.InFlight = []string{}
	r.UncertainJobs = []string{}
	r.Violations = slices.Clone(a.report.Violations)
	if r.Violations == nil {
		r.Violations = []Violation{}
	}
	for id, h := range a.jobs {
		if len(h.uncertain) > 0 {
			r.UncertainJobs = append(r.UncertainJobs, id)
		}
		switch {
		case h.terminal:
			r.Terminal++
			r.ByState[h.last]++
		case h.alias:
			r.Aliases++
		default:
			if h.last != "" {
				r.ByState[h.last]++
			}
			r.InFlight = append(r.InFlight, id)
		}
	}
	slices.Sort(r.InFlight)
	slices.Sort(r.UncertainJobs)
	return r
}

// AuditEvents checks a history given as a slice, in stream order, as
// replayed from `from` (see NewAuditor).
func AuditEvents(events []Event, from string) AuditReport {
	a := NewAuditor(from)
	for _, ev := range events {
		a.Add(ev)
	}
	return a.Report()
}

// AuditOptions tunes Audit.
type AuditOptions struct {
	// From is where the replay starts: "" or "0" for the beginning, or an
	// entry id (exclusive). The events stream is trimmed by age, so on a
	// trimmed stream jobs older than the oldest retained event seem to
	// start mid-history: start from the oldest retained id to audit them
	// leniently. Defaults to the beginning.
	From string
}

// Audit replays the events stream from opts.From up to its current end,
// rebuilds every job's history and checks the invariants (see the
// Violation kinds). Violations are in the report, not the error: the error
// is for a failed read.
func (c *Client) Audit(ctx context.Context, opts AuditOptions) (AuditReport, error) {
	from := opts.From
	if from == "" {
		from = FromStart
	}
	a := NewAuditor(from)
	for ev, err := range c.Events(ctx, EventsOptions{From: from, StopAtEnd: true}) {
		if err != nil {
			return AuditReport{}, fmt.Errorf("client: audit: %w", err)
		}
		a.Add(ev)
	}
	return a.Report(), nil
}
