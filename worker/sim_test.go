package worker

import (
	"fmt"
	"net/http"
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
	_, err = b.store.Cancel(t.Context(), "sim-cancel", time.Now())
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
