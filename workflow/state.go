package workflow

// State is a job's lifecycle state as stored in the job record and carried by
// every event. The set is closed: a job moves SUBMITTED → QUEUED →
// IN_PROGRESS and ends in exactly one terminal state.
type State string

// Job states, from the seed API.
const (
	StateSubmitted  State = "SUBMITTED"   // accepted locally, not yet on Runpod
	StateQueued     State = "QUEUED"      // Runpod accepted it (IN_QUEUE there)
	StateInProgress State = "IN_PROGRESS" // running on a Runpod GPU worker
	StateCompleted  State = "COMPLETED"   // terminal: output available
	StateFailed     State = "FAILED"      // terminal: error available
	StateTimedOut   State = "TIMED_OUT"   // terminal: deadline passed (ours or Runpod's)
	StateCanceled   State = "CANCELED"    // terminal: cancelled by a caller
)

// Terminal reports whether s is one of the four final states.
func (s State) Terminal() bool {
	switch s {
	case StateCompleted, StateFailed, StateTimedOut, StateCanceled:
		return true
	}
	return false
}

// Valid reports whether s is one of the seven known states.
func (s State) Valid() bool {
	switch s {
	case StateSubmitted, StateQueued, StateInProgress:
		return true
	}
	return s.Terminal()
}

// rank orders the non-terminal states; a job never moves to a lower rank.
func (s State) rank() int {
	switch s {
	case StateSubmitted:
		return 0
	case StateQueued:
		return 1
	case StateInProgress:
		return 2
	}
	return 3
}

// CanTransition reports whether a job may move from one state to another.
// Staying in the same non-terminal state is allowed (progress updates);
// nothing leaves a terminal state. IN_PROGRESS may fall back to QUEUED
// because Runpod re-queues a job whose GPU worker crashed.
func CanTransition(from, to State) bool {
	if !from.Valid() || !to.Valid() || from.Terminal() {
		return false
	}
	if from == StateInProgress && to == StateQueued {
		return true
	}
	return to.rank() >= from.rank()
}

// Step is where a job's workflow stands; it is checkpointed with the state so
// that a worker taking a job over resumes at the same place.
type Step string

// Workflow steps.
const (
	// StepSubmit: nothing has been sent to Runpod yet.
	StepSubmit Step = "SUBMIT"
	// StepSubmitting: the intent to call /run is recorded and the call may be
	// in flight. A worker that finds a job here after a takeover cannot know
	// whether Runpod created a job; SubmitUncertainPolicy decides.
	StepSubmitting Step = "SUBMITTING"
	// StepPoll: the Runpod job id is checkpointed; poll /status until terminal.
	StepPoll Step = "POLL"
	// StepDone: the terminal outcome is written.
	StepDone Step = "DONE"
)

// RunpodStatus is a status string as Runpod reports it. Unknown values are
// kept verbatim and treated as non-terminal.
type RunpodStatus string

// Runpod's job statuses (docs/runpod-api.md §5).
const (
	RunpodInQueue    RunpodStatus = "IN_QUEUE"
	RunpodInProgress RunpodStatus = "IN_PROGRESS"
	RunpodCompleted  RunpodStatus = "COMPLETED"
	RunpodFailed     RunpodStatus = "FAILED"
	RunpodCancelled  RunpodStatus = "CANCELLED"
	RunpodTimedOut   RunpodStatus = "TIMED_OUT"
)

// Terminal reports whether Runpod will never change this status again
// (short of /retry, which we never call).
func (s RunpodStatus) Terminal() bool {
	switch s {
	case RunpodCompleted, RunpodFailed, RunpodCancelled, RunpodTimedOut:
		return true
	}
	return false
}

// State maps a Runpod status to our job state. Unknown statuses map to
// IN_PROGRESS's predecessor rules: they are non-terminal, so the job keeps its
// current state (ok is false).
func (s RunpodStatus) State() (st State, ok bool) {
	switch s {
	case RunpodInQueue:
		return StateQueued, true
	case RunpodInProgress:
		return StateInProgress, true
	case RunpodCompleted:
		return StateCompleted, true
	case RunpodFailed:
		return StateFailed, true
	case RunpodCancelled:
		return StateCanceled, true
	case RunpodTimedOut:
		return StateTimedOut, true
	}
	return "", false
}
