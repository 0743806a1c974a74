// Package worker runs Runpod jobs from a namespace's submissions stream:
// it fetches and admits submissions, executes each job's workflow (package
// workflow) against Runpod (a workflow.Runpod, built by cmd/worker from
// package activities), checkpoints every step in Redis (package streams),
// keeps its leases alive, takes over jobs of crashed or departing workers,
// and writes each job's single terminal outcome.
//
//	w, err := worker.New(rdb, worker.Config{Runpod: runpodClient})
//	...
//	err = w.Run(ctx) // blocks until ctx is done, then shuts down gracefully
//
// # Components
//
// One Worker runs a fixed set of goroutines, each owned and awaited by Run:
//
//   - fetcher: XREADGROUP ">" for at most the free capacity (MaxInFlight
//     minus owned jobs, and SubmitAhead minus owned jobs not yet sent to
//     /run, so the backlog waits in the stream), never more, because an
//     entry's idle clock starts at delivery; the batch is decoded (streams.NewAdmitRequest) and admitted
//     in one streams.Admit call, which bumps each job's epoch and names this
//     worker the owner; admitted jobs go to the scheduler.
//   - scheduler: owned jobs are small structs in a min-heap ordered by the
//     time their next action is due; there is no goroutine per job, so a
//     worker can hold a very large number of jobs waiting on Runpod. A
//     dispatcher pops due jobs and hands them to a pool of Concurrency
//     executors. A job handed out is marked running and is not in the heap,
//     so no two executors ever run the same job.
//   - executors: each runs one action of one job at a time. It asks
//     workflow.Next what to do; for a submit it checkpoints step SUBMITTING
//     (attempts+1) before calling /run, and checkpoints the Runpod id, step
//     POLL and state QUEUED (event "queued") right after, before anything
//     else. If that write is refused (fenced: another worker took the job),
//     it cancels the Runpod job it just created, so no GPU time is spent on
//     a job nobody records. A write fenced only by this worker's own
//     re-admit (its lease lapsed, e.g. during a Redis blip, and its claimer
//     took the job back with a newer epoch) is not a takeover: it is
//     written again with the new epoch (at most twice), here and in the
//     finalizer, so the job is neither canceled, sent twice nor dropped. For a poll it calls /status, feeds the result to
//     workflow.Apply, and checkpoints a state or progress change (event
//     "progress"). The job is then put back in the heap at its next due time.
//   - finalizer: decided outcomes are written in batches (a few ms, up to
//     256) with one streams.Finalize call; a refused outcome (fenced, or
//     already terminal) is dropped quietly, a Redis error retries later.
//   - heartbeater: every HeartbeatInterval it writes its liveness key and
//     refreshes all owned leases (streams.Beat, batches of 500; the records
//     are read only when the key was not as the last beat left it). Lost
//     leases are dropped at once and their running action is canceled.
//   - claimer: at start, every ClaimInterval, and at once when a peer
//     announces a handoff, it reclaims entries idle past MinIdle of
//     consumers without a liveness key, and its own entries it no longer
//     holds (streams.ClaimFrom pages), while capacity remains, and admits them: their
//     workflow resumes at the recorded step. RecoverNow (also named
//     RecoverAllPending, the seed's recoverAllPending) runs one pass now.
//   - control subscriber: "cancel <id>" wakes an owned job at once; the step
//     re-reads the record, because the cancel flag there is the truth and
//     messages are only hints. Every heartbeat also reads the partition's
//     cancel log (one read, whatever the number of jobs), so a missed
//     message (pub/sub drops messages while it reconnects) delays a cancel
//     by a beat at most; polls re-read the record every 10 minutes as a
//     fallback (older clients log no cancel).
//   - janitor: at start and every few minutes, trims events older than
//     EventRetention.
//
// # Deadlines and cancellation
//
// A job's deadline is the record's deadline_ms (set at admit from the
// submission's timeout_ms or JobTimeout). When it passes, the workflow
// cancels the job on Runpod and ends it TIMED_OUT. A cancel before the job
// reached Runpod ends it CANCELED without sending it: the SUBMITTING
// checkpoint before every /run is refused (streams.ErrCancelRequested) when
// the record's cancel flag is set, so even a missed hint cannot let a
// canceled job be sent; after, /cancel is called and then /status is read
// (never /cancel's answer, which has no output): the job ends CANCELED (or
// TIMED_OUT) only when Runpod really cancelled it, else as Runpod finished
// it, with its output or error.
//
// # Failures
//
// Redis errors in loops are logged and backed off; no job is lost, because
// a submission stays pending in the consumer group until its outcome is
// written, and whoever holds it (this worker after a retry, or a peer after
// MinIdle) resumes it from its last checkpoint. A Runpod id that could not be
// recorded is kept in memory and written before the job's next action.
// Runpod calls abandoned by a lost lease or a shutdown are never fed to the
// workflow: their outcome is unknown, and the record (SUBMITTING or POLL)
// says where the next owner resumes. A /run whose outcome is unknown (an
// uncertain answer, or a takeover at SUBMITTING without a Runpod id) is
// recorded once per attempt (event submit_uncertain, Stats.SubmitUncertain,
// Hooks.OnSubmitUncertain) before SubmitUncertainPolicy applies: it may have
// created a Runpod job nobody tracks.
//
// # Shutdown
//
// When Run's ctx is done: the fetcher, claimer, control subscriber and
// janitor stop (entries a read or claim already delivered are still
// admitted, under a bounded ctx the shutdown does not cancel, so they are
// handed off below rather than stranded for MinIdle), and no new action
// starts; in-flight actions get
// ShutdownTimeout to finish, after which their ctx is canceled with the
// cause ErrStopping; outcomes decided meanwhile are written; the
// heartbeater, which kept the leases alive during the drain, stops; then
// every lease still owned is handed off (streams.Handoff marks it long idle
// and publishes "handoff", so a peer's claimer takes it at once rather than
// after MinIdle). The heartbeater stops before the handoff, so no heartbeat
// resets a handed-off entry's idle time. Run returns when every goroutine
// has ended: nil after a clean stop, an error when it stops on a failure
// (no consumer group before ctx ended, outcomes it could not write, leases
// it could not hand off).
//
// # Fault injection
//
// Config.StepHook is called at the points "before_run", "after_run",
// "polling" and "finalize". It exists for crash tests: a subprocess can
// kill itself at an exact point of a job's workflow.
//
// # Logging
//
// Logs go to Config.Logger (hclog) with component names (fetcher,
// claimer, heartbeater, control, janitor) and the keys job_id, runpod_id,
// epoch and step: one debug line per transition, one info line per outcome.
// No secret is ever logged: errors from activities never carry the API key.
package worker
