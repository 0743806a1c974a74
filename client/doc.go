// Package client is the producer side of runpod-orchestrator: it submits
// jobs, reads their records, waits for their outcomes, cancels them, follows
// the events stream and audits it.
//
// # Submitting and waiting
//
//	c, err := client.New(rdb, client.Config{Namespace: "runpod"})
//	...
//	defer c.Close()
//	res, err := c.Submit(ctx, client.SubmitOptions{ClientJobID: id, Input: map[string]any{"prompt": "a cat"}})
//	out, err := c.AwaitResult(ctx, res.ClientJobID)
//
// Submit is idempotent: the same ClientJobID never creates a second job, and
// with Config.Dedupe the same InputHash answers with the job that already
// holds it (SubmitResult.Deduplicated). A worker pool (package worker) runs
// the jobs; this package never talks to Runpod.
//
// # One reader per process
//
// AwaitResult and Submit with WaitAccepted are served by a single shared
// XREAD loop per Client, started when the first waiter arrives and stopped
// when the last one leaves, so ten thousand concurrent waiters cost one
// blocking read, not ten thousand. A waiter is registered before the job
// record is read, and a reader that starts from scratch begins after the last
// event id captured before that read, so an outcome written between the read
// and the wait is never missed: either the record already shows it, or the
// reader delivers its event.
//
// # Aliases
//
// A raw submission (a plain XADD) whose input hash belongs to another job is
// recorded by the worker as an alias of that job. Get returns the alias
// record as stored, with Job.AliasOf naming the target; AwaitResult follows
// the alias and returns the target's outcome.
//
// # Events and audit
//
// Events (an iterator) and Subscribe (a callback) follow the events stream
// from now, from the beginning or from a given entry id, optionally for one
// job. The position is fixed when the subscription is created
// (NewSubscription, or the call to Events), so a subscription made before a
// Submit always sees that job's events; Position gives the current end of
// the stream to resume from later. A subscription survives Redis restarts
// and dropped connections by resuming after the last event it delivered.
// Handlers are typed callbacks (Submitted, Queued, Progress, Completed,
// Failed), the seed's on('completed') and on('failed'). Audit replays the stream and checks every job's history against the
// guarantees of docs/architecture.md; the checks themselves are the pure
// Auditor type, usable over any sequence of events.
//
// The caller owns the Redis client given to New: Close stops this package's
// goroutines and never closes it.
package client
