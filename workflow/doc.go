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
package workflow
