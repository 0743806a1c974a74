package worker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Webhook completion: every /run names a URL of this worker's
// WebhookHandler, and Runpod POSTs the job object there when the job ends.
// Runpod signs nothing, so the URL itself carries the proof: the job id,
// its run's submission entry, the /run attempt and a token, HMAC-SHA256 of
// (namespace, job id, entry, attempt) under a key shared by the pool. The
// entry tells runs of a redriven job apart (retry.lua starts attempts at 0
// again under a new entry). A delivery finalizes through the same
// finalize.lua compare-and-set as a poll (the job's current epoch is read
// from its record), so exactly one of them wins and a duplicate delivery is
// refused as terminal. Polling goes on as a slow fallback
// (Webhook.PollInterval): Runpod retries a failed delivery only twice.
//
// The attempt, not the epoch, is signed: a takeover changes the epoch but
// not which Runpod job a URL was given to, and a webhook for a job sent
// before a takeover must still count. The attempt also reveals a Runpod job
// whose id was never learned (an uncertain /run sent again): its webhook
// names an older attempt than the record's.

// Defaults of Webhook.
const (
	WebhookPollIntervalDefault = time.Minute
	webhookKeyMin              = 16
	webhookTokenBytes          = 16               // hex-encoded in the URL: 128 bits
	webhookBodyMax             = 21 << 20         // Runpod's largest output plus room
	webhookFinalizeTries       = 3                // re-reads after a fenced finalize (epoch moved)
	webhookTimeout             = persistTimeout   // bound of one delivery's Redis and Runpod calls
	webhookTokenDomain         = "rpo-webhook-v1" // versioned, so a format change invalidates old URLs
)

// SecretKey is key material that must never be printed: its String,
// GoString and Format show "[REDACTED]".
type SecretKey []byte

func (SecretKey) String() string               { return "[REDACTED]" }
func (SecretKey) GoString() string             { return "[REDACTED]" }
func (SecretKey) Format(f fmt.State, _ rune)   { _, _ = io.WriteString(f, "[REDACTED]") }
func (SecretKey) MarshalText() ([]byte, error) { return []byte("[REDACTED]"), nil }
func (k SecretKey) equalHMAC(a, b []byte) bool { return len(k) > 0 && hmac.Equal(a, b) }
func (k SecretKey) sum(parts ...string) []byte { return hmacParts(k, parts...)[:webhookTokenBytes] }
func hmacParts(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		// Length-prefixed, so no two part lists hash alike.
		_, _ = m.Write([]byte(strconv.Itoa(len(p)) + ":" + p))
	}
	return m.Sum(nil)
}

// Webhook configures webhook completion. The zero value is off.
type Webhook struct {
	// URL is where Runpod reaches this worker's WebhookHandler, e.g.
	// "https://worker-1.example.com:8443/runpod/webhook". Each /run sends
	// it with the query job=<id>&attempt=<n>&token=<hmac> added. Empty:
	// webhooks off.
	URL string
	// Key is the pool-wide HMAC key of the tokens, at least 16 bytes.
	// Every worker of a namespace must use the same key (a delivery may
	// reach a worker other than the one that sent the job). Never logged.
	Key SecretKey
	// PollInterval is the slow fallback poll interval while webhooks are
	// on. Defaults to 60s; at most Poll.Horizon (10m by default), so a
	// lost webhook's result is still seen before Runpod deletes it.
	PollInterval time.Duration
}

func (h Webhook) enabled() bool { return h.URL != "" }

func (h Webhook) withDefaults() Webhook {
	if h.enabled() && h.PollInterval == 0 {
		h.PollInterval = WebhookPollIntervalDefault
	}
	return h
}

func (h Webhook) validate(horizon time.Duration) error {
	if !h.enabled() {
		return nil
	}
	u, err := url.Parse(h.URL)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return errors.New("worker: Webhook.URL: must be an absolute http or https URL")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("worker: Webhook.URL: must have no query or fragment")
	case len(h.Key) < webhookKeyMin:
		return fmt.Errorf("worker: Webhook.Key: must be at least %d bytes", webhookKeyMin)
	case h.PollInterval <= 0:
		return errors.New("worker: Webhook.PollInterval: must be positive")
	case h.PollInterval > horizon:
		return fmt.Errorf("worker: Webhook.PollInterval: %s is more than Poll.Horizon %s", h.PollInterval, horizon)
	}
	return nil
}

// WebhookStats are the counters of webhook deliveries this worker received.
type WebhookStats struct {
	// Received counts deliveries with a valid token.
	Received uint64
	// Refused counts deliveries refused: bad token, method or body.
	Refused uint64
	// Finalized counts jobs whose outcome a delivery wrote.
	Finalized uint64
	// Duplicates counts deliveries for a job already finished (a duplicate,
	// or the poll won).
	Duplicates uint64
	// Revealed counts Runpod jobs revealed by their webhook whose ids
	// were never learned from /run (see streams.RevealRunpodJob).
	Revealed uint64
	// Errors counts deliveries answered 503 because Redis failed (Runpod
	// retries them).
	Errors uint64
}

type webhookCounters struct {
	received, refused, finalized, duplicates, revealed, errors atomic.Uint64
}

// WebhookStats returns a snapshot of the webhook counters.
func (w *Worker) WebhookStats() WebhookStats {
	c := &w.whStats
	return WebhookStats{
		Received: c.received.Load(), Refused: c.refused.Load(), Finalized: c.finalized.Load(),
		Duplicates: c.duplicates.Load(), Revealed: c.revealed.Load(), Errors: c.errors.Load(),
	}
}

// webhookMAC is the token of a URL for (job, entry, attempt).
func (w *Worker) webhookMAC(jobID, entry string, attempt int) []byte {
	return w.cfg.Webhook.Key.sum(webhookTokenDomain, w.cfg.Namespace, jobID, entry, strconv.Itoa(attempt))
}

// webhookURL is the URL sent with /run attempt of job (of the run carried
// by submission entry); "" with webhooks off.
func (w *Worker) webhookURL(jobID, entry string, attempt int) string {
	if !w.cfg.Webhook.enabled() {
		return ""
	}
	q := url.Values{}
	q.Set("job", jobID)
	q.Set("entry", entry)
	q.Set("attempt", strconv.Itoa(attempt))
	q.Set("token", hex.EncodeToString(w.webhookMAC(jobID, entry, attempt)))
	return w.cfg.Webhook.URL + "?" + q.Encode()
}

// webhookURLFor is webhookURL for an owned job (its entry is read under
// w.mu: a re-admit may set it).
func (w *Worker) webhookURLFor(j *job, attempt int) string {
	if !w.cfg.Webhook.enabled() {
		return ""
	}
	w.mu.Lock()
	id, entry := j.wf.ID, j.entry
	w.mu.Unlock()
	return w.webhookURL(id, entry, attempt)
}

// WebhookHandler returns the http.Handler Runpod's webhooks must reach at
// Webhook.URL (cmd/worker serves it on its own listener, --webhook-listen).
// It may serve before Run and after it returns: it only talks to Redis and,
// to cancel a losing duplicate, to Runpod. With webhooks off it answers 404.
func (w *Worker) WebhookHandler() http.Handler { return http.HandlerFunc(w.serveWebhook) }

// hookJob is the job object Runpod POSTs, read leniently: Runpod's error may
// be a string or any JSON value, and durations may be fractional.
type hookJob struct {
	ID            string                `json:"id"`
	Status        workflow.RunpodStatus `json:"status"`
	DelayTime     float64               `json:"delayTime"`
	ExecutionTime float64               `json:"executionTime"`
	WorkerID      string                `json:"workerId"`
	Output        json.RawMessage       `json:"output"`
	Error         json.RawMessage       `json:"error"`
}

func (h hookJob) runpodJob() workflow.RunpodJob {
	rj := workflow.RunpodJob{ID: h.ID, Status: h.Status, DelayTime: int64(h.DelayTime),
		ExecutionTime: int64(h.ExecutionTime), WorkerID: h.WorkerID, Output: h.Output}
	rj.Error, rj.ErrorJSON = workflow.RunpodError(h.Error)
	if string(rj.Output) == "null" {
		rj.Output = nil
	}
	return rj
}

func (w *Worker) serveWebhook(rw http.ResponseWriter, r *http.Request) {
	refuse := func(code int) {
		w.whStats.refused.Add(1)
		http.Error(rw, http.StatusText(code), code)
	}
	if !w.cfg.Webhook.enabled() {
		http.NotFound(rw, r)
		return
	}
	if r.Method != http.MethodPost {
		refuse(http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	jobID, entry, token := q.Get("job"), q.Get("entry"), q.Get("token")
	attempt, err := strconv.Atoi(q.Get("attempt"))
	got, herr := hex.DecodeString(token)
	if jobID == "" || entry == "" || err != nil || attempt < 1 || herr != nil ||
		!w.cfg.Webhook.Key.equalHMAC(got, w.webhookMAC(jobID, entry, attempt)) {
		// Never say which part was wrong, and never log the token.
		refuse(http.StatusForbidden)
		return
	}
	var hj hookJob
	body, err := io.ReadAll(io.LimitReader(r.Body, webhookBodyMax))
	if err == nil {
		if r, ok := w.cfg.Runpod.(workflow.Redactor); ok {
			// Runpod echoes what the handler wrote (an error, an output):
			// the same redaction as for the client's own answers.
			body = r.RedactJSON(body)
		}
		err = json.Unmarshal(body, &hj)
	}
	if err != nil || hj.ID == "" {
		refuse(http.StatusBadRequest)
		return
	}
	w.whStats.received.Add(1)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), webhookTimeout)
	defer cancel()
	what, err := w.completeByWebhook(ctx, jobID, entry, attempt, hj.runpodJob())
	log := w.log.With("job_id", jobID, "runpod_id", hj.ID, "attempt", attempt, "runpod_status", hj.Status)
	if err != nil {
		w.whStats.errors.Add(1)
		log.Warn("webhook: cannot record the delivery; Runpod will retry", "error", err)
		http.Error(rw, "try again", http.StatusServiceUnavailable)
		return
	}
	log.Debug("webhook received", "result", what)
	rw.WriteHeader(http.StatusOK)
}

// Results of completeByWebhook, for logs and tests.
const (
	hookFinalized = "finalized"  // the delivery wrote the job's outcome
	hookDuplicate = "duplicate"  // the job had already finished
	hookRevealed  = "revealed"   // an unlearned Runpod job was recorded; it did not win
	hookIgnored   = "ignored"    // not terminal, or the job is gone or an alias
	hookStale     = "stale"      // a Runpod id that is not this attempt's
	hookWonReveal = "won_reveal" // an unlearned Runpod job finished first and won
	hookDeferred  = "deferred"   // CANCELLED, and nobody we know of asked: the owner's poll decides
)

// completeByWebhook applies one authenticated delivery for (jobID,
// attempt). Which Runpod job it reports decides what it may do:
//
//   - the recorded Runpod id, or any id for the current attempt while none
//     is recorded yet (the webhook beat the worker's checkpoint): its
//     terminal result finalizes the job as a poll would decide it
//     (workflow.DeliveryOutcome: a CANCELLED job nobody asked to cancel,
//     such as our own orphan cancel, decides nothing and wakes the owner);
//   - an earlier attempt's id, which the worker never learned (an uncertain
//     /run, sent again): it is recorded on the job with its GPU time
//     (RevealRunpodJob); if it COMPLETED, it wins (first to finish) and the
//     job's recorded Runpod job is canceled; otherwise the current attempt
//     goes on;
//   - anything else (another id for an attempt whose id is recorded, an
//     attempt never made, another run's entry) changes nothing.
func (w *Worker) completeByWebhook(ctx context.Context, jobID, entry string, attempt int, rj workflow.RunpodJob) (string, error) {
	if !rj.Status.Terminal() {
		return hookIgnored, nil
	}
	revealed := false
	// One write id for this delivery: its own retries (a reply lost) are
	// answered "ours" and counted here; the owner's poll writing the same
	// outcome is refused as terminal and counts nothing.
	fid := streams.NewFinalizeID()
	for try := 0; try < webhookFinalizeTries; try++ {
		rec, err := w.store.Get(ctx, jobID)
		if errors.Is(err, streams.ErrNotFound) {
			return hookIgnored, nil
		}
		if err != nil {
			return "", err
		}
		if rec.AliasOf != "" {
			return hookIgnored, nil
		}
		if rec.Entry != entry {
			// Another run of the job (a redrive): that run has ended.
			return hookStale, nil
		}
		// The recorded id belongs to the last attempt: nothing is sent again
		// once an id is recorded.
		ours := attempt == rec.Attempts && (rj.ID == rec.RunpodID || rec.RunpodID == "")
		if !ours {
			if attempt >= rec.Attempts {
				return hookStale, nil
			}
			if !revealed {
				res, err := w.store.RevealRunpodJob(ctx, streams.Reveal{JobID: jobID, Entry: entry, RunpodID: rj.ID, ExecMs: rj.ExecutionTime,
					Payload: streams.EventPayload{RunpodID: rj.ID, RunpodStatus: string(rj.Status), ExecMs: rj.ExecutionTime,
						DelayMs: rj.DelayTime, Attempt: attempt}}, redisClock)
				if errors.Is(err, streams.ErrNotFound) {
					return hookIgnored, nil
				}
				if err != nil {
					return "", err
				}
				if res == streams.RevealKnown {
					w.whStats.duplicates.Add(1)
					return hookDuplicate, nil
				}
				if res == streams.RevealStale {
					// Retried since the read: that run has ended.
					return hookStale, nil
				}
				revealed = true
				w.whStats.revealed.Add(1)
				w.log.Info("webhook revealed a runpod job whose id was never recorded", "job_id", jobID,
					"runpod_id", rj.ID, "attempt", attempt, "runpod_status", rj.Status, "exec_ms", rj.ExecutionTime)
			}
			if rj.Status != workflow.RunpodCompleted || workflow.State(rec.State).Terminal() {
				return hookRevealed, nil
			}
		}
		if workflow.State(rec.State).Terminal() {
			w.whStats.duplicates.Add(1)
			return hookDuplicate, nil
		}
		now := w.now()
		// What the delivery means depends on the record: a CANCELLED job is
		// the outcome of whoever asked for the cancel (the flag, or our
		// deadline), as a poll decides it; one nobody asked for is left to
		// the owner's poll, and so is a streaming job's end (its chunks may
		// still be on Runpod: the owner drains /stream first).
		o, decided := workflow.DeliveryOutcome(w.jobFromRecord(rec), rj, now)
		if !decided {
			w.wakeToRead(jobID)
			return hookDeferred, nil
		}
		if o.OutputFromChunks && len(rec.ChunkData) > 0 {
			o.Output = rec.ChunkData // the stream's chunks recorded so far
		}
		outs := []streams.Outcome{{
			JobID: jobID, Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch, State: string(o.State), Output: o.Output,
			Error: o.Error, ErrorJSON: o.ErrorJSON, RunpodID: rj.ID, RunpodStatus: string(o.RunpodStatus), InputHash: rec.InputHash, InputHashKnown: true,
			DelayMs: o.DelayMs, ExecMs: o.ExecMs, RunpodWorkerID: o.RunpodWorkerID, Endpoint: w.cfg.EndpointID,
			FinalizeID: fid,
		}}
		errs, err := w.store.Finalize(ctx, outs, streams.FinalizeOpts{ResultTTL: w.cfg.ResultTTL, Now: redisClock})
		for again := 1; err != nil && again < webhookFinalizeTries && ctx.Err() == nil; again++ {
			// The write may have applied with its reply lost: sent again
			// under its id it is answered "ours" and counted here. Left to
			// Runpod's retry of the delivery, it would find the job
			// terminal and nobody would count the outcome.
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(again) * 50 * time.Millisecond):
			}
			errs, err = w.store.Finalize(ctx, outs, streams.FinalizeOpts{ResultTTL: w.cfg.ResultTTL, Now: redisClock})
		}
		if err == nil && len(errs) != 1 {
			err = errors.New("finalize returned a result count that does not match the batch")
		}
		if err != nil {
			return "", err
		}
		switch {
		case errs[0] == nil:
			w.webhookFinalized(ctx, jobID, rec, rj, o.State)
			if !ours {
				return hookWonReveal, nil
			}
			return hookFinalized, nil
		case errors.Is(errs[0], streams.ErrTerminal):
			w.whStats.duplicates.Add(1)
			return hookDuplicate, nil
		case errors.Is(errs[0], streams.ErrNotFound):
			return hookIgnored, nil
		}
		// Fenced: a takeover moved the epoch meanwhile; read it again.
	}
	return "", fmt.Errorf("job %q: epoch kept moving under the webhook's finalize", jobID)
}

// webhookFinalized follows a delivery that wrote the outcome: count it,
// learn its execution time, let the owner (if it is this worker) drop the
// job now rather than at its next fallback poll, and cancel the job's
// recorded Runpod job when an unlearned one won.
func (w *Worker) webhookFinalized(ctx context.Context, jobID string, rec streams.Record, rj workflow.RunpodJob, st workflow.State) {
	w.whStats.finalized.Add(1)
	if rj.Status == workflow.RunpodCompleted {
		w.est.observe(rj.ExecutionTime, rj.DelayTime)
	}
	for k, ts := range terminalStates {
		if ts == st {
			w.stats.finalized[k].Add(1)
		}
	}
	w.log.Info("job finished", "job_id", jobID, "runpod_id", rj.ID, "state", st, "by", "webhook")
	if w.cfg.Hooks.OnTransition != nil {
		w.cfg.Hooks.OnTransition(jobID, workflow.State(rec.State), st)
	}
	if w.cfg.Hooks.OnOutcome != nil {
		w.cfg.Hooks.OnOutcome(jobID, st)
	}
	// The owner's step re-reads the record, finds it terminal and drops
	// the job. Another worker's owner finds out at its next poll.
	w.wakeForCancel(jobID)
	if rec.RunpodID != "" && rec.RunpodID != rj.ID {
		// The losing Runpod job goes through the orphan path: the record now
		// names the winner, so it is canceled, and a cancel Runpod does not
		// confirm is recorded in {ns}:orphans and retried until it does,
		// never left running on a GPU.
		w.cancelOrphan(ctx, w.log.With("job_id", jobID), jobID, rec.RunpodID,
			errors.New("an unlearned runpod job of the same job finished first and won"))
	}
}
