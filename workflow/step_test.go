package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	t0  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	pol = Policy{Poll: PollPolicy{Jitter: -1}}.WithDefaults()

	errTransient = &ActivityError{Op: "status", StatusCode: 503, Transient: true, Err: errors.New("unavailable")}
	errThrottled = &ActivityError{Op: "run", StatusCode: 429, Transient: true, RetryAfter: 9 * time.Second, Err: errors.New("slow down")}
	errPermanent = &ActivityError{Op: "run", StatusCode: 400, Err: errors.New("bad input")}
	errUncertain = &ActivityError{Op: "run", Transient: true, Err: fmt.Errorf("read response: %w", ErrSubmitUncertain)}
	errNotFound  = &ActivityError{Op: "status", StatusCode: 404, Err: ErrRunpodJobNotFound}
)

func newJob() Job { return Job{ID: "j1", State: StateSubmitted, Step: StepSubmit} }
func onRunpod() Job {
	return Job{ID: "j1", State: StateQueued, Step: StepPoll, RunpodID: "rp-1", RunpodStatus: RunpodInQueue, Attempts: 1}
}

func TestNext(t *testing.T) {
	t.Parallel()
	failPol := pol
	failPol.SubmitUncertain = SubmitUncertainFail
	later := t0.Add(5 * time.Second)
	decided := &Outcome{State: StateCompleted, Output: json.RawMessage(`1`)}

	tests := []struct {
		name   string
		job    func(j Job) Job
		base   Job
		policy Policy
		want   Action
	}{
		{"FreshSubmit", nil, newJob(), pol, Action{Kind: ActSubmit, At: t0}},
		{"RawSubmissionNoStep", func(j Job) Job { j.Step = ""; return j }, newJob(), pol, Action{Kind: ActSubmit, At: t0}},
		{"SubmitRetryWaits", func(j Job) Job { j.NextAt = later; return j }, newJob(), pol, Action{Kind: ActSubmit, At: later}},
		{"TakeoverSubmittingRecordsTheUncertainRun", func(j Job) Job { j.Step = StepSubmitting; j.Attempts = 2; j.UncertainAttempt = 1; return j }, newJob(), failPol,
			Action{Kind: ActRecordUncertain, At: t0, Attempt: 2}},
		{"UncertainRunRecordedBeforeCancel", func(j Job) Job {
			j.Step = StepSubmitting
			j.Attempts = 1
			j.CancelRequested = true
			j.Deadline = t0
			return j
		}, newJob(), pol, Action{Kind: ActRecordUncertain, At: t0, Attempt: 1}},
		{"TakeoverSubmittingResubmit", func(j Job) Job { j.Step = StepSubmitting; j.Attempts = 1; j.UncertainAttempt = 1; return j }, newJob(), pol, Action{Kind: ActSubmit, At: t0}},
		{"TakeoverSubmittingFail", func(j Job) Job { j.Step = StepSubmitting; j.Attempts = 1; j.UncertainAttempt = 1; return j }, newJob(), failPol,
			Action{Kind: ActFinalize, At: t0, Outcome: Outcome{State: StateFailed, Error: "submit outcome uncertain: a previous /run (attempt 1) may have created a Runpod job whose id was not recorded"}}},
		{"PollNow", nil, onRunpod(), pol, Action{Kind: ActPoll, At: t0}},
		{"PollAfterBackoff", func(j Job) Job { j.NextAt = later; return j }, onRunpod(), pol, Action{Kind: ActPoll, At: later}},
		{"PollClampedToDeadline", func(j Job) Job { j.NextAt = later; j.Deadline = t0.Add(time.Second); return j }, onRunpod(), pol, Action{Kind: ActPoll, At: t0.Add(time.Second)}},
		{"CancelBeforeRunpod", func(j Job) Job { j.CancelRequested = true; return j }, newJob(), pol,
			Action{Kind: ActFinalize, At: t0, Outcome: Outcome{State: StateCanceled, Error: ReasonCanceledUnsent}}},
		{"CancelTakeoverSubmitting", func(j Job) Job {
			j.Step = StepSubmitting
			j.Attempts, j.UncertainAttempt = 1, 1
			j.CancelRequested = true
			return j
		}, newJob(), pol,
			Action{Kind: ActFinalize, At: t0, Outcome: Outcome{State: StateCanceled, Error: ReasonCanceledUncertain}}},
		{"DeadlineTakeoverSubmitting", func(j Job) Job {
			j.Step = StepSubmitting
			j.Attempts, j.UncertainAttempt = 1, 1
			j.Deadline = t0
			return j
		}, newJob(), pol,
			Action{Kind: ActFinalize, At: t0, Outcome: Outcome{State: StateTimedOut, Error: ReasonDeadlineUncertain}}},
		{"CancelOnRunpodIsPrompt", func(j Job) Job { j.CancelRequested = true; j.NextAt = later; return j }, onRunpod(), pol,
			Action{Kind: ActCancel, At: t0, Reason: StateCanceled}},
		{"DeadlineBeforeRunpod", func(j Job) Job { j.Deadline = t0; return j }, newJob(), pol,
			Action{Kind: ActFinalize, At: t0, Outcome: Outcome{State: StateTimedOut, Error: ReasonDeadlineUnsent}}},
		{"DeadlineOnRunpod", func(j Job) Job { j.Deadline = t0.Add(-time.Second); j.NextAt = later; return j }, onRunpod(), pol,
			Action{Kind: ActCancel, At: t0, Reason: StateTimedOut}},
		{"DeadlineBeatsCancel", func(j Job) Job { j.Deadline = t0; j.CancelRequested = true; return j }, onRunpod(), pol,
			Action{Kind: ActCancel, At: t0, Reason: StateTimedOut}},
		{"CancelRetryKeepsReason", func(j Job) Job { j.Stopping = StateCanceled; j.NextAt = later; j.Deadline = t0; return j }, onRunpod(), pol,
			Action{Kind: ActCancel, At: later, Reason: StateCanceled}},
		{"CancelSentIsConfirmed", func(j Job) Job { j.Stopping = StateTimedOut; j.CancelSent = true; j.Deadline = t0; return j }, onRunpod(), pol,
			Action{Kind: ActPoll, At: t0, Reason: StateTimedOut}},
		{"DecidedFinalizes", func(j Job) Job { j.Outcome = decided; j.CancelRequested = true; return j }, onRunpod(), pol,
			Action{Kind: ActFinalize, At: t0, Outcome: *decided}},
		{"TerminalRecordIsNone", func(j Job) Job { j.State = StateCompleted; return j }, onRunpod(), pol, Action{Kind: ActNone, At: t0}},
		{"StepDoneIsNone", func(j Job) Job { j.Step = StepDone; return j }, onRunpod(), pol, Action{Kind: ActNone, At: t0}},
		{"UnknownStep", func(j Job) Job { j.Step = "WEIRD"; return j }, newJob(), pol,
			Action{Kind: ActFinalize, At: t0, Outcome: Outcome{State: StateFailed, Error: `corrupt job record: unknown step "WEIRD"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			j := tt.base
			if tt.job != nil {
				j = tt.job(j)
			}
			before := j
			require.Equal(t, tt.want, Next(j, t0, tt.policy))
			require.Equal(t, before, j, "Next must not mutate its argument")
		})
	}
}

func TestBeginSubmit(t *testing.T) {
	t.Parallel()
	j := BeginSubmit(Job{Step: StepSubmit, Attempts: 2})
	require.Equal(t, StepSubmitting, j.Step)
	require.Equal(t, 3, j.Attempts)
}

func TestApplySubmit(t *testing.T) {
	t.Parallel()
	failPol := pol
	failPol.SubmitUncertain = SubmitUncertainFail
	submitting := BeginSubmit(newJob())
	act := Action{Kind: ActSubmit, At: t0}

	t.Run("Accepted", func(t *testing.T) {
		t.Parallel()
		j, eff := Apply(submitting, act, Result{Job: RunpodJob{ID: "rp-9", Status: RunpodInQueue}}, t0, pol, nil)
		require.Equal(t, Effect{Checkpoint: true, Event: EventQueued}, eff)
		require.Equal(t, "rp-9", j.RunpodID)
		require.Equal(t, StepPoll, j.Step)
		require.Equal(t, StateQueued, j.State)
		require.Equal(t, RunpodInQueue, j.RunpodStatus)
		require.Equal(t, t0.Add(2*time.Second), j.NextAt)
		require.Nil(t, j.Outcome)
		require.Equal(t, ActPoll, Next(j, t0, pol).Kind)
	})
	t.Run("AcceptedWithoutStatus", func(t *testing.T) {
		t.Parallel()
		j, _ := Apply(submitting, act, Result{Job: RunpodJob{ID: "rp-9"}}, t0, pol, nil)
		require.Equal(t, RunpodInQueue, j.RunpodStatus)
	})
	t.Run("NoID", func(t *testing.T) {
		t.Parallel()
		j, eff := Apply(submitting, act, Result{Job: RunpodJob{Status: RunpodInQueue}}, t0, pol, nil)
		require.Equal(t, Effect{}, eff)
		require.Equal(t, &Outcome{State: StateFailed, Error: ReasonRunpodNoID}, j.Outcome)
	})
	t.Run("TransientRetriesWithBackoff", func(t *testing.T) {
		t.Parallel()
		j, eff := Apply(submitting, act, Result{Err: errTransient}, t0, pol, nil)
		require.Equal(t, Effect{}, eff)
		require.Nil(t, j.Outcome)
		require.Equal(t, StepSubmit, j.Step)
		require.Equal(t, 1, j.Retries)
		require.Equal(t, t0.Add(500*time.Millisecond), j.NextAt)
		j2, _ := Apply(BeginSubmit(j), act, Result{Err: errTransient}, t0, pol, nil)
		require.Equal(t, t0.Add(time.Second), j2.NextAt)
		require.Equal(t, Action{Kind: ActSubmit, At: t0.Add(time.Second)}, Next(j2, t0, pol))
	})
	t.Run("CircuitOpenRetries", func(t *testing.T) {
		t.Parallel()
		j, _ := Apply(submitting, act, Result{Err: fmt.Errorf("run: %w", ErrCircuitOpen)}, t0, pol, nil)
		require.Nil(t, j.Outcome)
		require.Equal(t, 1, j.Retries)
	})
	t.Run("RetryAfterHonoured", func(t *testing.T) {
		t.Parallel()
		j, _ := Apply(submitting, act, Result{Err: errThrottled}, t0, pol, fixedRand(0.1))
		require.Equal(t, t0.Add(9*time.Second), j.NextAt)
	})
	t.Run("PermanentFails", func(t *testing.T) {
		t.Parallel()
		j, _ := Apply(submitting, act, Result{Err: errPermanent}, t0, pol, nil)
		require.Equal(t, &Outcome{State: StateFailed, Error: errPermanent.Error()}, j.Outcome)
		require.Equal(t, ActFinalize, Next(j, t0, pol).Kind)
	})
	// An uncertain /run is recorded first (the Runpod job it may have
	// created runs untracked), then the policy applies: resubmit after a
	// backoff, or FAILED.
	t.Run("UncertainResubmits", func(t *testing.T) {
		t.Parallel()
		j, eff := Apply(submitting, act, Result{Err: errUncertain}, t0, pol, nil)
		require.Equal(t, Effect{}, eff)
		require.Nil(t, j.Outcome)
		require.Equal(t, StepSubmitting, j.Step)
		a := Next(j, t0, pol)
		require.Equal(t, Action{Kind: ActRecordUncertain, At: t0, Attempt: 1}, a)
		j = RecordedUncertain(j, a.Attempt)
		require.Equal(t, Action{Kind: ActSubmit, At: t0.Add(500 * time.Millisecond)}, Next(j, t0, pol))
		j = BeginSubmit(j)
		j, _ = Apply(j, act, Result{Err: errUncertain}, t0, pol, nil)
		require.Equal(t, Action{Kind: ActRecordUncertain, At: t0, Attempt: 2}, Next(j, t0, pol), "each uncertain /run")
	})
	t.Run("UncertainFails", func(t *testing.T) {
		t.Parallel()
		j, _ := Apply(submitting, act, Result{Err: errUncertain}, t0, failPol, nil)
		require.Nil(t, j.Outcome)
		a := Next(j, t0, failPol)
		require.Equal(t, ActRecordUncertain, a.Kind)
		a = Next(RecordedUncertain(j, a.Attempt), t0, failPol)
		require.Equal(t, ActFinalize, a.Kind)
		require.Equal(t, StateFailed, a.Outcome.State)
		require.Contains(t, a.Outcome.Error, ReasonSubmitUncertain)
	})
	t.Run("StaleResultIgnored", func(t *testing.T) {
		t.Parallel()
		j, eff := Apply(onRunpod(), act, Result{Job: RunpodJob{ID: "rp-other"}}, t0, pol, nil)
		require.Equal(t, onRunpod(), j)
		require.Equal(t, Effect{}, eff)
	})
}

func TestApplyPoll(t *testing.T) {
	t.Parallel()
	act := Action{Kind: ActPoll, At: t0}
	tests := []struct {
		name       string
		base       Job
		res        Result
		wantState  State
		wantStatus RunpodStatus
		wantEff    Effect
		wantNext   time.Duration
		wantPolls  int
		wantOut    *Outcome
	}{
		{"StillQueued", onRunpod(), Result{Job: RunpodJob{ID: "rp-1", Status: RunpodInQueue}},
			StateQueued, RunpodInQueue, Effect{}, 3 * time.Second, 1, nil},
		{"Started", onRunpod(), Result{Job: RunpodJob{ID: "rp-1", Status: RunpodInProgress, DelayTime: 40}},
			StateInProgress, RunpodInProgress, Effect{Checkpoint: true, Event: EventProgress}, 2 * time.Second, 0, nil},
		{"ProgressOutput", func() Job { j := onRunpod(); j.State, j.RunpodStatus = StateInProgress, RunpodInProgress; return j }(),
			Result{Job: RunpodJob{ID: "rp-1", Status: RunpodInProgress, Output: json.RawMessage(`{"pct":50}`)}},
			StateInProgress, RunpodInProgress, Effect{Checkpoint: true, Event: EventProgress, Output: json.RawMessage(`{"pct":50}`)}, 2 * time.Second, 0, nil},
		{"SameProgressOutputIsQuiet", func() Job {
			j := onRunpod()
			j.State, j.RunpodStatus, j.OutputSum, j.Polls = StateInProgress, RunpodInProgress, SumOutput([]byte(`{"pct":50}`)), 1
			return j
		}(),
			Result{Job: RunpodJob{ID: "rp-1", Status: RunpodInProgress, Output: json.RawMessage(`{"pct":50}`)}},
			StateInProgress, RunpodInProgress, Effect{}, 4500 * time.Millisecond, 2, nil},
		{"Requeued", func() Job { j := onRunpod(); j.State, j.RunpodStatus = StateInProgress, RunpodInProgress; return j }(),
			Result{Job: RunpodJob{ID: "rp-1", Status: RunpodInQueue}},
			StateQueued, RunpodInQueue, Effect{Checkpoint: true, Event: EventProgress}, 2 * time.Second, 0, nil},
		{"UnknownStatusKeepsState", onRunpod(), Result{Job: RunpodJob{ID: "rp-1", Status: "THROTTLED"}},
			StateQueued, "THROTTLED", Effect{Checkpoint: true, Event: EventProgress}, 2 * time.Second, 0, nil},
		{"Completed", onRunpod(), Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCompleted, Output: json.RawMessage(`"ok"`)}},
			StateQueued, RunpodInQueue, Effect{}, 0, 0, &Outcome{State: StateCompleted, Output: json.RawMessage(`"ok"`), RunpodStatus: RunpodCompleted}},
		{"Failed", onRunpod(), Result{Job: RunpodJob{ID: "rp-1", Status: RunpodFailed, Error: "boom"}},
			StateQueued, RunpodInQueue, Effect{}, 0, 0, &Outcome{State: StateFailed, Error: "boom", RunpodStatus: RunpodFailed}},
		{"FailedWithoutText", onRunpod(), Result{Job: RunpodJob{ID: "rp-1", Status: RunpodFailed}},
			StateQueued, RunpodInQueue, Effect{}, 0, 0, &Outcome{State: StateFailed, Error: ReasonRunpodFailed, RunpodStatus: RunpodFailed}},
		{"RunpodTimedOut", onRunpod(), Result{Job: RunpodJob{ID: "rp-1", Status: RunpodTimedOut}},
			StateQueued, RunpodInQueue, Effect{}, 0, 0, &Outcome{State: StateTimedOut, Error: ReasonRunpodTimedOut, RunpodStatus: RunpodTimedOut}},
		{"CanceledOnRunpod", onRunpod(), Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}},
			StateQueued, RunpodInQueue, Effect{}, 0, 0, &Outcome{State: StateCanceled, Error: ReasonRunpodCanceled, RunpodStatus: RunpodCancelled}},
		{"NotFound", onRunpod(), Result{Err: errNotFound},
			StateQueued, RunpodInQueue, Effect{}, 0, 0, &Outcome{State: StateFailed, Error: ReasonRunpodJobUnknown, RunpodStatus: RunpodInQueue}},
		{"TransientRetries", onRunpod(), Result{Err: errTransient},
			StateQueued, RunpodInQueue, Effect{}, 500 * time.Millisecond, 0, nil},
		{"PermanentStatusErrorRetries", onRunpod(), Result{Err: &ActivityError{Op: "status", StatusCode: 401, Err: errors.New("unauthorized")}},
			StateQueued, RunpodInQueue, Effect{}, 500 * time.Millisecond, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			j, eff := Apply(tt.base, act, tt.res, t0, pol, nil)
			require.Equal(t, tt.wantEff, eff)
			require.Equal(t, tt.wantOut, j.Outcome)
			require.Equal(t, tt.wantState, j.State)
			require.Equal(t, tt.wantStatus, j.RunpodStatus)
			if tt.wantOut == nil {
				require.Equal(t, t0.Add(tt.wantNext), j.NextAt)
				require.Equal(t, tt.wantPolls, j.Polls)
				require.Equal(t, ActPoll, Next(j, t0, pol).Kind)
			} else {
				require.Equal(t, Action{Kind: ActFinalize, At: t0, Outcome: *tt.wantOut}, Next(j, t0, pol))
			}
		})
	}
}

// TestApplyCancel: the outcome of a cancel comes from the /status read that
// follows /cancel, never from /cancel's answer: a job that finished on Runpod
// just before the cancel (or the deadline) keeps its real outcome and output,
// whatever /cancel answered (CANCELLED, COMPLETED without output, a 400), and
// CANCELED or TIMED_OUT is written only when Runpod really cancelled.
func TestApplyCancel(t *testing.T) {
	t.Parallel()
	cancel := Action{Kind: ActCancel, At: t0, Reason: StateCanceled}
	timeout := Action{Kind: ActCancel, At: t0, Reason: StateTimedOut}
	errRefused := &ActivityError{Op: "cancel", StatusCode: 400, Err: errors.New("job is already COMPLETED")}
	completed := RunpodJob{ID: "rp-1", Status: RunpodCompleted, Output: json.RawMessage(`{"answer":7}`), ExecutionTime: 900}
	tests := []struct {
		name   string
		act    Action
		cancel Result // /cancel's answer
		status Result // the /status read that confirms it
		want   Outcome
	}{
		{"Canceled", cancel, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}},
			Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}},
			Outcome{State: StateCanceled, Error: ReasonCanceled, RunpodStatus: RunpodCancelled}},
		{"TimedOut", timeout, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}},
			Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}},
			Outcome{State: StateTimedOut, Error: ReasonDeadline, RunpodStatus: RunpodCancelled}},
		{"CompletedAnsweredWithoutOutput", cancel, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCompleted}},
			Result{Job: completed},
			Outcome{State: StateCompleted, Output: completed.Output, RunpodStatus: RunpodCompleted, ExecMs: 900}},
		{"CompletedAnswered400", cancel, Result{Err: errRefused}, Result{Job: completed},
			Outcome{State: StateCompleted, Output: completed.Output, RunpodStatus: RunpodCompleted, ExecMs: 900}},
		{"CompletedBeforeDeadline", timeout, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCompleted}},
			Result{Job: completed},
			Outcome{State: StateCompleted, Output: completed.Output, RunpodStatus: RunpodCompleted, ExecMs: 900}},
		{"CancelAnsweredButCompleted", cancel, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}},
			Result{Job: completed},
			Outcome{State: StateCompleted, Output: completed.Output, RunpodStatus: RunpodCompleted, ExecMs: 900}},
		{"FailedBeforeCancel", cancel, Result{Err: errRefused},
			Result{Job: RunpodJob{ID: "rp-1", Status: RunpodFailed, Error: "oom"}},
			Outcome{State: StateFailed, Error: "oom", RunpodStatus: RunpodFailed}},
		{"TransientCancelThenCanceled", timeout, Result{Err: errTransient},
			Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}},
			Outcome{State: StateTimedOut, Error: ReasonDeadline, RunpodStatus: RunpodCancelled}},
		{"GoneAfterCancel", cancel, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}}, Result{Err: errNotFound},
			Outcome{State: StateCanceled, Error: ReasonCanceled, RunpodStatus: RunpodInQueue}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			j, eff := Apply(onRunpod(), tt.act, tt.cancel, t0, pol, nil)
			require.Equal(t, Effect{}, eff)
			require.Nil(t, j.Outcome, "decided from /cancel's answer")
			// Even after a cancel was requested too, the confirmation keeps
			// the first reason, and it is due at once.
			j.CancelRequested = true
			a := Next(j, t0, pol)
			require.Equal(t, Action{Kind: ActPoll, At: t0, Reason: tt.act.Reason}, a)
			j, eff = Apply(j, a, tt.status, t0, pol, nil)
			require.Equal(t, Effect{}, eff)
			require.NotNil(t, j.Outcome)
			require.Equal(t, tt.want, *j.Outcome)
		})
	}

	t.Run("GoneOnRunpod", func(t *testing.T) {
		t.Parallel()
		j, _ := Apply(onRunpod(), cancel, Result{Err: errNotFound}, t0, pol, nil)
		require.Equal(t, &Outcome{State: StateCanceled, Error: ReasonCanceled, RunpodStatus: RunpodInQueue}, j.Outcome)
	})

	t.Run("StillRunningCancelsAgain", func(t *testing.T) {
		t.Parallel()
		// /cancel answered CANCELLED but Runpod still runs the job (the
		// stop lost a race, or takes time): cancel again after a backoff,
		// recording the progress, and let the job finish as it really does.
		j, _ := Apply(onRunpod(), cancel, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}}, t0, pol, nil)
		j, eff := Apply(j, Next(j, t0, pol), Result{Job: RunpodJob{ID: "rp-1", Status: RunpodInProgress}}, t0, pol, nil)
		require.Nil(t, j.Outcome)
		require.Equal(t, Effect{Checkpoint: true, Event: EventProgress}, eff)
		require.Equal(t, StateInProgress, j.State)
		require.Equal(t, Action{Kind: ActCancel, At: t0.Add(500 * time.Millisecond), Reason: StateCanceled}, Next(j, t0, pol))
		j, _ = Apply(j, Next(j, t0.Add(time.Second), pol), Result{Job: RunpodJob{ID: "rp-1", Status: RunpodInProgress}}, t0, pol, nil)
		j, _ = Apply(j, Next(j, t0.Add(time.Second), pol), Result{Job: completed}, t0, pol, nil)
		require.Equal(t, &Outcome{State: StateCompleted, Output: completed.Output, RunpodStatus: RunpodCompleted, ExecMs: 900}, j.Outcome)
	})

	t.Run("NeverFinalizedUnconfirmed", func(t *testing.T) {
		t.Parallel()
		// soak 04:16Z, 05:05Z soak-019455: the /status after /cancel failed
		// (breaker open) and the job ended CANCELED while Runpod ran it on.
		for _, status := range []Result{{Err: errTransient}, {Job: RunpodJob{ID: "rp-1", Status: RunpodInProgress}}} {
			j := onRunpod()
			j.CancelRequested = true
			for i := 0; i < 3*pol.MaxCancelAttempts; i++ {
				a := Next(j, t0.Add(time.Hour), pol)
				require.Equal(t, ActCancel, a.Kind, "attempt %d", i)
				j, _ = Apply(j, a, Result{Err: errTransient}, t0, pol, nil)
				a = Next(j, t0.Add(time.Hour), pol)
				require.Equal(t, ActPoll, a.Kind, "attempt %d", i)
				j, _ = Apply(j, a, status, t0, pol, nil)
				require.Nil(t, j.Outcome, "finalized on an unconfirmed cancel (attempt %d)", i)
			}
			// What Runpod finished as wins, with its output.
			a := Next(j, t0.Add(time.Hour), pol)
			j, _ = Apply(j, a, Result{Err: errTransient}, t0, pol, nil)
			j, _ = Apply(j, Next(j, t0.Add(time.Hour), pol), Result{Job: completed}, t0, pol, nil)
			require.Equal(t, &Outcome{State: StateCompleted, Output: completed.Output, RunpodStatus: RunpodCompleted, ExecMs: 900}, j.Outcome)
		}
	})

	t.Run("CancelledAfterDeadlineCancelIsTimedOut", func(t *testing.T) {
		t.Parallel()
		// soak 04:12Z: a takeover reads CANCELLED from the previous owner's
		// deadline /cancel; the cancel flag is not set.
		j := onRunpod()
		j.Deadline = t0
		j, _ = Apply(j, Action{Kind: ActPoll}, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}}, t0, pol, nil)
		require.Equal(t, &Outcome{State: StateTimedOut, Error: ReasonDeadline, RunpodStatus: RunpodCancelled}, j.Outcome)
		j = onRunpod()
		j.Deadline, j.CancelRequested = t0, true
		j, _ = Apply(j, Action{Kind: ActPoll}, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCancelled}}, t0, pol, nil)
		require.Equal(t, &Outcome{State: StateCanceled, Error: ReasonCanceled, RunpodStatus: RunpodCancelled}, j.Outcome)
	})
}

func TestApplyAfterOutcomeChangesNothing(t *testing.T) {
	t.Parallel()
	j := onRunpod()
	j.Outcome = &Outcome{State: StateFailed, Error: "x"}
	for _, k := range []ActionKind{ActSubmit, ActPoll, ActCancel} {
		got, eff := Apply(j, Action{Kind: k}, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodCompleted}}, t0, pol, nil)
		require.Equal(t, j, got, k.String())
		require.Equal(t, Effect{}, eff)
	}
}

func TestActionKindString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "poll", ActPoll.String())
	require.Equal(t, "action(42)", ActionKind(42).String())
}

func TestDecideFixesTheOutcome(t *testing.T) {
	t.Parallel()
	j := newJob()
	j.CancelRequested = true
	a := Next(j, t0, pol)
	require.Equal(t, ActFinalize, a.Kind)
	j = Decide(j, a)
	require.Equal(t, &a.Outcome, j.Outcome)
	// A deadline passing while the write is retried does not change it.
	j.Deadline = t0
	require.Equal(t, a, Next(j, t0.Add(time.Hour), pol).withAt(t0))
	// Deciding again keeps the first decision; a non-finalize is ignored.
	require.Equal(t, j, Decide(j, Action{Kind: ActFinalize, Outcome: Outcome{State: StateFailed}}))
	require.Equal(t, newJob(), Decide(newJob(), Action{Kind: ActPoll}))
}

func (a Action) withAt(at time.Time) Action { a.At = at; return a }

// TestApplyWorkerFault: Runpod refusing the worker's key or endpoint decides
// no outcome for any action: the job is kept and retried later, a refused
// /run steps back to SUBMIT (nothing was created), and a refused /cancel
// does not use up the cancel attempts.
func TestApplyWorkerFault(t *testing.T) {
	t.Parallel()
	errFault := &ActivityError{Op: "run", StatusCode: 401, Err: fmt.Errorf("key: %w", ErrWorkerFault)}
	failPol := pol
	failPol.SubmitUncertain = SubmitUncertainFail

	j, eff := Apply(BeginSubmit(newJob()), Action{Kind: ActSubmit, At: t0}, Result{Err: errFault}, t0, failPol, nil)
	require.Nil(t, j.Outcome)
	require.Equal(t, StepSubmit, j.Step)
	require.Equal(t, Effect{}, eff)
	require.True(t, j.NextAt.After(t0))
	require.Equal(t, ActSubmit, Next(j, j.NextAt, failPol).Kind, "sent again later, not failed as uncertain")

	j, _ = Apply(onRunpod(), Action{Kind: ActPoll, At: t0}, Result{Err: errFault}, t0, pol, nil)
	require.Nil(t, j.Outcome)
	require.Equal(t, StepPoll, j.Step)

	c := onRunpod()
	c.CancelRequested = true
	j, _ = Apply(c, Action{Kind: ActCancel, Reason: StateCanceled, At: t0}, Result{Err: errFault}, t0, pol, nil)
	require.Nil(t, j.Outcome)
	require.Zero(t, j.CancelAttempts)
	require.True(t, IsWorkerFault(errFault))
	require.False(t, IsWorkerFault(errPermanent))
}
