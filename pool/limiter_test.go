package pool

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// scaledLimits are Runpod's limits cut tenfold, as the tests' simulator
// enforces them.
var scaledLimits = map[string]activities.RateLimit{
	activities.OpRun:    {Requests: 100, Per: 10 * time.Second},
	activities.OpStatus: {Requests: 200, Per: 10 * time.Second},
	activities.OpCancel: {Requests: 10, Per: 10 * time.Second},
}

// poolEnv is a simulator on a manual clock and n worker processes' Runpod
// clients, each with its own pool.Limiter over one Redis namespace. The
// test moves the clock, so nothing depends on the machine's speed.
type poolEnv struct {
	t        *testing.T
	clock    *runpodsim.ManualClock
	srv      *runpodsim.Server
	store    *streams.Store
	clients  []*activities.Client
	limiters []*Limiter
	jobID    string // a Runpod job to poll
}

func newPoolEnv(t *testing.T, n int, mod func(*Config)) *poolEnv {
	t.Helper()
	clock := runpodsim.NewManualClock(time.UnixMilli(1_800_000_000_000))
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{
		EndpointID: "ep-pool", APIKey: "sim-key", Clock: clock,
		RateLimits:          map[string]int{runpodsim.OpRun: 100, runpodsim.OpStatus: 200, runpodsim.OpCancel: 10},
		RateLimitRetryAfter: "auto",
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	rdb, ns := redistest.New(t)
	store, err := streams.New(rdb, streams.Config{Namespace: ns})
	require.NoError(t, err)
	e := &poolEnv{t: t, clock: clock, srv: srv, store: store}
	for i := range n {
		cfg := Config{Store: store, EndpointID: "ep-pool", InstanceID: fmt.Sprintf("w%d", i),
			Limits: scaledLimits, Now: clock.Now, SharedNow: clock.Now, BreakerFailures: 5, BreakerOpenTimeout: 10 * time.Second}
		if mod != nil {
			mod(&cfg)
		}
		l, err := New(cfg)
		require.NoError(t, err)
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		c, err := activities.New(activities.Config{
			APIKey: "sim-key", EndpointID: "ep-pool", BaseURL: srv.URL,
			HTTPClient: &http.Client{Transport: tr}, Limiter: l,
			MaxAttempts: 1,
		})
		require.NoError(t, err)
		e.clients = append(e.clients, c)
		e.limiters = append(e.limiters, l)
	}
	job, err := e.clients[0].Run(context.Background(), workflow.RunRequest{Input: []byte(`{"mock_delay":600000000}`)})
	require.NoError(t, err)
	e.jobID = job.ID
	return e
}

// round lets every process make as many /status calls as its budget
// grants right now, the way the worker does (Reserve, then a reserved
// call), and returns the calls made and how many of them failed.
func (e *poolEnv) round(perProcess int) (calls, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range e.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perProcess {
				if c.Reserve(context.Background(), activities.OpStatus) > 0 {
					return
				}
				_, err := c.Status(workflow.WithReserved(context.Background()), e.jobID)
				mu.Lock()
				calls++
				if err != nil {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return calls, failed
}

func (e *poolEnv) stats() runpodsim.Stats { return e.srv.Sim.Stats() }

// TestPoolStaysWithinLimitInEveryWindow: four processes that each want far
// more /status calls than the pool may make stay, together, within the
// simulator's limit (200 per 10 s) in every window, with no 429 at all, and
// use most of the budget.
func TestPoolStaysWithinLimitInEveryWindow(t *testing.T) {
	t.Parallel()
	e := newPoolEnv(t, 4, nil)
	const step = 100 * time.Millisecond
	base := e.stats().Requests[runpodsim.OpStatus]
	var perWindow []int64
	for w := range 5 {
		for range int(10 * time.Second / step) {
			e.round(50)
			e.clock.Advance(step)
		}
		n := e.stats().Requests[runpodsim.OpStatus] - base
		base += n
		perWindow = append(perWindow, n)
		require.LessOrEqual(t, n, int64(200), "window %d", w)
	}
	st := e.stats()
	require.Zero(t, st.RateLimited[runpodsim.OpStatus], "429s; windows %v", perWindow)
	for w, n := range perWindow[1:] {
		require.GreaterOrEqual(t, n, int64(160), "window %d uses most of the 180 granted; windows %v", w+1, perWindow)
	}
	t.Logf("status calls per 10 s window (limit 200, budget 180): %v", perWindow)
}

// TestPoolThrottleReachesEveryProcess: one process's 429 with a Retry-After
// stops every process until it ends (none of them sees a 429 itself), and
// the pool's budget is halved, recovering gradually.
func TestPoolThrottleReachesEveryProcess(t *testing.T) {
	t.Parallel()
	var factors []float64
	var mu sync.Mutex
	e := newPoolEnv(t, 3, func(c *Config) {
		c.OnThrottle = func(_ string, f float64) { mu.Lock(); factors = append(factors, f); mu.Unlock() }
	})
	e.clock.Advance(10 * time.Second) // a full bucket
	require.NoError(t, e.srv.Sim.SetFaults(runpodsim.OpStatus, runpodsim.Faults{Script: []int{429}, Retry429After: "4"}))
	_, err := e.clients[0].Status(context.Background(), e.jobID)
	require.ErrorContains(t, err, "429")
	require.Equal(t, []float64{0.5}, factors)

	for i, c := range e.clients {
		d := c.Reserve(context.Background(), activities.OpStatus)
		require.Equal(t, 4*time.Second, d, "process %d waits out the Retry-After", i)
	}
	before := e.stats().Requests[runpodsim.OpStatus]
	e.clock.Advance(4 * time.Second)
	// The next window: half the budget, plus what it regained meanwhile.
	var calls int
	for range 100 {
		n, _ := e.round(50)
		calls += n
		e.clock.Advance(100 * time.Millisecond)
	}
	require.Equal(t, int64(calls), e.stats().Requests[runpodsim.OpStatus]-before)
	require.Less(t, calls, 180*3/4, "the pool runs at a lowered budget")
	require.Greater(t, calls, 180/2-20)
	require.Zero(t, e.stats().RateLimited[runpodsim.OpStatus])
	// It recovers: a minute later the budget is whole again.
	e.clock.Advance(time.Minute)
	calls = 0
	for range 100 {
		n, _ := e.round(50)
		calls += n
		e.clock.Advance(100 * time.Millisecond)
	}
	require.Greater(t, calls, 160)
}

// TestPoolBreakerSingleProbe: the simulator refuses every call for a
// minute. The pool opens its circuit after BreakerFailures failures, makes
// one probe per open interval for all processes, and is working again
// within one probe interval after the outage ends.
func TestPoolBreakerSingleProbe(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	changes := map[string]int{}
	e := newPoolEnv(t, 4, func(c *Config) {
		c.OnBreakerStateChange = func(_, _, to string) { mu.Lock(); changes[to]++; mu.Unlock() }
	})
	e.clock.Advance(10 * time.Second)
	require.NoError(t, e.srv.Sim.SetFaults(runpodsim.AllOps, runpodsim.Faults{Status: map[int]float64{503: 1}}))
	before := e.stats()
	const step = 100 * time.Millisecond
	var outageCalls int
	for range int(time.Minute / step) {
		n, _ := e.round(50)
		outageCalls += n
		e.clock.Advance(step)
	}
	st := e.stats()
	calls := st.Requests[runpodsim.OpStatus] - before.Requests[runpodsim.OpStatus]
	require.Equal(t, int64(outageCalls), calls)
	// Up to the threshold (5) plus the tokens processes held when it
	// opened (at most a batch each), then one probe per 10 s: 6 in a minute.
	require.LessOrEqual(t, calls, int64(5+4*BatchDefault+6), "calls during the outage")
	require.GreaterOrEqual(t, calls, int64(5+5), "a probe per interval")
	for i, c := range e.clients {
		require.NotEqual(t, streams.BreakerClosed, c.BreakerState(), "process %d", i)
	}
	t.Logf("calls during a 60 s outage with 4 processes: %d", calls)

	e.srv.Sim.ClearFaults()
	rounds := 0
	for ; rounds < 1000; rounds++ {
		n, failed := e.round(50)
		if n > failed {
			break
		}
		e.clock.Advance(step)
	}
	require.LessOrEqual(t, time.Duration(rounds)*step, 10*time.Second, "work resumes within one probe interval")
	for range 5 { // every process learns the circuit closed at its next grant
		e.round(50)
		e.clock.Advance(BatchTTLDefault)
	}
	for i, c := range e.clients {
		require.Equal(t, streams.BreakerClosed, c.BreakerState(), "process %d", i)
	}
	var types []string
	evs, err := e.store.ReadEvents(context.Background(), "0", 100, 0)
	require.NoError(t, err)
	for _, ev := range evs {
		types = append(types, ev.State)
	}
	require.Equal(t, "open", types[0])
	require.Equal(t, "closed", types[len(types)-1])
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 4, changes["closed"], "each process saw the circuit close")
}
