package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// fakeRunpod is a small in-memory Runpod for worker tests: jobs behave by
// their input like the simulator's (mock_delay ms, mock_return, mock_error,
// mock_progress), and every call is counted. It honours ctx.
type fakeRunpod struct {
	mu       sync.Mutex
	jobs     map[string]*fakeJob
	order    []string
	runs     int
	statuses int
	cancels  []string
	// runHook, when set, may replace a /run's result (fault injection).
	runHook func(n int) error
	// statusBlock, when set, makes /status wait on it (or on ctx).
	statusBlock chan struct{}
}

type fakeJob struct {
	id       string
	input    json.RawMessage
	created  time.Time
	delay    time.Duration
	ret      json.RawMessage
	errText  string
	progress json.RawMessage
	status   workflow.RunpodStatus
}

type mockInput struct {
	Delay    int             `json:"mock_delay"`
	Return   json.RawMessage `json:"mock_return"`
	Error    string          `json:"mock_error"`
	Progress json.RawMessage `json:"mock_progress"`
}

func newFakeRunpod() *fakeRunpod { return &fakeRunpod{jobs: make(map[string]*fakeJob)} }

func (f *fakeRunpod) Run(ctx context.Context, req workflow.RunRequest) (workflow.RunpodJob, error) {
	if err := ctx.Err(); err != nil {
		return workflow.RunpodJob{}, fmt.Errorf("fake run: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runs++
	if f.runHook != nil {
		if err := f.runHook(f.runs); err != nil {
			return workflow.RunpodJob{}, err
		}
	}
	var in mockInput
	_ = json.Unmarshal(req.Input, &in)
	j := &fakeJob{
		id: fmt.Sprintf("rp-%d", len(f.order)+1), input: req.Input, created: time.Now(),
		delay: time.Duration(in.Delay) * time.Millisecond, ret: in.Return, errText: in.Error,
		progress: in.Progress, status: workflow.RunpodInQueue,
	}
	f.jobs[j.id] = j
	f.order = append(f.order, j.id)
	return workflow.RunpodJob{ID: j.id, Status: workflow.RunpodInQueue}, nil
}

// advanceLocked moves a job along its timeline: in queue for the first
// tenth of its delay, then in progress, then done.
func (j *fakeJob) advanceLocked(now time.Time) {
	if j.status.Terminal() {
		return
	}
	el := now.Sub(j.created)
	switch {
	case el >= j.delay && j.errText != "":
		j.status = workflow.RunpodFailed
	case el >= j.delay:
		j.status = workflow.RunpodCompleted
	case el >= j.delay/10:
		j.status = workflow.RunpodInProgress
	}
}

func (j *fakeJob) viewLocked() workflow.RunpodJob {
	rj := workflow.RunpodJob{ID: j.id, Status: j.status}
	switch j.status {
	case workflow.RunpodCompleted:
		rj.Output = j.ret
	case workflow.RunpodFailed:
		rj.Error = j.errText
	case workflow.RunpodInProgress:
		rj.Output = j.progress
	}
	return rj
}

func (f *fakeRunpod) Status(ctx context.Context, id string) (workflow.RunpodJob, error) {
	f.mu.Lock()
	block := f.statusBlock
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return workflow.RunpodJob{}, fmt.Errorf("fake status: %w", ctx.Err())
		}
	}
	if err := ctx.Err(); err != nil {
		return workflow.RunpodJob{}, fmt.Errorf("fake status: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses++
	j := f.jobs[id]
	if j == nil {
		return workflow.RunpodJob{}, &workflow.ActivityError{Op: "status", StatusCode: 404, Err: workflow.ErrRunpodJobNotFound}
	}
	j.advanceLocked(time.Now())
	return j.viewLocked(), nil
}

func (f *fakeRunpod) Cancel(ctx context.Context, id string) (workflow.RunpodJob, error) {
	if err := ctx.Err(); err != nil {
		return workflow.RunpodJob{}, fmt.Errorf("fake cancel: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancels = append(f.cancels, id)
	j := f.jobs[id]
	if j == nil {
		return workflow.RunpodJob{}, &workflow.ActivityError{Op: "cancel", StatusCode: 404, Err: workflow.ErrRunpodJobNotFound}
	}
	j.advanceLocked(time.Now())
	if !j.status.Terminal() {
		j.status = workflow.RunpodCancelled
	}
	return j.viewLocked(), nil
}

func (f *fakeRunpod) counts() (runs, statuses, cancels int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs, f.statuses, len(f.cancels)
}

func (f *fakeRunpod) canceled(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.cancels {
		if c == id {
			return true
		}
	}
	return false
}

func (f *fakeRunpod) status(id string) workflow.RunpodStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if j := f.jobs[id]; j != nil {
		return j.status
	}
	return ""
}
