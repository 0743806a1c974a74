package runpodsim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// WebhookDelivery records one webhook attempt, for assertions.
type WebhookDelivery struct {
	JobID   string `json:"jobId"`
	URL     string `json:"url"`
	Attempt int    `json:"attempt"`
	Status  int    `json:"status,omitempty"` // HTTP status, 0 on a transport error
	Error   string `json:"error,omitempty"`
	OK      bool   `json:"ok"`
	// Duplicate marks the extra delivery of WebhookDupProb.
	Duplicate bool            `json:"duplicate,omitempty"`
	Body      json.RawMessage `json:"body"`
	At        time.Time       `json:"at"` // simulated time of the attempt
}

// webhookLocked starts delivery of j's job object to its webhook when its
// terminal status calls for one.
func (s *Sim) webhookLocked(j *job) {
	if j.webhook == "" || s.closed {
		return
	}
	switch j.status {
	case workflow.RunpodCompleted, workflow.RunpodFailed:
	case workflow.RunpodCancelled:
		if !s.cfg.WebhookOnCancelled {
			return
		}
	case workflow.RunpodTimedOut:
		if !s.cfg.WebhookOnTimedOut {
			return
		}
	default:
		return
	}
	if s.cfg.WebhookDropProb > 0 && s.rng.Float64() < s.cfg.WebhookDropProb {
		s.stats.WebhooksDropped++
		return
	}
	dup := s.cfg.WebhookDupProb > 0 && s.rng.Float64() < s.cfg.WebhookDupProb
	body, _ := json.Marshal(j.viewLocked())
	url, id := j.webhook, j.id
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.deliver(id, url, body, dup)
	}()
}

// deliver POSTs body up to WebhookAttempts times, WebhookRetryDelay
// (simulated) apart, until one attempt gets HTTP 200; with dup, a
// successful delivery is sent once more. Failures are recorded, not logged
// as errors: the receiver is the system under test.
func (s *Sim) deliver(jobID, url string, body []byte, dup bool) {
	for attempt := 1; attempt <= s.cfg.WebhookAttempts; attempt++ {
		if attempt > 1 {
			fire := make(chan struct{})
			t := s.clock.AfterFunc(s.cfg.WebhookRetryDelay, func() { close(fire) })
			select {
			case <-fire:
			case <-s.done:
				t.Stop()
				return
			}
		}
		rec := s.post(jobID, url, attempt, body, false)
		if rec.OK {
			if dup {
				s.post(jobID, url, attempt, body, true)
			}
			return
		}
	}
	s.mu.Lock()
	s.stats.WebhooksFailed++
	s.mu.Unlock()
}

// post makes and records one webhook attempt.
func (s *Sim) post(jobID, url string, attempt int, body []byte, duplicate bool) WebhookDelivery {
	rec := WebhookDelivery{JobID: jobID, URL: url, Attempt: attempt, Body: body, At: s.clock.Now(), Duplicate: duplicate}
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, url, bytes.NewReader(body))
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
		var resp *http.Response
		if resp, err = s.hook.Do(req); err == nil {
			rec.Status = resp.StatusCode
			resp.Body.Close()
		}
	}
	if err != nil {
		rec.Error = err.Error()
	}
	rec.OK = rec.Status == http.StatusOK
	s.mu.Lock()
	s.webhooks = append(s.webhooks, rec)
	s.stats.WebhookAttempts++
	if rec.OK {
		s.stats.WebhooksDelivered++
	}
	if duplicate {
		s.stats.WebhooksDuplicated++
	}
	s.mu.Unlock()
	s.log.Debug("webhook attempt", "job_id", jobID, "attempt", attempt, "status", rec.Status, "ok", rec.OK)
	return rec
}

// Webhooks returns every webhook attempt so far, in order.
func (s *Sim) Webhooks() []WebhookDelivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]WebhookDelivery(nil), s.webhooks...)
}
