package worker

import (
	"container/heap"
	"context"
	"encoding/json"
	"time"

	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// job is one job this worker owns. It is deliberately small and has no
// goroutine of its own: a worker holds up to MaxInFlight of them in a heap
// ordered by due time, and a fixed pool of executors runs their actions.
// Every field is guarded by Worker.mu.
type job struct {
	wf        workflow.Job
	entry     string // submission entry id
	epoch     int64  // fencing token held
	inputHash string
	// input is the Runpod input, kept only until the job is on Runpod.
	input json.RawMessage

	idx     int       // index in the heap; -1 when not in it
	due     time.Time // when the next action is due (heap key)
	running bool      // an executor or the finalizer holds it; not in the heap
	dropped bool      // no longer ours: removed from Worker.jobs
	// wake asks for the job to be due at once when its running action ends
	// (a cancel arrived meanwhile).
	wake bool
	// checkCancel asks the next step to re-read the record's cancel flag
	// (a control message said so); lastCheck is when it was last read. A
	// hint is consumed only by a step that did read the record (settle), so
	// a step that ends early (a failed write, a failed re-read) leaves it
	// for the next one. hints counts the hints received, so a hint arriving
	// during the step that reads is not consumed by it.
	checkCancel bool
	hints       uint64
	lastCheck   time.Time
	// readNow asks the next step to read Runpod at once rather than at its
	// slow webhook-fallback poll: a delivery said the job finished but
	// left the outcome to us (a streaming job's chunks to drain first).
	readNow bool
	// cancel aborts the running action (lease lost, shutdown).
	cancel context.CancelCauseFunc
	// pending is a checkpoint a step could not write (Redis down); the
	// next step writes it before anything else.
	pending *streams.Checkpoint
	// storeRetries counts consecutive Redis failures for this job.
	storeRetries int
	// finalizeID names the write of outcome finalizeFor (the decided
	// wf.Outcome): its retries send the same id, so Redis answers a retry
	// of an applied write "ours", and the same outcome written by a webhook
	// delivery "terminal" (counted by that writer only).
	finalizeID  string
	finalizeFor *workflow.Outcome
}

// runpodIDs lists the Runpod jobs j knows of: recorded, or waiting in a
// pending checkpoint.
func (j *job) runpodIDs() []string {
	var ids []string
	if j.wf.RunpodID != "" {
		ids = append(ids, j.wf.RunpodID)
	}
	if j.pending != nil && j.pending.RunpodID != "" && j.pending.RunpodID != j.wf.RunpodID {
		ids = append(ids, j.pending.RunpodID)
	}
	return ids
}

func (j *job) lease() streams.Lease {
	return streams.Lease{JobID: j.wf.ID, Entry: j.entry, Epoch: j.epoch}
}

// jobHeap is a min-heap of jobs by due time (container/heap).
type jobHeap []*job

func (h jobHeap) Len() int           { return len(h) }
func (h jobHeap) Less(a, b int) bool { return h[a].due.Before(h[b].due) }
func (h jobHeap) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].idx = a
	h[b].idx = b
}

func (h *jobHeap) Push(x any) {
	j := x.(*job)
	j.idx = len(*h)
	*h = append(*h, j)
}

func (h *jobHeap) Pop() any {
	old := *h
	n := len(old)
	j := old[n-1]
	old[n-1] = nil
	j.idx = -1
	*h = old[:n-1]
	return j
}

// scheduleLocked puts j in the heap due at at (or moves it there). A job
// that is running or dropped is not scheduled: its executor reschedules it.
// w.mu must be held.
func (w *Worker) scheduleLocked(j *job, at time.Time) {
	if j.dropped || j.running {
		return
	}
	j.due = at
	if j.idx >= 0 {
		heap.Fix(&w.heap, j.idx)
	} else {
		heap.Push(&w.heap, j)
	}
	if j.idx == 0 {
		select {
		case w.wakeDispatch <- struct{}{}:
		default:
		}
	}
}

// unscheduleLocked removes j from the heap if it is there. w.mu must be held.
func (w *Worker) unscheduleLocked(j *job) {
	if j.idx >= 0 {
		heap.Remove(&w.heap, j.idx)
	}
}

// dispatch hands due jobs to the executors, one at a time, until stop is
// closed. A job handed over is marked running, so no two executors ever
// run the same job; it returns to the heap when its action ends.
func (w *Worker) dispatch(stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var next *job
		wait := time.Duration(-1)
		w.mu.Lock()
		if len(w.heap) > 0 {
			top := w.heap[0]
			if d := top.due.Sub(w.cfg.Now()); d > 0 {
				wait = d
			} else {
				heap.Pop(&w.heap)
				top.running = true
				next = top
			}
		}
		w.mu.Unlock()

		if next != nil {
			select {
			case w.work <- next:
			case <-stop:
				w.mu.Lock()
				next.running = false
				w.scheduleLocked(next, next.due)
				w.mu.Unlock()
				return
			}
			continue
		}
		var fire <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			fire = timer.C
		}
		select {
		case <-w.wakeDispatch:
		case <-fire:
		case <-stop:
			return
		}
	}
}
