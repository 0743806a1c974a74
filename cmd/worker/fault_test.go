package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

const simKey = "sim-good-key"

func serveSim(t *testing.T) *runpodsim.Server {
	t.Helper()
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep-good", APIKey: simKey, GPUWorkers: 64})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// TestStartChecksRunpod: a key Runpod refuses, or an endpoint it does not
// know, stops start-up under the flag to fix (exit status 2), before any job
// is taken.
func TestStartChecksRunpod(t *testing.T) {
	t.Parallel()
	srv := serveSim(t)
	for _, tc := range []struct{ key, endpoint, flag string }{
		{"wrong-key", "ep-good", "runpod-api-key"},
		{simKey, "ep-nope", "runpod-endpoint-id"},
	} {
		err := runEnv(context.Background(), []string{"--redis-url", "redis://" + redistest.Addr() + "/0",
			"--namespace", redistest.Namespace(t), "--runpod-endpoint-id", tc.endpoint, "--runpod-base-url", srv.URL,
			"--http-addr", ""}, env(map[string]string{"RUNPOD_API_KEY": tc.key}), io.Discard, io.Discard)
		var fe *flagError
		require.True(t, errors.As(err, &fe), "want a flag error, have %v", err)
		require.Equal(t, tc.flag, fe.Flag, "%v", err)
		require.Equal(t, 2, exitCode(err))
		require.NotContains(t, err.Error(), tc.key)
	}
}

// TestWorkerFaultLeavesJobs: Runpod starts refusing the key while the
// worker runs (the simulator answers 401 to everything). The worker logs at
// ERROR, turns unready (/readyz 503, worker_fault 1) and leaves 200 queued
// jobs unfailed; once Runpod accepts the key again it takes jobs again and
// completes every one.
func TestWorkerFaultLeavesJobs(t *testing.T) {
	t.Parallel()
	srv := serveSim(t)
	ns := redistest.Namespace(t)
	s := start(t, []string{"--redis-url", "redis://" + redistest.Addr() + "/0", "--namespace", ns,
		"--runpod-endpoint-id", "ep-good", "--runpod-base-url", srv.URL, "--http-addr", "127.0.0.1:0",
		"--poll-initial", "20ms", "--poll-max", "50ms", "--min-idle", "2s", "--claim-interval", "100ms",
		"--shutdown-timeout", "1s"},
		map[string]string{"RUNPOD_API_KEY": simKey})
	base := "http://" + find(t, s.stderr, regexp.MustCompile(`http_addr=(127\.0\.0\.1:\d+)`), s)
	require.Eventually(t, func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusOK },
		10*time.Second, 20*time.Millisecond)
	// The start-up /health check runs before the worker starts, and /readyz
	// may answer before it has: refusing the key earlier fails start-up.
	find(t, s.stderr, regexp.MustCompile(`(worker started)`), s)

	require.NoError(t, srv.Sim.SetFaults(runpodsim.AllOps, runpodsim.Faults{Status: map[int]float64{401: 1}}))
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
	defer rdb.Close()
	c, err := client.New(rdb, client.Config{Namespace: ns})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 200
	for i := range n {
		_, err := c.Submit(ctx, client.SubmitOptions{ClientJobID: fmt.Sprintf("f-%d", i), Input: map[string]any{"mock_delay": 5}})
		require.NoError(t, err)
	}

	var body readyBody
	require.Eventually(t, func() bool {
		code, text := get(t, base+"/readyz")
		if code != http.StatusServiceUnavailable {
			return false
		}
		require.NoError(t, json.Unmarshal([]byte(text), &body))
		return true
	}, 20*time.Second, 20*time.Millisecond, "unready once Runpod refuses the key")
	require.Equal(t, []string{"runpod_config"}, body.Failing)
	require.Equal(t, 1.0, scrape(t, base+"/metrics")[metricWorkerFault].value(t))
	require.Regexp(t, `\[ERROR\].*Runpod refuses this worker's API key or endpoint`, s.stderr.String())
	for i := range n {
		job, err := c.Get(ctx, fmt.Sprintf("f-%d", i))
		require.NoError(t, err)
		require.False(t, job.State.Terminal(), "job %s ended %s: %s", job.ID, job.State, job.Error)
	}

	require.NoError(t, srv.Sim.SetFaults(runpodsim.AllOps, runpodsim.Faults{}))
	for i := range n {
		res, err := c.AwaitResult(ctx, fmt.Sprintf("f-%d", i))
		require.NoError(t, err)
		require.Equal(t, workflow.StateCompleted, res.Status, "job %s: %s", res.ClientJobID, res.Error)
	}
	code, _ := get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 0.0, scrape(t, base+"/metrics")[metricWorkerFault].value(t))
	s.stop(t)
}

// TestThreeWorkersOneHost: the README's recipe, three workers on one host
// with the same flags and no --http-addr, must all run: the first takes the
// default port if it is free, the others fall back to a free port and log
// where they listen.
func TestThreeWorkersOneHost(t *testing.T) {
	t.Parallel()
	srv := serveSim(t)
	ns := redistest.Namespace(t)
	args := []string{"--redis-url", "redis://" + redistest.Addr() + "/0", "--namespace", ns,
		"--runpod-endpoint-id", "ep-good", "--runpod-base-url", srv.URL, "--shutdown-timeout", "1s"}
	addrs := map[string]bool{}
	var all []*started
	for range 3 {
		s := start(t, args, map[string]string{"RUNPOD_API_KEY": simKey})
		addr := find(t, s.stderr, regexp.MustCompile(`starting: .*http_addr=(\S+)`), s)
		require.NotContains(t, addrs, addr)
		addrs[addr] = true
		_, port, _ := splitHostPort(addr)
		code, _ := get(t, "http://127.0.0.1:"+port+"/healthz")
		require.Equal(t, http.StatusOK, code)
		all = append(all, s)
	}
	fallbacks := 0
	for _, s := range all {
		if regexp.MustCompile(`default --http-addr is in use.*http_addr=`).MatchString(s.stderr.String()) {
			fallbacks++
		}
	}
	require.GreaterOrEqual(t, fallbacks, 2, "at most one worker has the default port")
	for _, s := range all {
		// Stopped before it created its consumer group (a slow start), Run
		// rightly reports it never started: wait until it has.
		find(t, s.stderr, regexp.MustCompile(`(worker started)`), s)
		s.stop(t)
	}
}

func splitHostPort(addr string) (string, string, error) {
	re := regexp.MustCompile(`^(.*):(\d+)$`)
	m := re.FindStringSubmatch(addr)
	if m == nil {
		return "", "", fmt.Errorf("not host:port: %q", addr)
	}
	return m[1], m[2], nil
}

// TestReadyzUnreadyDuringStartCheck: while the start-up check of the key
// and endpoint is still running (Runpod holds GET /health until the test
// lets it answer), /readyz answers 503 "startup", not ready: a worker that
// may yet refuse to start takes no traffic. Once the check passed it turns
// ready.
func TestReadyzUnreadyDuringStartCheck(t *testing.T) {
	t.Parallel()
	srv := serveSim(t)
	release := make(chan struct{})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/health") {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		srv.Sim.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	s := start(t, []string{"--redis-url", "redis://" + redistest.Addr() + "/0", "--namespace", redistest.Namespace(t),
		"--runpod-endpoint-id", "ep-good", "--runpod-base-url", front.URL + "/v2", "--http-addr", "127.0.0.1:0",
		"--shutdown-timeout", "1s"},
		map[string]string{"RUNPOD_API_KEY": simKey})
	base := "http://" + find(t, s.stderr, regexp.MustCompile(`http_addr=(127\.0\.0\.1:\d+)`), s)
	code, text := get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, "%s", text)
	var body readyBody
	require.NoError(t, json.Unmarshal([]byte(text), &body))
	require.Equal(t, []string{"startup"}, body.Failing)
	require.Equal(t, "checking the Runpod key and endpoint", body.Checks["startup"])

	close(release)
	find(t, s.stderr, regexp.MustCompile(`(worker started)`), s)
	require.Eventually(t, func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusOK },
		20*time.Second, 20*time.Millisecond)
	s.stop(t)
}
