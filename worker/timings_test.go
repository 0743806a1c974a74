package worker

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestOutcomeTimingsFromSimulator: a job run through the real client
// against the simulator ends with Runpod's delayTime, executionTime and
// workerId on its record and terminal event, exactly as the simulator
// measured them (queue wait including a cold start; run time), the
// finalizing worker named, and the endpoint's GPU counter holding the sum
// of the runs' executionTime.
func TestOutcomeTimingsFromSimulator(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep-t", APIKey: "sim-key", GPUWorkers: 2,
		ColdStart: 150 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	httpClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(httpClient.CloseIdleConnections)
	rp, err := activities.New(activities.Config{APIKey: "sim-key", EndpointID: "ep-t", BaseURL: srv.URL, HTTPClient: httpClient})
	require.NoError(t, err)
	cfg := b.config("timer")
	cfg.Runpod, cfg.EndpointID = rp, "ep-t"
	b.start(t, cfg)

	b.submit(t, "t-ok", `{"mock_delay":300,"mock_return":"done"}`, 0)
	b.submit(t, "t-fail", `{"mock_delay":200,"mock_error":"nope"}`, 0)
	var sum int64
	for id, st := range map[string]workflow.State{"t-ok": workflow.StateCompleted, "t-fail": workflow.StateFailed} {
		rec := b.waitState(t, id, st, time.Minute)
		info, ok := srv.Sim.Job(rec.RunpodID)
		require.True(t, ok)
		require.Equal(t, info.StartedAt.Sub(info.CreatedAt).Milliseconds(), rec.DelayMs, "delayTime: queue wait, cold start included")
		require.GreaterOrEqual(t, rec.DelayMs, int64(150))
		require.Equal(t, info.FinishedAt.Sub(info.StartedAt).Milliseconds(), rec.ExecMs, "executionTime: the run")
		require.NotZero(t, rec.ExecMs)
		require.Equal(t, info.WorkerID, rec.RunpodWorkerID)
		require.Equal(t, "timer", rec.FinalizedBy)
		all, err := b.store.ReadEvents(t.Context(), "0", 1000, 0)
		require.NoError(t, err)
		var last streams.Event
		for _, ev := range all {
			if ev.JobID == id {
				last = ev
			}
		}
		require.Equal(t, st, workflow.State(last.State))
		require.Equal(t, rec.ExecMs, last.Payload.ExecMs)
		require.Equal(t, rec.DelayMs, last.Payload.DelayMs)
		require.Equal(t, info.WorkerID, last.Payload.RunpodWorkerID)
		require.Equal(t, "timer", last.Payload.FinalizedBy)
		sum += rec.ExecMs
	}
	usage, err := b.store.GPUUsage(t.Context())
	require.NoError(t, err)
	require.Equal(t, sum, usage["ep-t"].Ms)
	require.EqualValues(t, 2, usage["ep-t"].Runs)
}
