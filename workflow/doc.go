// Package workflow is the pure core of a Runpod job: its states and steps,
// the step function that decides what to do next, the backoff policy, and the
// small Runpod interface the activities implement.
//
// Nothing here does I/O. The worker package executes the decisions made here
// against Redis (package streams) and Runpod (package activities), and
// checkpoints the resulting state, so any worker can resume a job where
// another stopped. This is a fixed step machine whose state is checkpointed,
// not user code replayed from history: there is no deterministic-replay
// machinery and workflow code receives an ordinary context.Context.
//
// # Step function
//
// A Job is a small value built from the job record. The worker drives it
// with two pure functions:
//
//	a := workflow.Next(j, now, policy)            // what to do, and when
//	// ActSubmit: j = BeginSubmit(j); checkpoint SUBMITTING; call Run
//	// ActPoll / ActCancel: call Status / Cancel
//	j, eff = workflow.Apply(j, a, result, now, policy, rnd)
//	// eff.Checkpoint: persist state/step/runpod id with eff.Event
//	// ActFinalize: j = Decide(j, a); write a.Outcome once
//
// Next encodes every decision (cancel before or after /run, deadlines, the
// SubmitUncertainPolicy for a takeover at SUBMITTING); Apply classifies
// activity results (Runpod statuses via RunpodStatus.State, transient errors
// retried with RetryPolicy, ErrRunpodJobNotFound, ErrSubmitUncertain) and
// schedules the next poll with PollPolicy. Jitter comes from a Rand passed
// in, so both functions are deterministic under test. Once an outcome is
// decided it never changes: Next keeps returning it and Apply ignores any
// late result, so one job can never produce two terminal outcomes.
package workflow
