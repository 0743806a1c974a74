package worker

import (
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestMisconfiguredWorkerLeavesJobsAlone: a worker whose API key or endpoint
// id Runpod refuses (401, or 404 on /run) must not fail the jobs: 200 queued
// jobs stay unfailed, the worker's Run ends with ErrWorkerFault after handing
// them off, and a healthy worker then completes every one of them, each with
// one terminal event and no extra delivery counted.
func TestMisconfiguredWorkerLeavesJobsAlone(t *testing.T) {
	t.Parallel()
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep-good", APIKey: "good-key", GPUWorkers: 64})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	httpClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(httpClient.CloseIdleConnections)
	client := func(key, endpoint string) workflow.Runpod {
		rp, err := activities.New(activities.Config{APIKey: key, EndpointID: endpoint, BaseURL: srv.URL, HTTPClient: httpClient})
		require.NoError(t, err)
		return rp
	}

	for _, tc := range []struct{ name, key, endpoint string }{
		{"WrongKey", "wrong-key", "ep-good"},
		{"WrongEndpoint", "good-key", "ep-nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			const n = 200
			ids := jobIDs("mis", n)
			for _, id := range ids {
				b.submit(t, id, `{"mock_delay":5}`, 0)
			}
			cfg := b.config("bad-" + tc.name)
			cfg.Runpod = client(tc.key, tc.endpoint)
			// No lease of its own may lapse, however slow the machine: a
			// claim pass would re-admit the entry (a second counted delivery).
			cfg.MinIdle = time.Minute
			bad := b.start(t, cfg)
			var runErr error
			select {
			case runErr = <-bad.done:
			case <-time.After(30 * time.Second):
				t.Fatal("the misconfigured worker kept running")
			}
			bad.once.Do(func() {}) // already stopped: the cleanup must not wait again
			require.ErrorIs(t, runErr, workflow.ErrWorkerFault)
			for _, id := range ids {
				rec := b.get(t, id)
				require.False(t, workflow.State(rec.State).Terminal(), "job %s ended %s: %s", id, rec.State, rec.Error)
			}

			// Entries the bad worker read but never admitted wait MinIdle;
			// the handed-off ones are taken at once. Age the former here
			// instead of waiting, so both workers can have a MinIdle no
			// loaded machine outlasts: with 1 s, an entry of a worker's own
			// (read but not yet admitted, or a beat late) could go idle
			// past it before its /run was recorded, and a claim pass (its
			// own first one, or the test's below) re-admitted it: a second
			// counted delivery.
			keys := b.store.Keys()
			pend, err := b.rdb.XPendingExt(t.Context(), &redis.XPendingExtArgs{Stream: keys.Submissions(),
				Group: b.store.Group(), Start: "-", End: "+", Count: 10 * n, Consumer: cfg.InstanceID}).Result()
			require.NoError(t, err)
			for _, p := range pend {
				require.NoError(t, b.rdb.Do(t.Context(), "XCLAIM", keys.Submissions(), b.store.Group(), cfg.InstanceID, 0, p.ID,
					"IDLE", 3600000, "JUSTID").Err())
			}
			good := b.config("good-" + tc.name)
			good.Runpod = client("good-key", "ep-good")
			good.MinIdle = time.Minute
			g := b.start(t, good)
			_, err = g.w.RecoverNow(t.Context())
			require.NoError(t, err)
			for _, id := range ids {
				rec := b.waitRecord(t, id, 30*time.Second, func(r streams.Record) bool {
					if workflow.State(r.State).Terminal() {
						return true
					}
					_, _ = g.w.RecoverNow(t.Context())
					return false
				})
				require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
				require.Equal(t, 1, rec.Deliveries, "job %s: the handoff must not count a delivery", id)
			}
			evs := b.events(t)
			for _, id := range ids {
				cnt, _ := terminalEvents(evs[id])
				require.Equal(t, 1, cnt, "job %s: terminal events", id)
			}
		})
	}
}

// TestWrongEndpointWhilePolling: jobs already on Runpod, taken over by a
// worker configured with a wrong endpoint id: its /status answers 404, which
// alone would mean "job unknown"; the endpoint check (GET /health, also 404)
// shows it is the worker's fault, so no job fails, and a healthy worker then
// completes them.
func TestWrongEndpointWhilePolling(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep-good", APIKey: "good-key", GPUWorkers: 64})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	httpClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(httpClient.CloseIdleConnections)
	client := func(endpoint string) workflow.Runpod {
		rp, err := activities.New(activities.Config{APIKey: "good-key", EndpointID: endpoint, BaseURL: srv.URL, HTTPClient: httpClient})
		require.NoError(t, err)
		return rp
	}
	const n = 20
	ids := jobIDs("poll", n)
	for _, id := range ids {
		b.submit(t, id, `{"mock_delay":3000}`, 0)
	}
	first := b.config("first")
	first.Runpod = client("ep-good")
	r1 := b.start(t, first)
	for _, id := range ids {
		b.waitRecord(t, id, 20*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	}
	r1.stop(t) // hands the jobs off

	bad := b.config("bad")
	bad.Runpod = client("ep-nope")
	rb := b.start(t, bad)
	_, err = rb.w.RecoverNow(t.Context())
	require.NoError(t, err)
	select {
	case err := <-rb.done:
		require.ErrorIs(t, err, workflow.ErrWorkerFault)
	case <-time.After(30 * time.Second):
		t.Fatal("the misconfigured worker kept running")
	}
	rb.once.Do(func() {})
	for _, id := range ids {
		rec := b.get(t, id)
		require.False(t, workflow.State(rec.State).Terminal(), "job %s ended %s: %s", id, rec.State, rec.Error)
	}

	good := b.config("good")
	good.Runpod = client("ep-good")
	g := b.start(t, good)
	for _, id := range ids {
		rec := b.waitRecord(t, id, 30*time.Second, func(r streams.Record) bool {
			if workflow.State(r.State).Terminal() {
				return true
			}
			_, _ = g.w.RecoverNow(t.Context())
			return false
		})
		require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		require.Equal(t, 1, rec.Attempts, "job %s: polled again, never resubmitted", id)
	}
}
