package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestDashboardFlag: --dashboard serves the web dashboard under /dashboard/
// on --http-addr, beside /metrics; its pages show the worker's jobs and
// neither the Redis password nor the Runpod key, and a cross-origin POST is
// refused. Without --http-addr, --dashboard is a usage error.
func TestDashboardFlag(t *testing.T) {
	t.Parallel()
	ns := redistest.Namespace(t)
	user, password := redistest.ACLUser(t, ns)
	sim := serveSim(t)
	s := start(t, []string{"--redis-url", fmt.Sprintf("redis://%s:%s@%s/0", user, password, redistest.Addr()),
		"--namespace", ns, "--runpod-endpoint-id", "ep-good", "--runpod-base-url", sim.URL,
		"--http-addr", "127.0.0.1:0", "--dashboard", "--shutdown-timeout", "1s"},
		map[string]string{"RUNPOD_API_KEY": simKey})
	base := "http://" + find(t, s.stderr, regexp.MustCompile(`http_addr=(127\.0\.0\.1:\d+)`), s)
	find(t, s.stderr, regexp.MustCompile(`(worker started)`), s)

	cl, err := client.New(redistest.Client(t), client.Config{Namespace: ns})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = cl.Submit(ctx, client.SubmitOptions{ClientJobID: "dash-flag-1", Input: json.RawMessage(`{"x":1}`)})
	require.NoError(t, err)
	res, err := cl.AwaitResult(ctx, "dash-flag-1")
	require.NoError(t, err)
	require.Equal(t, workflow.StateCompleted, res.Status)

	for _, p := range []string{"/dashboard/", "/dashboard", "/dashboard/jobs", "/dashboard/job?id=dash-flag-1", "/dashboard/dead", "/dashboard/assets/app.js"} {
		code, body := get(t, base+p)
		require.Equal(t, http.StatusOK, code, "%s: %s", p, body)
		for _, secret := range []string{password, simKey} {
			require.NotContains(t, body, secret, p)
		}
		if strings.HasPrefix(p, "/dashboard/job") {
			require.Contains(t, body, "dash-flag-1", p)
			require.Contains(t, body, `href="/dashboard/`, "links stay under the mount point")
		}
	}
	code, _ := get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)

	req, err := http.NewRequest(http.MethodPost, base+"/dashboard/action",
		strings.NewReader(url.Values{"id": {"dash-flag-1"}, "op": {"retry"}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	s.stop(t)
	for _, out := range []string{s.stdout.String(), s.stderr.String()} {
		require.NotContains(t, out, password)
		require.NotContains(t, out, simKey)
	}

	err = runEnv(context.Background(), []string{"--redis-url", "redis://" + redistest.Addr() + "/0", "--namespace", ns,
		"--runpod-endpoint-id", "ep-good", "--runpod-base-url", sim.URL, "--http-addr", "", "--dashboard"},
		env(map[string]string{"RUNPOD_API_KEY": simKey}), &strings.Builder{}, &strings.Builder{})
	var fe *flagError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "dashboard", fe.Flag)
}
