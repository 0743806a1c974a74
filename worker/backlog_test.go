package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// budgetRunpod is one worker's view of a shared fake Runpod whose /run
// budget the test hands out (a window's grant at a time): Reserve takes a
// token or defers. No clock: a window opens when the test says so.
type budgetRunpod struct {
	*fakeRunpod
	budget *atomic.Int64
	mu     *sync.Mutex
	sent   map[string]string // job tag of each /run → the worker that sent it
	name   string
}

func (r budgetRunpod) Reserve(ctx context.Context, op string) time.Duration {
	if op != workflow.OpRun {
		return 0
	}
	if r.budget.Add(-1) >= 0 {
		return 0
	}
	r.budget.Add(1)
	return 20 * time.Millisecond
}

func (r budgetRunpod) Run(ctx context.Context, req workflow.RunRequest) (workflow.RunpodJob, error) {
	var in struct {
		Tag string `json:"tag"`
	}
	_ = json.Unmarshal(req.Input, &in)
	r.mu.Lock()
	r.sent[in.Tag] = r.name
	r.mu.Unlock()
	return r.fakeRunpod.Run(ctx, req)
}

// TestBacklogWaitsInStream: two workers, a backlog of 2,000 jobs and a
// /run budget of 10 a window. Each worker holds at most SubmitAhead jobs
// admitted but unsent; the rest stays in the stream, never delivered; both
// workers send /runs; a job canceled while in the stream ends CANCELED
// with no /run. Before SubmitAhead, the first worker to read admitted the
// backlog up to MaxInFlight (100,000), to wait there for budget.
func TestBacklogWaitsInStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n, ahead, window = 2000, 20, 10
	var budget atomic.Int64
	var mu sync.Mutex
	sent := map[string]string{}
	for i := range n {
		b.submit(t, fmt.Sprintf("bl-%04d", i), fmt.Sprintf(`{"tag":"bl-%04d","mock_delay":10,"mock_return":1}`, i), 0)
	}
	ws := make([]*running, 2)
	for i := range ws {
		name := fmt.Sprintf("bl%d", i)
		cfg := b.config(name)
		cfg.Runpod = budgetRunpod{fakeRunpod: b.rp, budget: &budget, mu: &mu, sent: sent, name: name}
		cfg.Concurrency = 4
		cfg.SubmitAhead = ahead
		ws[i] = b.start(t, cfg)
	}
	unsent := func(w *running) int { return w.w.Stats().InFlightByState[workflow.StateSubmitted] }
	// Both workers fill their bound, and stop there.
	require.Eventually(t, func() bool { return unsent(ws[0])+unsent(ws[1]) >= 2*ahead },
		time.Minute, 10*time.Millisecond, "the workers fill their bounds")
	for i, w := range ws {
		require.LessOrEqual(t, unsent(w), ahead, "worker %d holds at most SubmitAhead unsent", i)
	}
	for k := 1; k <= 5; k++ {
		budget.Add(window)
		require.Eventually(t, func() bool {
			runs, _, _ := b.rp.counts()
			return runs == k*window && unsent(ws[0]) == ahead && unsent(ws[1]) == ahead
		}, time.Minute, 5*time.Millisecond, "window %d sent and refilled", k)
		for i, w := range ws {
			require.LessOrEqual(t, unsent(w), ahead, "worker %d holds at most SubmitAhead unsent", i)
			w.w.mu.Lock()
			scan := 0
			for _, j := range w.w.jobs {
				if j.wf.RunpodID == "" {
					scan++
				}
			}
			require.Equal(t, scan, w.w.unsentN, "worker %d's unsent counter matches its jobs", i)
			w.w.mu.Unlock()
		}
		ctx := context.Background()
		p, err := b.rdb.XPending(ctx, b.store.Keys().Submissions(), b.store.Group()).Result()
		require.NoError(t, err)
		require.LessOrEqual(t, p.Count, int64(2*ahead+k*window), "pending: unsent and sent jobs only")
		groups, err := b.rdb.XInfoGroups(ctx, b.store.Keys().Submissions()).Result()
		require.NoError(t, err)
		require.GreaterOrEqual(t, groups[0].Lag, int64(n-2*ahead-k*window), "the backlog is in the stream, never delivered")
	}
	mu.Lock()
	by := map[string]int{}
	for _, w := range sent {
		by[w]++
	}
	mu.Unlock()
	require.Positive(t, by["bl0"], "worker 0 sends /runs")
	require.Positive(t, by["bl1"], "worker 1 sends /runs")

	// The last job is still in the stream: canceled there, it ends
	// CANCELED once read, with no /run.
	last := fmt.Sprintf("bl-%04d", n-1)
	require.Empty(t, b.get(t, last).Owner, "the last job waits in the stream, owned by nobody")
	_, err := b.store.Cancel(context.Background(), last, streams.CancelOpts{})
	require.NoError(t, err)
	budget.Add(1 << 40) // Runpod's limit lifted: the backlog drains
	b.waitState(t, last, workflow.StateCanceled, 2*time.Minute)
	for i := 0; i < n-1; i += 97 {
		b.waitState(t, fmt.Sprintf("bl-%04d", i), workflow.StateCompleted, 2*time.Minute)
	}
	mu.Lock()
	_, ran := sent[last]
	mu.Unlock()
	require.False(t, ran, "the canceled job never reached Runpod")
}

// TestBacklogBoundWithTakeover: jobs taken over from a crashed worker
// before their /run are not held back by SubmitAhead (they must be
// resumed), but they count against it: once they are in, the fetcher reads
// no more of the stream until /runs are sent.
func TestBacklogBoundWithTakeover(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const ahead = 5
	for i := range ahead {
		b.submit(t, fmt.Sprintf("dead-%d", i), `{"tag":"dead","mock_delay":10,"mock_return":1}`, 0)
	}
	// A worker that admitted them and died before any /run.
	require.NoError(t, b.store.EnsureGroup(ctx))
	msgs, err := b.store.Read(ctx, "crashed", ahead, 0)
	require.NoError(t, err)
	require.Len(t, msgs, ahead)
	reqs := make([]streams.AdmitRequest, len(msgs))
	for i, m := range msgs {
		reqs[i] = streams.NewAdmitRequest(m, 1<<20)
	}
	_, err = b.store.Admit(ctx, reqs, streams.AdmitOpts{Consumer: "crashed", MaxDeliveries: 5, ResultTTL: time.Hour, Now: time.Now()})
	require.NoError(t, err)
	for i := range 2 * ahead {
		b.submit(t, fmt.Sprintf("new-%d", i), `{"tag":"new","mock_delay":10,"mock_return":1}`, 0)
	}
	var budget atomic.Int64 // no /run budget: nothing is sent
	var mu sync.Mutex
	cfg := b.config("heir")
	cfg.Runpod = budgetRunpod{fakeRunpod: b.rp, budget: &budget, mu: &mu, sent: map[string]string{}, name: "heir"}
	cfg.Concurrency = 2
	cfg.SubmitAhead = ahead
	w := b.start(t, cfg)
	unsent := func() int { return w.w.Stats().InFlightByState[workflow.StateSubmitted] }
	require.Eventually(t, func() bool { return unsent() == ahead }, time.Minute, 5*time.Millisecond, "the fetcher fills its bound")
	require.Eventually(t, func() bool {
		_, err := w.w.claimPass(ctx)
		return err == nil && w.w.Stats().Reclaimed == ahead
	}, time.Minute, 50*time.Millisecond, "the crashed worker's jobs are taken over")
	require.Equal(t, 2*ahead, unsent(), "taken-over jobs are unsent too")
	groups, err := b.rdb.XInfoGroups(ctx, b.store.Keys().Submissions()).Result()
	require.NoError(t, err)
	require.EqualValues(t, ahead, groups[0].Lag, "the fetcher read only its bound of new entries")
	runs, _, _ := b.rp.counts()
	require.Zero(t, runs)

	budget.Add(1 << 40)
	for i := range ahead {
		b.waitState(t, fmt.Sprintf("dead-%d", i), workflow.StateCompleted, time.Minute)
	}
	for i := range 2 * ahead {
		b.waitState(t, fmt.Sprintf("new-%d", i), workflow.StateCompleted, time.Minute)
	}
	runs, _, _ = b.rp.counts()
	require.Equal(t, 3*ahead, runs, "each job sent once")
}
