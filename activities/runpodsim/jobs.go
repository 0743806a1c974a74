package runpodsim

import (
	"bytes"
	"container/list"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// job is one simulated Runpod job. Every field is guarded by Sim.mu.
type job struct {
	id      string
	input   json.RawMessage
	webhook string
	sync    bool // created by /runsync: SyncRetention applies
	mock    mockSpec
	mockErr string // a malformed mock_* field: the job fails with it

	execTimeout time.Duration
	expiresAt   time.Time // TTL deadline

	status     workflow.RunpodStatus
	createdAt  time.Time
	queuedAt   time.Time // createdAt, or the last /retry or crash re-queue
	startedAt  time.Time
	finishedAt time.Time
	removedAt  time.Time
	removed    string // why it is gone (404): "retention", "ttl", "purged"
	workerID   string
	delayMs    int64
	execMs     int64
	hasDelay   bool
	hasExec    bool
	output     json.RawMessage // progress update while running, result when done
	errText    string
	errObj     json.RawMessage // an error object (mock_error given as one); then errText is ""
	retries    int             // re-runs: crash re-queues and /retry
	executions int             // executions started
	crashes    int
	cancelLost bool  // a /cancel lost the race to completion (CancelRaceProb)
	forget     Timer // drops the job from the ledger (Config.LedgerRetention)
	forgotten  bool

	chunks       []json.RawMessage // stream chunks produced so far
	chunkNext    int               // first chunk not yet handed out by /stream
	progressNext int               // mock progress updates applied so far

	elem  *list.Element // position in Sim.queue while waiting for a slot
	slot  *slot         // slot assigned (initialising or running)
	exec  *execution    // current execution, nil when not running
	ttl   Timer
	reten Timer

	// changed is closed and replaced on every visible change, waking long polls.
	changed chan struct{}
}

// execution is one run of a job on a slot. Its timers are stopped when it
// ends; callbacks that still fire compare j.exec to their own execution and
// drop themselves, so late worker results after a cancel are discarded.
type execution struct {
	timers []Timer
}

func (e *execution) stop() {
	for _, t := range e.timers {
		t.Stop()
	}
}

// slot is one simulated GPU worker.
type slot struct {
	workerID string
	warm     bool
	idleAt   time.Time // when it last became idle
	job      *job      // assigned job, nil when idle
	initing  bool      // cold-starting
}

// mockSpec is the job behaviour read from the input (runpod-workers/mock-worker).
type mockSpec struct {
	delay     time.Duration
	hasDelay  bool
	ret       json.RawMessage // mock_return; nil echoes the input
	errMsg    string          // mock_error
	errObj    json.RawMessage // mock_error given as an object: the handler returned {"error": {...}}
	hasErr    bool
	progress  []json.RawMessage
	stream    []json.RawMessage
	isStream  bool
	aggregate bool
	crash     string // "", "always", "once"
}

// EchoKeyPlaceholder is replaced by the API key in a mock_echo_key job.
const EchoKeyPlaceholder = "$RUNPOD_API_KEY"

// echoKey plays a handler that prints its environment: with "mock_echo_key":
// true, every EchoKeyPlaceholder in the input is replaced by the API key,
// so the job's error, progress, stream chunks and output (an echoed input
// included) carry the key while the submitted input does not.
func echoKey(input json.RawMessage, key string) json.RawMessage {
	var f struct {
		Echo bool `json:"mock_echo_key"`
	}
	if json.Unmarshal(input, &f) != nil || !f.Echo {
		return input
	}
	quoted, _ := json.Marshal(key)
	return bytes.ReplaceAll(input, []byte(EchoKeyPlaceholder), quoted[1:len(quoted)-1])
}

// parseMock reads the mock_* keys of an object input. A malformed key is
// reported as an error the job will fail with, like a handler raising.
func parseMock(input json.RawMessage) (mockSpec, error) {
	var m mockSpec
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(input, &fields); err != nil {
		return m, nil // not an object: plain echo job
	}
	if raw, ok := fields["mock_delay"]; ok {
		var ms float64
		if err := json.Unmarshal(raw, &ms); err != nil || ms < 0 {
			return m, fmt.Errorf("mock_delay must be a non-negative number of milliseconds, have %s", raw)
		}
		// Cap far beyond any test so the duration cannot overflow.
		ms = math.Min(ms, float64(100*365*24*time.Hour/time.Millisecond))
		m.delay, m.hasDelay = time.Duration(ms*float64(time.Millisecond)), true
	}
	if raw, ok := fields["mock_return"]; ok {
		m.ret = raw
	}
	if raw, ok := fields["mock_error"]; ok {
		var s string
		var b bool
		var obj map[string]json.RawMessage
		switch {
		case json.Unmarshal(raw, &s) == nil:
			m.errMsg, m.hasErr = s, true
		case json.Unmarshal(raw, &b) == nil:
			m.errMsg, m.hasErr = "mock error", b
		case json.Unmarshal(raw, &obj) == nil:
			m.errObj, m.hasErr = bytes.Clone(raw), true
		default:
			return m, fmt.Errorf("mock_error must be a string, boolean or object, have %s", raw)
		}
	}
	if raw, ok := fields["mock_progress"]; ok {
		if err := json.Unmarshal(raw, &m.progress); err != nil {
			return m, fmt.Errorf("mock_progress must be a list, have %s", raw)
		}
	}
	if raw, ok := fields["mock_stream"]; ok {
		if err := json.Unmarshal(raw, &m.stream); err != nil {
			return m, fmt.Errorf("mock_stream must be a list, have %s", raw)
		}
		m.isStream = true
	}
	if raw, ok := fields["mock_aggregate_stream"]; ok {
		if err := json.Unmarshal(raw, &m.aggregate); err != nil {
			return m, fmt.Errorf("mock_aggregate_stream must be a boolean, have %s", raw)
		}
	}
	if raw, ok := fields["mock_crash"]; ok {
		var s string
		var b bool
		var n float64
		switch {
		case json.Unmarshal(raw, &b) == nil:
			if b {
				m.crash = "always"
			}
		case json.Unmarshal(raw, &n) == nil:
			if n != 0 {
				m.crash = "always"
			}
		case json.Unmarshal(raw, &s) == nil && (s == "once" || s == "always"):
			m.crash = s
		default:
			return m, fmt.Errorf(`mock_crash must be true, 1, "once" or "always", have %s`, raw)
		}
	}
	return m, nil
}

// notifyLocked wakes every long poll waiting on j.
func (j *job) notifyLocked() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// enqueueLocked puts j at the back of the FIFO queue and dispatches.
func (s *Sim) enqueueLocked(j *job) {
	j.status = workflow.RunpodInQueue
	j.elem = s.queue.PushBack(j)
	s.dispatchLocked()
	s.stats.PeakQueued = max(s.stats.PeakQueued, s.queue.Len())
}

// dispatchLocked hands queued jobs to free slots in FIFO order. Free slots
// are a stack so the most recently used (warm) worker is reused first.
func (s *Sim) dispatchLocked() {
	if s.closed {
		return
	}
	for s.queue.Len() > 0 && len(s.free) > 0 {
		j := s.queue.Remove(s.queue.Front()).(*job)
		j.elem = nil
		sl := s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		sl.job = j
		j.slot = sl
		now := s.clock.Now()
		cold := s.cfg.ColdStart > 0 && (!sl.warm || now.Sub(sl.idleAt) > s.cfg.IdleTimeout)
		if !cold {
			s.startLocked(j)
			continue
		}
		// Cold start: the job stays IN_QUEUE (its delayTime grows) while the
		// worker initialises.
		sl.initing = true
		s.initing++
		s.clock.AfterFunc(s.cfg.ColdStart, func() { s.warmedUp(sl) })
	}
}

// warmedUp ends a slot's cold start: it starts its job, or, when that job was
// cancelled or purged meanwhile, goes back to the free pool.
func (s *Sim) warmedUp(sl *slot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	sl.initing = false
	s.initing--
	sl.warm = true
	if j := sl.job; j != nil {
		s.startLocked(j)
		return
	}
	s.releaseSlotLocked(sl, false)
}

// releaseSlotLocked returns a slot to the pool; a crashed worker is replaced
// by a new, cold one.
func (s *Sim) releaseSlotLocked(sl *slot, crashed bool) {
	sl.job = nil
	sl.idleAt = s.clock.Now()
	if crashed {
		sl.workerID = s.newWorkerIDLocked()
		sl.warm = false
	}
	if sl.initing {
		return // warmedUp returns it
	}
	s.free = append(s.free, sl)
	s.dispatchLocked()
}

// startLocked begins an execution of j on its slot and schedules its events:
// progress updates and stream chunks spread over the run, the end, and the
// execution timeout.
func (s *Sim) startLocked(j *job) {
	now := s.clock.Now()
	j.status = workflow.RunpodInProgress
	j.startedAt = now
	j.workerID = j.slot.workerID
	j.delayMs, j.hasDelay = now.Sub(j.queuedAt).Milliseconds(), true
	j.executions++
	s.stats.Executions++
	s.running++
	s.stats.PeakRunning = max(s.stats.PeakRunning, s.running)
	e := &execution{}
	j.exec = e
	delay := s.cfg.MockDelay
	if j.mock.hasDelay {
		delay = j.mock.delay
	}
	at := func(d time.Duration, f func(*job)) {
		e.timers = append(e.timers, s.clock.AfterFunc(d, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.closed || j.exec != e {
				return // cancelled, timed out or deleted: drop the late result
			}
			f(j)
		}))
	}
	// Each timer fires in its own goroutine, so a later one can take the
	// lock first: progress index i and chunk i are applied together with
	// everything before them, never out of order or twice.
	for i := range j.mock.progress {
		at(delay*time.Duration(i+1)/time.Duration(len(j.mock.progress)+1), func(j *job) {
			if j.progressNext <= i {
				j.output, j.progressNext = j.mock.progress[i], i+1
				j.notifyLocked()
			}
		})
	}
	for i := range j.mock.stream {
		at(delay*time.Duration(i+1)/time.Duration(len(j.mock.stream)+1), func(j *job) {
			j.produceChunksLocked(i + 1)
			j.notifyLocked()
		})
	}
	at(delay, func(j *job) {
		j.produceChunksLocked(len(j.mock.stream)) // the end comes after every chunk
		s.completeExecutionLocked(j)
	})
	if j.execTimeout > 0 {
		at(j.execTimeout, func(j *job) {
			s.stats.ExecutionTimeouts++
			s.finishLocked(j, workflow.RunpodStatus(s.cfg.ExecutionTimeoutOutcome), nil,
				fmt.Sprintf("job exceeded its execution timeout of %d ms", j.execTimeout.Milliseconds()), false)
		})
	}
	j.notifyLocked()
}

// produceChunksLocked makes the first n mock stream chunks available, in
// order, whichever timer got there first.
func (j *job) produceChunksLocked(n int) {
	for len(j.chunks) < n {
		chunk, _ := json.Marshal(map[string]json.RawMessage{"output": j.mock.stream[len(j.chunks)]})
		j.chunks = append(j.chunks, chunk)
	}
}

// completeExecutionLocked is the end of a mock execution.
func (s *Sim) completeExecutionLocked(j *job) {
	m := j.mock
	crash := m.crash == "always" || (m.crash == "once" && j.crashes == 0)
	switch {
	case crash:
		j.crashes++
		s.stats.Crashes++
		if s.cfg.CrashRetries >= 0 && j.crashes <= s.cfg.CrashRetries {
			// Runpod re-runs the job on another worker: at-least-once.
			s.endExecutionLocked(j, true)
			j.retries++
			s.stats.Retried++
			j.queuedAt = s.clock.Now()
			j.output, j.workerID, j.hasDelay, j.errObj = nil, "", false, nil
			j.chunks, j.chunkNext, j.progressNext = nil, 0, 0
			s.enqueueLocked(j)
			j.notifyLocked()
			return
		}
		s.finishLocked(j, workflow.RunpodFailed, nil,
			fmt.Sprintf("worker %s exited unexpectedly while running the job", j.workerID), true)
	case j.mockErr != "":
		s.finishLocked(j, workflow.RunpodFailed, nil, pythonError("ValueError", j.mockErr, j.workerID), false)
	case m.errObj != nil:
		// A handler returning {"error": {...}}: Runpod's error is that object.
		j.errObj = m.errObj
		s.finishLocked(j, workflow.RunpodFailed, nil, "", false)
	case m.hasErr:
		s.finishLocked(j, workflow.RunpodFailed, nil, pythonError("Exception", m.errMsg, j.workerID), false)
	case m.isStream:
		out := json.RawMessage("[]")
		if m.aggregate {
			out, _ = json.Marshal(m.stream)
		}
		s.finishLocked(j, workflow.RunpodCompleted, out, "", false)
	case m.ret != nil:
		s.finishLocked(j, workflow.RunpodCompleted, m.ret, "", false)
	default:
		s.finishLocked(j, workflow.RunpodCompleted, j.input, "", false)
	}
}

// pythonError renders an error the way the official Python worker reports an
// uncaught handler exception: a JSON-encoded string (docs/runpod-api.md §4).
func pythonError(typ, msg, workerID string) string {
	b, _ := json.Marshal(map[string]string{
		"error_type":      fmt.Sprintf("<class '%s'>", typ),
		"error_message":   msg,
		"error_traceback": fmt.Sprintf("Traceback (most recent call last):\n  File \"handler.py\", line 1, in handler\n%s: %s\n", typ, msg),
		"hostname":        workerID + "-0000000",
		"worker_id":       workerID,
		"runpod_version":  "1.12.0",
	})
	return string(b)
}

// endExecutionLocked stops j's execution and frees its slot.
func (s *Sim) endExecutionLocked(j *job, crashed bool) {
	if j.exec == nil {
		return
	}
	j.exec.stop()
	j.exec = nil
	s.running--
	sl := j.slot
	j.slot = nil
	s.releaseSlotLocked(sl, crashed)
}

// unqueueLocked takes a job that has not started out of the queue or off the
// slot it is waiting on.
func (s *Sim) unqueueLocked(j *job) {
	if j.elem != nil {
		s.queue.Remove(j.elem)
		j.elem = nil
	}
	if j.slot != nil && j.exec == nil {
		j.slot.job = nil // warmedUp frees the slot
		j.slot = nil
	}
}

// finishLocked moves j to a terminal status, frees its worker, starts the
// retention timer and fires the webhook.
func (s *Sim) finishLocked(j *job, st workflow.RunpodStatus, output json.RawMessage, errText string, crashed bool) {
	now := s.clock.Now()
	if j.exec != nil {
		j.execMs, j.hasExec = now.Sub(j.startedAt).Milliseconds(), true
		s.endExecutionLocked(j, crashed)
	} else {
		s.unqueueLocked(j)
	}
	j.status = st
	j.finishedAt = now
	if output != nil || st != workflow.RunpodCancelled {
		j.output = output
	}
	j.errText = errText
	switch st {
	case workflow.RunpodCompleted:
		s.stats.JobsCompleted++
	case workflow.RunpodFailed:
		s.stats.JobsFailed++
	case workflow.RunpodCancelled:
		s.stats.JobsCancelled++
	case workflow.RunpodTimedOut:
		s.stats.JobsTimedOut++
	}
	ret := s.cfg.Retention
	if j.sync {
		ret = s.cfg.SyncRetention
	}
	j.reten = s.clock.AfterFunc(ret, func() { s.expire(j, "retention") })
	j.notifyLocked()
	s.webhookLocked(j)
}

// expire deletes a job at the end of its retention or TTL.
func (s *Sim) expire(j *job, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || j.removed != "" {
		return
	}
	if why == "ttl" && s.cfg.QueueExpiryOutcome == OutcomeTimedOut && j.status == workflow.RunpodInQueue {
		s.finishLocked(j, workflow.RunpodTimedOut, nil, "job expired in the queue (ttl)", false)
		return
	}
	s.removeLocked(j, why)
}

// removeLocked deletes j: every later call for it gets 404. A running job
// is stopped and its worker freed.
func (s *Sim) removeLocked(j *job, why string) {
	if j.exec != nil {
		s.endExecutionLocked(j, false)
	} else {
		s.unqueueLocked(j)
	}
	if j.ttl != nil {
		j.ttl.Stop()
	}
	if j.reten != nil {
		j.reten.Stop()
	}
	j.removed = why
	j.removedAt = s.clock.Now()
	delete(s.jobs, j.id)
	s.stats.JobsRemoved++
	j.notifyLocked()
	if d := s.cfg.LedgerRetention; d > 0 {
		j.forget = s.clock.AfterFunc(d, func() { s.forgetJob(j) })
	}
}

// forgetJob drops a removed job from the ledger. The ledger is compacted
// once half of it is forgotten, so dropping costs O(1) amortized.
func (s *Sim) forgetJob(j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || j.forgotten {
		return
	}
	j.forgotten = true
	delete(s.ids, j.id)
	s.stats.JobsForgotten++
	s.forgottenN++
	if s.forgottenN*2 < len(s.all) {
		return
	}
	kept := s.all[:0]
	for _, x := range s.all {
		if !x.forgotten {
			kept = append(kept, x)
		}
	}
	clear(s.all[len(kept):]) // let the dropped jobs be collected
	s.all, s.forgottenN = kept, 0
}

// newJobIDLocked returns a fresh id shaped like Runpod's: a UUIDv4 plus a
// suffix, "sync-" first for /runsync. Ids are never reused.
func (s *Sim) newJobIDLocked(sync bool) string {
	for {
		var b [16]byte
		s.rng.Read(b[:])
		b[6] = b[6]&0x0f | 0x40
		b[8] = b[8]&0x3f | 0x80
		id := fmt.Sprintf("%x-%x-%x-%x-%x%s", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16], s.cfg.IDSuffix)
		if sync {
			id = "sync-" + id
		}
		if _, dup := s.ids[id]; !dup {
			s.ids[id] = struct{}{}
			return id
		}
	}
}

// newWorkerIDLocked returns a 14-character lowercase alphanumeric id.
func (s *Sim) newWorkerIDLocked() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b strings.Builder
	for range 14 {
		b.WriteByte(alphabet[s.rng.Intn(len(alphabet))])
	}
	return b.String()
}

// errValueLocked is the job object's "error": the error object, or the text
// as a JSON string; nil when there is none.
func (j *job) errValueLocked() json.RawMessage {
	if j.errObj != nil {
		return j.errObj
	}
	if j.errText == "" {
		return nil
	}
	b, _ := json.Marshal(j.errText)
	return b
}
