package runpodsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// jobView is Runpod's job object (docs/runpod-api.md §4): fields that do not apply
// to the job's state are absent, never null.
type jobView struct {
	DelayTime     *int64                `json:"delayTime,omitempty"`
	Error         json.RawMessage       `json:"error,omitempty"`
	ExecutionTime *int64                `json:"executionTime,omitempty"`
	ID            string                `json:"id"`
	Output        json.RawMessage       `json:"output,omitempty"`
	Retries       int                   `json:"retries,omitempty"`
	Status        workflow.RunpodStatus `json:"status"`
	WorkerID      string                `json:"workerId,omitempty"`
}

func (j *job) viewLocked() jobView {
	v := jobView{ID: j.id, Status: j.status, Retries: j.retries}
	if j.status == workflow.RunpodInQueue {
		return v
	}
	if j.hasDelay {
		d := j.delayMs
		v.DelayTime = &d
	}
	if j.hasExec {
		e := j.execMs
		v.ExecutionTime = &e
	}
	v.WorkerID = j.workerID
	v.Output = j.output
	v.Error = j.errValueLocked()
	return v
}

// submitBody is the body of /run and /runsync. Unknown keys are ignored, as
// Runpod does.
type submitBody struct {
	Input   json.RawMessage `json:"input"`
	Webhook string          `json:"webhook"`
	Policy  *struct {
		ExecutionTimeout *int64 `json:"executionTimeout"`
		TTL              *int64 `json:"ttl"`
		LowPriority      bool   `json:"lowPriority"`
	} `json:"policy"`
}

// handle performs one operation and returns its response.
func (s *Sim) handle(r *http.Request, op, id string) response {
	switch op {
	case OpRun:
		return s.submit(r, false)
	case OpRunsync:
		return s.submit(r, true)
	case OpStatus:
		return s.status(r, id)
	case OpStatusSync:
		return s.statusSync(r, id)
	case OpStream:
		return s.stream(r, id)
	case OpCancel:
		return s.cancelJob(id)
	case OpRetry:
		return s.retryJob(id)
	case OpPurgeQueue:
		return s.purgeQueue()
	case OpHealth:
		return s.health()
	}
	return s.errResponse(http.StatusNotFound, "not found")
}

func (s *Sim) submit(r *http.Request, sync bool) response {
	limit := s.cfg.MaxRunBytes
	if sync {
		limit = s.cfg.MaxRunsyncBytes
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return s.errResponse(http.StatusBadRequest, "could not read the request body")
	}
	if int64(len(raw)) > limit {
		return s.errResponse(s.cfg.PayloadTooLargeStatus, fmt.Sprintf("request body exceeds %d bytes", limit))
	}
	var body submitBody
	if err := json.Unmarshal(raw, &body); err != nil {
		return s.errResponse(http.StatusBadRequest, "request body is not valid JSON")
	}
	if len(body.Input) == 0 || string(body.Input) == "null" {
		return s.errResponse(http.StatusBadRequest, "input is required")
	}
	execTimeout, ttl := s.cfg.ExecutionTimeout, s.cfg.TTL
	if p := body.Policy; p != nil {
		if p.ExecutionTimeout != nil {
			execTimeout = time.Duration(*p.ExecutionTimeout) * time.Millisecond
			if execTimeout < ExecutionTimeoutMin || execTimeout > PolicyMax {
				return s.errResponse(http.StatusBadRequest, "policy.executionTimeout must be between 5000 and 604800000 ms")
			}
		}
		if p.TTL != nil {
			ttl = time.Duration(*p.TTL) * time.Millisecond
			if ttl < TTLMin || ttl > PolicyMax {
				return s.errResponse(http.StatusBadRequest, "policy.ttl must be between 10000 and 604800000 ms")
			}
		}
	}
	var wait time.Duration
	if sync {
		var resp *response
		if wait, resp = s.parseWait(r, RunsyncWaitDefault); resp != nil {
			return *resp
		}
	}
	mock, mockErr := parseMock(echoKey(body.Input, s.cfg.APIKey))

	s.mu.Lock()
	now := s.clock.Now()
	j := &job{
		id:          s.newJobIDLocked(sync),
		input:       bytes.Clone(body.Input),
		webhook:     body.Webhook,
		sync:        sync,
		mock:        mock,
		execTimeout: execTimeout,
		expiresAt:   now.Add(ttl),
		createdAt:   now,
		queuedAt:    now,
		changed:     make(chan struct{}),
	}
	if mockErr != nil {
		j.mockErr = mockErr.Error()
	}
	s.jobs[j.id] = j
	s.all = append(s.all, j)
	s.stats.JobsCreated++
	j.ttl = s.clock.AfterFunc(ttl, func() { s.expire(j, "ttl") })
	s.enqueueLocked(j)
	if !sync {
		v := jobView{ID: j.id, Status: workflow.RunpodInQueue}
		s.mu.Unlock()
		return jsonResponse(v)
	}
	s.mu.Unlock()
	// The job is independent of the request: if the client goes away, it
	// keeps running.
	return s.waitAndView(r.Context(), j, wait, func(j *job) bool { return j.status.Terminal() }, true)
}

// parseWait reads ?wait=<ms>: def when absent, clamped to 1–300 s (or 400
// with RejectOutOfRangeWait).
func (s *Sim) parseWait(r *http.Request, def time.Duration) (time.Duration, *response) {
	q := r.URL.Query().Get("wait")
	if q == "" {
		return def, nil
	}
	ms, err := strconv.ParseInt(q, 10, 64)
	if err != nil {
		resp := s.errResponse(http.StatusBadRequest, "wait must be an integer number of milliseconds")
		return 0, &resp
	}
	d := time.Duration(ms) * time.Millisecond
	if d < WaitMin || d > WaitMax {
		if s.cfg.RejectOutOfRangeWait {
			resp := s.errResponse(http.StatusBadRequest, "wait must be between 1000 and 300000 ms")
			return 0, &resp
		}
		d = min(max(d, WaitMin), WaitMax)
	}
	return d, nil
}

// waitFor holds until done(j) holds, j is removed, wait (simulated) passes,
// the request ends or the simulator closes.
func (s *Sim) waitFor(ctx context.Context, j *job, wait time.Duration, done func(*job) bool) {
	timeout := make(chan struct{})
	t := s.clock.AfterFunc(wait, func() { close(timeout) })
	defer t.Stop()
	for {
		s.mu.Lock()
		if s.closed || j.removed != "" || done(j) {
			s.mu.Unlock()
			return
		}
		ch := j.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		case <-s.done:
			return
		}
	}
}

// waitAndView long-polls j and renders it: the full object when terminal,
// else {id, status} if short is set.
func (s *Sim) waitAndView(ctx context.Context, j *job, wait time.Duration, done func(*job) bool, short bool) response {
	s.waitFor(ctx, j, wait, done)
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.removed != "" {
		return s.errResponse(http.StatusNotFound, "job not found")
	}
	v := j.viewLocked()
	if short && !j.status.Terminal() {
		v = jobView{ID: j.id, Status: j.status}
	}
	return jsonResponse(v)
}

func (s *Sim) lookup(id string) (*job, *response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		resp := s.errResponse(http.StatusNotFound, "job not found")
		return nil, &resp
	}
	return j, nil
}

func (s *Sim) status(r *http.Request, id string) response {
	j, resp := s.lookup(id)
	if resp != nil {
		return *resp
	}
	var ttl time.Duration
	if q := r.URL.Query().Get("ttl"); q != "" {
		ms, err := strconv.ParseInt(q, 10, 64)
		if err != nil || ms <= 0 {
			return s.errResponse(http.StatusBadRequest, "ttl must be a positive number of milliseconds")
		}
		ttl = time.Duration(ms) * time.Millisecond
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.removed != "" {
		return s.errResponse(http.StatusNotFound, "job not found")
	}
	v := j.viewLocked()
	if ttl > 0 {
		// ?ttl sets the job's remaining lifespan from now.
		j.ttl.Stop()
		j.expiresAt = s.clock.Now().Add(ttl)
		j.ttl = s.clock.AfterFunc(ttl, func() { s.expire(j, "ttl") })
	}
	return jsonResponse(v)
}

func (s *Sim) statusSync(r *http.Request, id string) response {
	wait, resp := s.parseWait(r, StatusSyncWaitDefault)
	if resp != nil {
		return *resp
	}
	j, resp := s.lookup(id)
	if resp != nil {
		return *resp
	}
	return s.waitAndView(r.Context(), j, wait, func(j *job) bool { return j.status.Terminal() }, false)
}

// streamView is the /stream response: the stream key is always present.
type streamView struct {
	ID     string                `json:"id"`
	Status workflow.RunpodStatus `json:"status"`
	Stream []json.RawMessage     `json:"stream"`
	Error  json.RawMessage       `json:"error,omitempty"`
}

// stream hands out the chunks not yet delivered (each exactly once), holding
// the request while there are none and the job is not terminal.
func (s *Sim) stream(r *http.Request, id string) response {
	wait, resp := s.parseWait(r, StreamWaitDefault)
	if resp != nil {
		return *resp
	}
	j, resp := s.lookup(id)
	if resp != nil {
		return *resp
	}
	s.waitFor(r.Context(), j, wait, func(j *job) bool {
		return j.chunkNext < len(j.chunks) || j.status.Terminal()
	})
	if r.Context().Err() != nil {
		// The client went away while held: hand nothing out, or the
		// chunks would be drained into an answer nobody reads.
		return s.errResponse(http.StatusServiceUnavailable, "client gone")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.removed != "" {
		return s.errResponse(http.StatusNotFound, "job not found")
	}
	v := streamView{ID: j.id, Status: j.status, Stream: []json.RawMessage{}, Error: j.errValueLocked()}
	v.Stream = append(v.Stream, j.chunks[j.chunkNext:]...)
	j.chunkNext = len(j.chunks)
	return jsonResponse(v)
}

func (s *Sim) cancelJob(id string) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return s.errResponse(http.StatusNotFound, "job not found")
	}
	if j.status.Terminal() {
		if s.cfg.CancelTerminalStatus != 0 {
			return s.errResponse(s.cfg.CancelTerminalStatus, fmt.Sprintf("job is already %s", j.status))
		}
		return jsonResponse(jobView{ID: j.id, Status: j.status})
	}
	if j.exec != nil && s.cfg.CancelRaceProb > 0 && s.rng.Float64() < s.cfg.CancelRaceProb {
		// Completion wins the race: the cancel is acknowledged but the
		// worker's result lands first.
		j.cancelLost = true
		s.stats.CancelsLost++
		return jsonResponse(jobView{ID: j.id, Status: workflow.RunpodCancelled})
	}
	s.finishLocked(j, workflow.RunpodCancelled, nil, "", false)
	return jsonResponse(j.viewLocked())
}

func (s *Sim) retryJob(id string) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return s.errResponse(http.StatusNotFound, "job not found")
	}
	if j.status != workflow.RunpodFailed && j.status != workflow.RunpodTimedOut {
		return s.errResponse(s.cfg.RetryInvalidStatus, fmt.Sprintf("job is %s; only FAILED or TIMED_OUT jobs can be retried", j.status))
	}
	j.reten.Stop()
	j.reten = nil
	j.output, j.errText, j.errObj, j.workerID = nil, "", nil, ""
	j.hasDelay, j.hasExec = false, false
	j.chunks, j.chunkNext = nil, 0
	j.finishedAt = time.Time{}
	j.crashes = 0
	j.retries++
	s.stats.Retried++
	s.stats.RetryRequests++
	j.queuedAt = s.clock.Now()
	s.enqueueLocked(j)
	j.notifyLocked()
	return jsonResponse(jobView{ID: j.id, Status: workflow.RunpodInQueue})
}

func (s *Sim) purgeQueue() response {
	s.mu.Lock()
	defer s.mu.Unlock()
	var victims []*job
	for e := s.queue.Front(); e != nil; e = e.Next() {
		victims = append(victims, e.Value.(*job))
	}
	for _, sl := range s.slots {
		if sl.initing && sl.job != nil {
			victims = append(victims, sl.job) // assigned but still IN_QUEUE
		}
	}
	for _, j := range victims {
		if s.cfg.PurgeOutcome == OutcomeDelete {
			s.removeLocked(j, "purged")
		} else {
			s.finishLocked(j, workflow.RunpodCancelled, nil, "", false)
		}
	}
	s.stats.JobsPurged += int64(len(victims))
	return jsonResponse(map[string]any{"removed": len(victims), "status": "completed"})
}

// healthView is the /health body with every key FLASH requires.
type healthView struct {
	Jobs struct {
		Completed  int64 `json:"completed"`
		Failed     int64 `json:"failed"`
		InProgress int   `json:"inProgress"`
		InQueue    int   `json:"inQueue"`
		Retried    int64 `json:"retried"`
	} `json:"jobs"`
	Workers struct {
		Idle         int `json:"idle"`
		Initializing int `json:"initializing"`
		Ready        int `json:"ready"`
		Running      int `json:"running"`
		Throttled    int `json:"throttled"`
		Unhealthy    int `json:"unhealthy"`
	} `json:"workers"`
}

func (s *Sim) health() response {
	s.mu.Lock()
	defer s.mu.Unlock()
	return jsonResponse(s.healthLocked())
}

func (s *Sim) healthLocked() healthView {
	var h healthView
	h.Jobs.Completed = s.stats.JobsCompleted
	h.Jobs.Failed = s.stats.JobsFailed + s.stats.JobsTimedOut
	h.Jobs.InProgress = s.running
	h.Jobs.InQueue = s.queue.Len()
	for _, sl := range s.slots {
		if sl.initing && sl.job != nil {
			h.Jobs.InQueue++
		}
	}
	h.Jobs.Retried = s.stats.Retried
	h.Workers.Idle = len(s.free)
	h.Workers.Ready = len(s.free)
	h.Workers.Initializing = s.initing
	h.Workers.Running = s.running
	return h
}
