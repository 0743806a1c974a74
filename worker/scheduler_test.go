package worker

import (
	"container/heap"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func testWorker(t *testing.T) *Worker {
	t.Helper()
	cfg := Config{Runpod: newFakeRunpod(), InstanceID: "unit"}.WithDefaults()
	require.NoError(t, cfg.Validate())
	return newWorker(nil, cfg)
}

func TestJobHeapOrdersByDue(t *testing.T) {
	t.Parallel()
	w := testWorker(t)
	base := time.Now()
	r := rand.New(rand.NewPCG(1, 2))
	var jobs []*job
	w.mu.Lock()
	for i := 0; i < 500; i++ {
		j := &job{wf: workflow.Job{ID: string(rune('a' + i%26))}, idx: -1}
		jobs = append(jobs, j)
		w.scheduleLocked(j, base.Add(time.Duration(r.IntN(10000))*time.Millisecond))
	}
	// Move some, remove some: indexes must stay consistent.
	for i := 0; i < 100; i++ {
		w.scheduleLocked(jobs[i], base.Add(time.Duration(r.IntN(10000))*time.Millisecond))
	}
	for i := 100; i < 150; i++ {
		w.unscheduleLocked(jobs[i])
		require.Equal(t, -1, jobs[i].idx)
	}
	for i, j := range w.heap {
		require.Equal(t, i, j.idx)
	}
	var dues []time.Time
	for len(w.heap) > 0 {
		dues = append(dues, heap.Pop(&w.heap).(*job).due)
	}
	w.mu.Unlock()
	require.Len(t, dues, 450)
	require.True(t, sort.SliceIsSorted(dues, func(a, b int) bool { return dues[a].Before(dues[b]) }))
}

func TestScheduleSkipsRunningAndDropped(t *testing.T) {
	t.Parallel()
	w := testWorker(t)
	w.mu.Lock()
	defer w.mu.Unlock()
	run := &job{idx: -1, running: true}
	gone := &job{idx: -1, dropped: true}
	w.scheduleLocked(run, time.Now())
	w.scheduleLocked(gone, time.Now())
	require.Empty(t, w.heap)
}

// TestDispatchNeverRunsAJobTwice hands jobs to several consumers that
// reschedule them at once, and checks no job is ever held by two at a time
// and that every job is back in the heap when the dispatcher stops.
func TestDispatchNeverRunsAJobTwice(t *testing.T) {
	t.Parallel()
	w := testWorker(t)
	const n = 50
	jobs := make([]*job, n)
	now := time.Now()
	w.mu.Lock()
	for i := range jobs {
		jobs[i] = &job{wf: workflow.Job{ID: string(rune('A' + i))}, idx: -1}
		w.scheduleLocked(jobs[i], now.Add(time.Duration(n-i)*time.Millisecond))
	}
	w.mu.Unlock()

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); w.dispatch(stop) }()

	var mu sync.Mutex
	holding := map[*job]bool{}
	handed := 0
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range w.work {
				mu.Lock()
				if holding[j] {
					t.Errorf("job %s handed out twice", j.wf.ID)
				}
				holding[j] = true
				handed++
				mu.Unlock()
				time.Sleep(time.Millisecond) // the "action"
				mu.Lock()
				holding[j] = false
				mu.Unlock()
				w.mu.Lock()
				require.True(t, j.running)
				j.running = false
				w.scheduleLocked(j, time.Now())
				w.mu.Unlock()
			}
		}()
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handed >= 5*n
	}, 10*time.Second, 5*time.Millisecond)
	close(stop)
	<-done
	close(w.work)
	wg.Wait()

	w.mu.Lock()
	defer w.mu.Unlock()
	require.Len(t, w.heap, n, "every job is back in the heap after the dispatcher stopped")
}

func TestDispatchWakesForEarlierJob(t *testing.T) {
	t.Parallel()
	w := testWorker(t)
	late := &job{wf: workflow.Job{ID: "late"}, idx: -1}
	w.mu.Lock()
	w.scheduleLocked(late, time.Now().Add(time.Hour))
	w.mu.Unlock()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); w.dispatch(stop) }()
	defer func() { close(stop); <-done }()

	early := &job{wf: workflow.Job{ID: "early"}, idx: -1}
	w.mu.Lock()
	w.scheduleLocked(early, time.Now())
	w.mu.Unlock()
	select {
	case j := <-w.work:
		require.Equal(t, "early", j.wf.ID)
	case <-time.After(2 * time.Second):
		t.Fatal("dispatcher did not wake for a job due now")
	}
}

func TestDispatchInDueOrder(t *testing.T) {
	t.Parallel()
	w := testWorker(t)
	const n = 30
	now := time.Now()
	w.mu.Lock()
	for i := 0; i < n; i++ {
		// Scheduled in reverse: the last one is due first. All are due.
		w.scheduleLocked(&job{wf: workflow.Job{ID: string(rune('A' + i))}, idx: -1}, now.Add(-time.Duration(i)*time.Millisecond))
	}
	w.mu.Unlock()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); w.dispatch(stop) }()
	defer func() { close(stop); <-done }()
	var got []string
	for len(got) < n {
		select {
		case j := <-w.work:
			got = append(got, j.wf.ID)
		case <-time.After(2 * time.Second):
			t.Fatalf("only %d jobs dispatched", len(got))
		}
	}
	for i := 0; i < n; i++ {
		require.Equal(t, string(rune('A'+n-1-i)), got[i], "position %d", i)
	}
}
