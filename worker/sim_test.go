package worker

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestWithSimulator runs jobs end to end through the real HTTP client
// (activities) against the Runpod simulator: the same code path as
// cmd/worker --dev. Jobs complete, fail and get canceled as the simulator
// says, and the simulator saw exactly one /run per job.
func TestWithSimulator(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep-test", APIKey: "sim-key", GPUWorkers: 16})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	httpClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(httpClient.CloseIdleConnections)
	rp, err := activities.New(activities.Config{APIKey: "sim-key", EndpointID: "ep-test", BaseURL: srv.URL, HTTPClient: httpClient})
	require.NoError(t, err)

	for i := 0; i < 2; i++ {
		cfg := b.config(fmt.Sprintf("sim%d", i))
		cfg.Runpod = rp
		b.start(t, cfg)
	}
	const n = 60
	ids := jobIDs("sim", n)
	for i, id := range ids {
		b.submit(t, id, fmt.Sprintf(`{"mock_delay":%d,"mock_return":{"i":%d}}`, 30+i%40, i), 0)
	}
	b.submit(t, "sim-fail", `{"mock_delay":20,"mock_error":"handler exploded"}`, 0)
	b.submit(t, "sim-cancel", `{"mock_delay":60000}`, 0)

	for i, id := range ids {
		rec := b.waitState(t, id, workflow.StateCompleted, 20*time.Second)
		require.JSONEq(t, fmt.Sprintf(`{"i":%d}`, i), string(rec.Output))
	}
	rec := b.waitState(t, "sim-fail", workflow.StateFailed, 10*time.Second)
	require.Contains(t, rec.Error, "handler exploded")

	rec = b.waitRecord(t, "sim-cancel", 10*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	_, err = b.store.Cancel(t.Context(), "sim-cancel", streams.CancelOpts{})
	require.NoError(t, err)
	b.waitState(t, "sim-cancel", workflow.StateCanceled, 5*time.Second)
	info, ok := srv.Sim.Job(rec.RunpodID)
	require.True(t, ok)
	require.Equal(t, workflow.RunpodCancelled, info.Status, "canceled on the simulator too")

	require.Len(t, srv.Sim.Jobs(), n+2, "exactly one /run per job")
	evs := b.events(t)
	for _, id := range append(ids, "sim-fail", "sim-cancel") {
		cnt, _ := terminalEvents(evs[id])
		require.Equal(t, 1, cnt, "job %s: terminal events", id)
	}
}

// simRunpod starts a simulator with cfg and returns it with a real HTTP
// client (package activities) in front of it.
func simRunpod(t *testing.T, cfg runpodsim.Config) (*runpodsim.Server, workflow.Runpod) {
	t.Helper()
	cfg.EndpointID, cfg.APIKey = "ep-test", "sim-key"
	srv, err := runpodsim.Serve("127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	httpClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(httpClient.CloseIdleConnections)
	rp, err := activities.New(activities.Config{APIKey: "sim-key", EndpointID: "ep-test", BaseURL: srv.URL, HTTPClient: httpClient})
	require.NoError(t, err)
	return srv, rp
}

// offsetClock is a worker clock the test can move forward.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) now() time.Time      { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) add(d time.Duration) { c.off.Add(int64(d)) }

// TestFinishedJustBeforeCancelKeepsItsOutput: a job completes on Runpod
// after the worker's last poll and before its /cancel (a cancel request, or
// our deadline). What Runpod really finished as wins, with its output,
// whether the simulator answers /cancel on a finished job with its status
// (no output) or with 400. The simulator's manual clock finishes the job
// exactly when the test says; the worker never polls in between (its first
// poll is an hour away), so nothing depends on timing.
func TestFinishedJustBeforeCancelKeepsItsOutput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		terminalStatus int
		deadline       bool
	}{
		{"cancel/answer200", 0, false},
		{"cancel/answer400", http.StatusBadRequest, false},
		{"deadline/answer200", 0, true},
		{"deadline/answer400", http.StatusBadRequest, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			clock := runpodsim.NewManualClock(time.Now())
			srv, rp := simRunpod(t, runpodsim.Config{Clock: clock, CancelTerminalStatus: tc.terminalStatus})
			wclock := &offsetClock{}
			cfg := b.config("w1")
			cfg.Runpod = rp
			cfg.Now = wclock.now
			cfg.Poll = workflow.PollPolicy{Initial: time.Hour, Max: time.Hour}
			r := b.start(t, cfg)

			timeout := time.Duration(0)
			if tc.deadline {
				timeout = time.Hour
			}
			b.submit(t, "fin", `{"mock_delay":5000,"mock_return":{"answer":42}}`, timeout)
			rec := b.waitRecord(t, "fin", 10*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
			clock.Advance(10 * time.Second) // the job runs and completes on Runpod
			info, ok := srv.Sim.Job(rec.RunpodID)
			require.True(t, ok)
			require.Equal(t, workflow.RunpodCompleted, info.Status)

			if tc.deadline {
				wclock.add(2 * time.Hour)
				r.w.wakeDispatch <- struct{}{} // re-read the heap with the new time
			} else {
				_, err := b.store.Cancel(t.Context(), "fin", streams.CancelOpts{})
				require.NoError(t, err)
			}
			rec = b.waitRecord(t, "fin", 10*time.Second, func(r streams.Record) bool { return workflow.State(r.State).Terminal() })
			require.Equal(t, string(workflow.StateCompleted), rec.State, "error %q", rec.Error)
			require.JSONEq(t, `{"answer":42}`, string(rec.Output))
			require.Equal(t, string(workflow.RunpodCompleted), rec.RunpodStatus)
		})
	}
}

// TestUncertainRunIsVisible: the simulator creates the Runpod job, then
// answers /run with 502 (a gateway lost the answer). Nobody crashed, yet the
// default policy (resubmit) sends the job again while the first Runpod job
// runs on. That possible duplicate is visible: one submit_uncertain event
// for attempt 1, the record's attempts (2) and uncertain count (1), and the
// worker's counter and hook.
func TestUncertainRunIsVisible(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, rp := simRunpod(t, runpodsim.Config{})
	require.NoError(t, srv.Sim.SetFaults(runpodsim.OpRun, runpodsim.Faults{Script: []int{http.StatusBadGateway}, After: true}))
	cfg := b.config("w")
	cfg.Runpod = rp
	var hooked atomic.Int64
	cfg.Hooks.OnSubmitUncertain = func(_ string, attempt int) { hooked.Add(int64(attempt)) }
	r := b.start(t, cfg)

	b.submit(t, "unc", `{"mock_delay":10,"mock_return":{"ok":1}}`, 0)
	rec := b.waitState(t, "unc", workflow.StateCompleted, 20*time.Second)
	require.Len(t, srv.Sim.Jobs(), 2, "the uncertain /run created a Runpod job, and the resubmit another")
	require.Equal(t, 2, rec.Attempts)
	require.Equal(t, 1, rec.Uncertain)
	require.Equal(t, 1, rec.UncertainAttempt)
	var unc []streams.Event
	for _, e := range b.events(t)["unc"] {
		if e.Type == streams.EventSubmitUncertain {
			unc = append(unc, e)
		}
	}
	require.Len(t, unc, 1)
	require.Equal(t, 1, unc[0].Payload.Attempt)
	require.EqualValues(t, 1, r.w.Stats().SubmitUncertain)
	require.EqualValues(t, 1, hooked.Load())
}
