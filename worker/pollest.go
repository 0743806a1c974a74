package worker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// execSamples is how many recent figures each estimate keeps.
const execSamples = 64

// execEstimate learns how long the endpoint's jobs run from the
// executionTime Runpod reports for finished jobs (polls and webhooks), and
// how long they take from /run to their end (delayTime + executionTime),
// for the poll scheduler (workflow.NextPoll, workflow.FirstPoll). Each is
// the median of the last execSamples figures: robust to the odd very long
// or failed-at-once job.
type execEstimate struct {
	mu         sync.Mutex
	exec       medianRing
	turnaround medianRing
}

var (
	_ workflow.ExecEstimator       = (*execEstimate)(nil)
	_ workflow.TurnaroundEstimator = (*execEstimate)(nil)
)

// medianRing holds the last execSamples durations and their median.
type medianRing struct {
	ring   [execSamples]time.Duration
	n      int // samples held (≤ execSamples)
	next   int
	median time.Duration
	sorted [execSamples]time.Duration // scratch, so observe does not allocate
}

func (m *medianRing) add(d time.Duration) {
	m.ring[m.next] = d
	m.next = (m.next + 1) % execSamples
	m.n = min(m.n+1, execSamples)
	s := m.sorted[:m.n]
	copy(s, m.ring[:m.n])
	slices.Sort(s)
	m.median = s[len(s)/2]
}

// observe records one finished job's executionTime and delayTime (ms); a
// job without an executionTime is ignored.
func (e *execEstimate) observe(execMs, delayMs int64) {
	if execMs <= 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exec.add(time.Duration(execMs) * time.Millisecond)
	e.turnaround.add(time.Duration(execMs+max(delayMs, 0)) * time.Millisecond)
}

// ExpectedExecution implements workflow.ExecEstimator.
func (e *execEstimate) ExpectedExecution() (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.exec.median, e.exec.n > 0
}

// ExpectedTurnaround implements workflow.TurnaroundEstimator.
func (e *execEstimate) ExpectedTurnaround() (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.turnaround.median, e.turnaround.n > 0
}

// observedRunpod feeds the executionTime of every terminal answer to the
// estimate, without touching the executor's call sites.
type observedRunpod struct {
	workflow.Runpod
	est *execEstimate
}

func (o observedRunpod) Status(ctx context.Context, id string) (workflow.RunpodJob, error) {
	rj, err := o.Runpod.Status(ctx, id)
	if err == nil && rj.Status == workflow.RunpodCompleted {
		o.est.observe(rj.ExecutionTime, rj.DelayTime)
	}
	return rj, err
}
