package worker

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestCancelStormDoesNotStarveOtherCalls: 200 jobs reach a shared deadline
// at once, so each needs a /cancel, under a cancel budget of 10 per 10 s
// (Runpod's, cut tenfold) and 4 executor slots. An unrelated short job
// submitted after them completes after a few polls, never deferred, while
// the storm is still going: a /cancel with no budget is rescheduled instead
// of holding a slot. Before pacing, the four slots sat in the limiter's
// Wait for a /cancel token each, and the short job could not even be sent
// until nearly every cancel had gone out (220 s).
func TestCancelStormDoesNotStarveOtherCalls(t *testing.T) {
	t.Parallel()
	// Only /cancel is tight (Runpod's 100 per 10 s cut tenfold), so the
	// storm jobs reach Runpod quickly.
	cancelStorm(t, map[string]activities.RateLimit{
		activities.OpRun:    {Requests: 1000, Per: 10 * time.Second},
		activities.OpStatus: {Requests: 2000, Per: 10 * time.Second},
		activities.OpCancel: {Requests: 10, Per: 10 * time.Second},
	}, workflow.PollPolicy{Initial: 2 * time.Second, Max: 2 * time.Second}) // 100 polls/s for 200 jobs, within the budget
}

// TestCancelStormAtScaledLimits: the same storm with every limit cut
// tenfold (/run 100, /status 200, /cancel 10 per 10 s), as in the issue.
func TestCancelStormAtScaledLimits(t *testing.T) {
	t.Parallel()
	cancelStorm(t, map[string]activities.RateLimit{
		activities.OpRun:    {Requests: 100, Per: 10 * time.Second},
		activities.OpStatus: {Requests: 200, Per: 10 * time.Second},
		activities.OpCancel: {Requests: 10, Per: 10 * time.Second},
	}, workflow.PollPolicy{Initial: 2 * time.Second, Max: 15 * time.Second}) // about 13 polls/s for 200 jobs: within the 19 granted
}

// cancelStorm: 200 jobs reach a shared deadline under limits; an unrelated
// short job submitted during the storm completes after a few polls.
func cancelStorm(t *testing.T, limits map[string]activities.RateLimit, poll workflow.PollPolicy) {
	b := setup(t)
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep-test", APIKey: "sim-key", GPUWorkers: 256})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	httpClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(httpClient.CloseIdleConnections)
	rp, err := activities.New(activities.Config{APIKey: "sim-key", EndpointID: "ep-test", BaseURL: srv.URL,
		HTTPClient: httpClient, Limiter: activities.NewLocalLimiter(limits)})
	require.NoError(t, err)

	var mu sync.Mutex
	polls, deferred := map[string]int{}, map[string]int{}
	cfg := b.config("w1")
	cfg.Runpod = rp
	cfg.Concurrency = 4
	cfg.Poll = poll
	cfg.StepHook = func(id, point string) {
		if point == PointPolling {
			mu.Lock()
			polls[id]++
			mu.Unlock()
		}
	}
	cfg.Hooks.OnDeferred = func(id, op string, _ time.Duration) {
		mu.Lock()
		deferred[id+" "+op]++
		mu.Unlock()
	}
	b.start(t, cfg)

	const n = 200
	ids := jobIDs("storm", n)
	// Far enough for all of them to be on Runpod first (a job still unsent
	// at its deadline ends TIMED_OUT without a /cancel: fewer in the storm).
	run := limits[activities.OpRun]
	send := time.Duration(n) * run.Per / time.Duration(run.Requests) // the /run budget's pace for the storm
	deadline := 10*time.Second + 2*send
	for _, id := range ids {
		b.submit(t, id, `{"mock_delay":600000}`, deadline)
	}
	for _, id := range ids {
		b.waitRecord(t, id, deadline+30*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	}
	// The storm: wait for the first /cancel of a deadline.
	require.Eventually(t, func() bool { return srv.Sim.Stats().Requests[runpodsim.OpCancel] > 0 },
		30*time.Second, 20*time.Millisecond)

	b.submit(t, "quick", `{"mock_delay":100,"mock_return":{"ok":true}}`, 0)
	if !waitFor(60*time.Second, func() bool { return b.get(t, "quick").State == string(workflow.StateCompleted) }) {
		mu.Lock()
		p, d := polls["quick"], deferred["quick run"]+deferred["quick status"]
		mu.Unlock()
		t.Fatalf("quick did not complete: record %+v, polls %d, deferred %d, sim %+v", b.get(t, "quick"), p, d, srv.Sim.Stats())
	}

	done := 0
	for _, id := range ids {
		if workflow.State(b.get(t, id).State).Terminal() {
			done++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("quick completed after %d polls; %d of %d storm jobs ended by then; %d /cancel sent",
		polls["quick"], done, n, srv.Sim.Stats().Requests[runpodsim.OpCancel])
	require.Less(t, done, n/2, "the short job finished while the cancel storm was still going")
	require.LessOrEqual(t, polls["quick"], 5, "a few poll intervals")
	require.Zero(t, deferred["quick "+workflow.OpRun]+deferred["quick "+workflow.OpStatus], "the short job's calls were never deferred")
	total := 0
	for k, v := range deferred {
		if len(k) > 6 && k[len(k)-6:] == "cancel" {
			total += v
		}
	}
	require.Positive(t, total, "cancels were deferred, not waited for")
}

// waitFor polls cond until it holds or within passes.
func waitFor(within time.Duration, cond func() bool) bool {
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
