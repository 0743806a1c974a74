package worker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// execSamples is how many recent executionTime figures the estimate keeps.
const execSamples = 64

// execEstimate learns how long the endpoint's jobs run from the
// executionTime Runpod reports for finished jobs (polls and webhooks), for
// the poll scheduler (workflow.NextPoll). It is the median of the last
// execSamples figures: robust to the odd very long or failed-at-once job.
type execEstimate struct {
	mu     sync.Mutex
	ring   [execSamples]time.Duration
	n      int // samples held (≤ execSamples)
	next   int
	median time.Duration
}

var _ workflow.ExecEstimator = (*execEstimate)(nil)

// observe records one finished job's executionTime (ms); 0 is ignored.
func (e *execEstimate) observe(ms int64) {
	if ms <= 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ring[e.next] = time.Duration(ms) * time.Millisecond
	e.next = (e.next + 1) % execSamples
	e.n = min(e.n+1, execSamples)
	s := slices.Clone(e.ring[:e.n])
	slices.Sort(s)
	e.median = s[len(s)/2]
}

// ExpectedExecution implements workflow.ExecEstimator.
func (e *execEstimate) ExpectedExecution() (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.median, e.n > 0
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
		o.est.observe(rj.ExecutionTime)
	}
	return rj, err
}
