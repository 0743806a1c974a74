package worker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
	srv, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 2, ColdStart: 150 * time.Millisecond})
	cfg := b.config("timer")
	cfg.Runpod, cfg.EndpointID = rp, "ep-test"
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
	require.Equal(t, sum, usage["ep-test"].Ms)
	require.EqualValues(t, 2, usage["ep-test"].Runs)
}

// TestErrorObjectFromSimulator: a job whose handler returned an error object
// ends FAILED with that object as JSON on its record and its failed event
// (not JSON inside a string), the readable message beside it, and the API
// key the handler echoed inside the object redacted.
func TestErrorObjectFromSimulator(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 2})
	cfg := b.config("errs")
	cfg.Runpod = rp
	b.start(t, cfg)

	b.submit(t, "e-obj", `{"mock_delay":50,"mock_echo_key":true,"mock_error":{"code":"E42","message":"quota exceeded","env":"KEY=$RUNPOD_API_KEY"}}`, 0)
	rec := b.waitState(t, "e-obj", workflow.StateFailed, time.Minute)
	require.Equal(t, "quota exceeded", rec.Error)
	require.JSONEq(t, `{"code":"E42","message":"quota exceeded","env":"KEY=[REDACTED]"}`, string(rec.ErrorJSON))
	all, err := b.store.ReadEvents(t.Context(), "0", 1000, 0)
	require.NoError(t, err)
	last := all[len(all)-1]
	require.Equal(t, streams.EventFailed, last.Type)
	require.JSONEq(t, string(rec.ErrorJSON), string(last.Payload.ErrorJSON))
	require.NotContains(t, string(last.Payload.ErrorJSON)+last.Payload.Error, "sim-key")
}

// TestWebhookBodyRedacted: what Runpod echoes back in a webhook delivery is
// redacted as a /status answer is: the API key a handler put inside its
// error object never reaches the record or the events.
func TestWebhookBodyRedacted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, rp := simRunpod(t, runpodsim.Config{GPUWorkers: 4, DisableRateLimits: true})
	b.webhookWorker(t, "whred", rp, func(c *Config) { c.MinIdle = time.Minute })
	b.submit(t, "wr", `{"mock_delay":20,"mock_echo_key":true,"mock_error":{"message":"denied","env":"KEY=$RUNPOD_API_KEY"}}`, 0)
	rec := b.waitState(t, "wr", workflow.StateFailed, time.Minute)
	require.JSONEq(t, `{"message":"denied","env":"KEY=[REDACTED]"}`, string(rec.ErrorJSON))
	all, err := b.store.ReadEvents(t.Context(), "0", 1000, 0)
	require.NoError(t, err)
	for _, ev := range all {
		require.NotContains(t, string(ev.Payload.ErrorJSON)+ev.Payload.Error+string(ev.Payload.Output), "sim-key")
	}
}
