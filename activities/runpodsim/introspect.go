package runpodsim

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Stats are the simulator's counters (GET /_sim/stats).
type Stats struct {
	// Requests counts requests per operation that passed auth and routing,
	// including those later rate-limited or faulted.
	Requests map[string]int64 `json:"requests"`
	// RateLimited counts 429s from rate/concurrency/queue limits per operation.
	RateLimited map[string]int64 `json:"rate_limited"`
	// Faults counts injected faults (not latency) per operation.
	Faults map[string]int64 `json:"faults"`
	// FaultsInjected counts injected faults by kind: "500", "429", "hang",
	// "drop", "invalid_json", "latency".
	FaultsInjected map[string]int64 `json:"faults_injected"`
	Unauthorized   int64            `json:"unauthorized"`
	NotFound       int64            `json:"not_found"`

	JobsCreated   int64 `json:"jobs_created"`
	JobsCompleted int64 `json:"jobs_completed"`
	JobsFailed    int64 `json:"jobs_failed"`
	JobsTimedOut  int64 `json:"jobs_timed_out"`
	JobsCancelled int64 `json:"jobs_cancelled"`
	// JobsPurged counts jobs removed by /purge-queue (also counted as
	// cancelled or removed, per PurgeOutcome).
	JobsPurged int64 `json:"jobs_purged"`
	// JobsRemoved counts jobs deleted by retention, TTL or purge (404 after).
	JobsRemoved int64 `json:"jobs_removed"`
	// JobsForgotten counts removed jobs dropped from the ledger after
	// Config.LedgerRetention (Jobs and Job no longer know them).
	JobsForgotten int64 `json:"jobs_forgotten"`
	// Retried counts re-queues: crash re-runs plus /retry calls.
	Retried       int64 `json:"retried"`
	RetryRequests int64 `json:"retry_requests"`
	Executions    int64 `json:"executions"`
	Crashes       int64 `json:"crashes"`
	// ExecutionTimeouts counts executions ended by their execution timeout.
	ExecutionTimeouts int64 `json:"execution_timeouts"`
	// CancelsLost counts /cancel calls that lost the race to completion.
	CancelsLost int64 `json:"cancels_lost"`

	WebhookAttempts   int64 `json:"webhook_attempts"`
	WebhooksDelivered int64 `json:"webhooks_delivered"`
	WebhooksFailed    int64 `json:"webhooks_failed"`
	// WebhooksDropped counts webhooks never sent (WebhookDropProb);
	// WebhooksDuplicated counts extra deliveries (WebhookDupProb).
	WebhooksDropped    int64 `json:"webhooks_dropped"`
	WebhooksDuplicated int64 `json:"webhooks_duplicated"`

	// Queued and Running are gauges at the time of the call.
	Queued  int `json:"queued"`
	Running int `json:"running"`
	// PeakRunning is the most executions ever running at once.
	PeakRunning int `json:"peak_running"`
	// PeakQueued is the most jobs ever waiting IN_QUEUE at once.
	PeakQueued int `json:"peak_queued"`
}

func newStats() Stats {
	return Stats{
		Requests:       map[string]int64{},
		RateLimited:    map[string]int64{},
		Faults:         map[string]int64{},
		FaultsInjected: map[string]int64{},
	}
}

// Stats returns a snapshot of the counters.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Requests = maps.Clone(s.stats.Requests)
	st.RateLimited = maps.Clone(s.stats.RateLimited)
	st.Faults = maps.Clone(s.stats.Faults)
	st.FaultsInjected = maps.Clone(s.stats.FaultsInjected)
	h := s.healthLocked()
	st.Queued, st.Running = h.Jobs.InQueue, h.Jobs.InProgress
	return st
}

// JobInfo describes one job ever created (GET /_sim/jobs), including jobs
// already deleted by retention, TTL or purge. Times are simulated.
type JobInfo struct {
	ID         string                `json:"id"`
	Input      json.RawMessage       `json:"input"`
	Status     workflow.RunpodStatus `json:"status"`
	Sync       bool                  `json:"sync,omitempty"`
	Webhook    string                `json:"webhook,omitempty"`
	WorkerID   string                `json:"workerId,omitempty"`
	Output     json.RawMessage       `json:"output,omitempty"`
	Error      string                `json:"error,omitempty"`
	CreatedAt  time.Time             `json:"createdAt"`
	StartedAt  time.Time             `json:"startedAt,omitzero"`
	FinishedAt time.Time             `json:"finishedAt,omitzero"`
	ExpiresAt  time.Time             `json:"expiresAt"`
	// Executions counts executions started (crash re-runs and /retry add one).
	Executions int `json:"executions"`
	// Retries counts re-queues (crash re-runs and /retry).
	Retries int `json:"retries"`
	Crashes int `json:"crashes,omitempty"`
	// CancelLost is set when a /cancel lost the race to completion.
	CancelLost bool `json:"cancelLost,omitempty"`
	// Removed says why the job is gone ("retention", "ttl", "purged"); empty
	// while /status still finds it.
	Removed   string    `json:"removed,omitempty"`
	RemovedAt time.Time `json:"removedAt,omitzero"`
}

func (j *job) infoLocked() JobInfo {
	return JobInfo{
		ID: j.id, Input: j.input, Status: j.status, Sync: j.sync, Webhook: j.webhook,
		WorkerID: j.workerID, Output: j.output, Error: j.errText + string(j.errObj),
		CreatedAt: j.createdAt, StartedAt: j.startedAt, FinishedAt: j.finishedAt, ExpiresAt: j.expiresAt,
		Executions: j.executions, Retries: j.retries, Crashes: j.crashes, CancelLost: j.cancelLost,
		Removed: j.removed, RemovedAt: j.removedAt,
	}
}

// Jobs returns every job ever created, in creation order, except those
// dropped after Config.LedgerRetention.
func (s *Sim) Jobs() []JobInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]JobInfo, 0, len(s.all))
	for _, j := range s.all {
		if !j.forgotten {
			out = append(out, j.infoLocked())
		}
	}
	return out
}

// Job returns one job by id, including deleted ones still in the ledger
// (Config.LedgerRetention).
func (s *Sim) Job(id string) (JobInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[id]; j != nil {
		return j.infoLocked(), true
	}
	if _, ok := s.ids[id]; !ok {
		return JobInfo{}, false
	}
	for _, j := range s.all { // deleted job: rare, linear is fine
		if j.id == id && !j.forgotten {
			return j.infoLocked(), true
		}
	}
	return JobInfo{}, false
}

// serveIntrospection serves the /_sim/ routes. They need no API key: they
// exist for tests and audits on loopback.
//
//	GET    /_sim/stats        Stats
//	GET    /_sim/jobs         []JobInfo
//	GET    /_sim/jobs/{id}    JobInfo (404 if never created)
//	GET    /_sim/webhooks     []WebhookDelivery
//	GET    /_sim/faults       map op → Faults
//	POST   /_sim/faults       body map op → Faults; replaces those ops' faults
//	DELETE /_sim/faults       clears every fault
func (s *Sim) serveIntrospection(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/_sim/")
	get := r.Method == http.MethodGet
	switch {
	case path == "stats" && get:
		s.write(w, jsonResponse(s.Stats()))
	case path == "jobs" && get:
		s.write(w, jsonResponse(s.Jobs()))
	case strings.HasPrefix(path, "jobs/") && get:
		info, ok := s.Job(strings.TrimPrefix(path, "jobs/"))
		if !ok {
			s.write(w, s.errResponse(http.StatusNotFound, "job not found"))
			return
		}
		s.write(w, jsonResponse(info))
	case path == "webhooks" && get:
		s.write(w, jsonResponse(s.Webhooks()))
	case path == "faults" && get:
		s.write(w, jsonResponse(s.Faults()))
	case path == "faults" && r.Method == http.MethodDelete:
		s.ClearFaults()
		s.write(w, jsonResponse(map[string]string{"status": "cleared"}))
	case path == "faults" && r.Method == http.MethodPost:
		var in map[string]Faults
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&in); err != nil {
			s.write(w, s.errResponse(http.StatusBadRequest, fmt.Sprintf("faults body: %v", err)))
			return
		}
		for op, f := range in {
			if err := s.SetFaults(op, f); err != nil {
				s.write(w, s.errResponse(http.StatusBadRequest, err.Error()))
				return
			}
		}
		s.write(w, jsonResponse(s.Faults()))
	default:
		s.write(w, s.errResponse(http.StatusNotFound, "not found"))
	}
}
