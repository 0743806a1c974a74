package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// standin is an in-process workflow.Runpod that answers at once: /run
// queues the job, and its first /status completes it with the input echoed
// as output (or, when hold is set, says IN_PROGRESS forever). It costs no
// HTTP, so the bench measures the orchestrator and Redis, not a server.
type standin struct {
	hold bool
	seq  atomic.Uint64
	runs atomic.Int64

	mu        sync.Mutex
	jobs      map[string]standinJob // runpod id → job
	ranAt     map[string]time.Time  // client job id → first /run
	doneAt    map[string]time.Time  // client job id → completion seen by /status
	runpodJob map[string]string     // client job id → runpod id
}

type standinJob struct {
	jobID string
	input json.RawMessage
}

func newStandin(hold bool) *standin {
	return &standin{hold: hold, jobs: map[string]standinJob{}, ranAt: map[string]time.Time{},
		doneAt: map[string]time.Time{}, runpodJob: map[string]string{}}
}

// benchInput is the input every bench job carries, so the stand-in (and the
// simulator's echo) can name the job.
type benchInput struct {
	Job string `json:"job"`
}

func (s *standin) Run(_ context.Context, req workflow.RunRequest) (workflow.RunpodJob, error) {
	var in benchInput
	if err := json.Unmarshal(req.Input, &in); err != nil {
		return workflow.RunpodJob{}, fmt.Errorf("standin: input: %w", err)
	}
	id := fmt.Sprintf("standin-%d", s.seq.Add(1))
	now := time.Now()
	s.runs.Add(1)
	s.mu.Lock()
	s.jobs[id] = standinJob{jobID: in.Job, input: req.Input}
	if _, ok := s.ranAt[in.Job]; !ok {
		s.ranAt[in.Job] = now
	}
	s.runpodJob[in.Job] = id
	s.mu.Unlock()
	return workflow.RunpodJob{ID: id, Status: workflow.RunpodInQueue}, nil
}

func (s *standin) Status(_ context.Context, id string) (workflow.RunpodJob, error) {
	s.mu.Lock()
	j, ok := s.jobs[id]
	if ok && !s.hold {
		if _, seen := s.doneAt[j.jobID]; !seen {
			s.doneAt[j.jobID] = time.Now()
		}
	}
	s.mu.Unlock()
	if !ok {
		return workflow.RunpodJob{}, workflow.ErrRunpodJobNotFound
	}
	if s.hold {
		return workflow.RunpodJob{ID: id, Status: workflow.RunpodInProgress}, nil
	}
	return workflow.RunpodJob{ID: id, Status: workflow.RunpodCompleted, Output: j.input, ExecutionTime: 1}, nil
}

func (s *standin) Cancel(_ context.Context, id string) (workflow.RunpodJob, error) {
	return workflow.RunpodJob{ID: id, Status: workflow.RunpodCancelled}, nil
}

// times returns copies of the first-/run and completion times by job id.
func (s *standin) times() (ran, done map[string]time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ran = make(map[string]time.Time, len(s.ranAt))
	for k, v := range s.ranAt {
		ran[k] = v
	}
	done = make(map[string]time.Time, len(s.doneAt))
	for k, v := range s.doneAt {
		done[k] = v
	}
	return ran, done
}
