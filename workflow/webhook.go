package workflow

import "time"

// DeliveryOutcome is the outcome a webhook delivery of the terminal Runpod
// job rj decides for j (rebuilt from the job's record as it is now), and
// whether the delivery decides one at all. It applies the poll's rules
// (applyPoll): COMPLETED, FAILED and TIMED_OUT are what Runpod finished as;
// CANCELLED is the stop outcome of whoever asked for it, CANCELED when the
// cancel flag is set, TIMED_OUT once the deadline passed (our own deadline
// /cancel). A CANCELLED delivery that nobody we know of asked for decides
// nothing: it may be our own orphan cancel of a Runpod job the record does
// not name, or a deadline /cancel sent by an owner whose clock is ahead of
// the receiver's; the owner's poll reads that job with what it knows.
// A job that has not ended decides nothing either, nor does a streaming
// job COMPLETED with an empty output (a generator without an aggregate):
// its output is its /stream chunks, which Runpod may still hold (the owner
// reads the job only at the slow fallback poll with webhooks on, so often
// none at all yet); the owner drains /stream, then /status decides, as a
// poll that finds the job finished does.
func DeliveryOutcome(j Job, rj RunpodJob, now time.Time) (Outcome, bool) {
	if !rj.Status.Terminal() {
		return Outcome{}, false
	}
	if j.Streaming && !j.StreamOff && !j.StreamDone && rj.Status == RunpodCompleted && emptyOutput(rj.Output) {
		return Outcome{}, false
	}
	if rj.Status != RunpodCancelled {
		return j.terminalFor(rj), true
	}
	switch {
	case j.CancelRequested:
		o := j.stopOutcome(StateCanceled).withTimings(rj)
		o.RunpodStatus = rj.Status
		return o, true
	case j.deadlinePassed(now):
		o := j.stopOutcome(StateTimedOut).withTimings(rj)
		o.RunpodStatus = rj.Status
		return o, true
	}
	return Outcome{}, false
}
