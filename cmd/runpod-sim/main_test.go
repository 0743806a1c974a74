package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/syncbuf"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--endpoint-id", "e", "--api-key", "k", "--fault", "run:500=2"},
		{"--endpoint-id", "e", "--api-key", "k", "--fault", "nosuchop:500=0.1"},
		{"--endpoint-id", "e", "--api-key", "k", "--rate-limit", "run"},
		{"--endpoint-id", "e", "--api-key", "k", "--gpu-workers", "-1", "--addr", "127.0.0.1:0"},
		{"--endpoint-id", "e", "--api-key", "k", "extra"},
	} {
		var out, errOut syncbuf.Buffer
		err := run(context.Background(), args, &out, &errOut)
		require.Error(t, err, "args %q", args)
		require.Empty(t, out.String())
	}
	if os.Getenv("RUNPOD_API_KEY") == "" {
		require.ErrorContains(t, run(context.Background(), []string{"--endpoint-id", "e"}, io.Discard, io.Discard), "required")
	}
	var errOut syncbuf.Buffer
	require.NoError(t, run(context.Background(), []string{"-h"}, io.Discard, &errOut))
	require.Contains(t, errOut.String(), "script=A/B/...")
}

func TestRunCancelledContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out syncbuf.Buffer
	err := run(ctx, []string{"--addr", "127.0.0.1:0", "--endpoint-id", "e1", "--api-key", "k"}, &out, io.Discard)
	require.NoError(t, err)
	require.Contains(t, out.String(), "runpod-sim: serving endpoint e1 at http://127.0.0.1:")
}

// TestRunServes starts the command, reads its base URL, runs a job through
// it with a fault from the flags, and stops it.
func TestRunServes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--endpoint-id", "ep", "--api-key", "secret",
			"--mock-delay", "1ms", "--fault", "health:script=503", "--seed", "7"}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	require.NoError(t, err)
	go io.Copy(io.Discard, pr)
	base := strings.TrimSpace(line[strings.LastIndex(line, " ")+1:])
	require.True(t, strings.HasSuffix(base, "/v2"), base)

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	get := func(url string) int {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer secret")
		resp, err := hc.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, 503, get(base+"/ep/health"))
	require.Equal(t, 200, get(base+"/ep/health"))

	req, _ := http.NewRequest("POST", base+"/ep/runsync", strings.NewReader(`{"input":{"mock_return":42}}`))
	req.Header.Set("Authorization", "secret")
	resp, err := hc.Do(req)
	require.NoError(t, err)
	var job map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&job))
	resp.Body.Close()
	require.Equal(t, "COMPLETED", job["status"])
	require.EqualValues(t, 42, job["output"])

	resp, err = hc.Get(strings.TrimSuffix(base, "/v2") + "/_sim/stats")
	require.NoError(t, err)
	var st map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	resp.Body.Close()
	require.EqualValues(t, 1, st["jobs_created"])
	require.EqualValues(t, 1, st["faults"].(map[string]any)["health"])

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// TestVersionAndFlagStyle: --version works, the help spells flags --name
// like the other commands, and usage mistakes are *usageError (exit 2).
func TestVersionAndFlagStyle(t *testing.T) {
	t.Parallel()
	var out syncbuf.Buffer
	require.NoError(t, run(context.Background(), []string{"--version"}, &out, io.Discard))
	require.Regexp(t, `^runpod-sim \S+ \(go`, out.String())

	var help syncbuf.Buffer
	require.NoError(t, run(context.Background(), []string{"--help"}, io.Discard, &help))
	require.Contains(t, help.String(), "\n  --addr string\n")
	require.NotRegexp(t, `(?m)^  -[a-z]`, help.String(), "a single-dash flag in the help")

	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--endpoint-id", "e", "--api-key", "k", "extra"},
		{"--endpoint-id", "e", "--api-key", "k", "--gpu-workers", "-1", "--addr", "127.0.0.1:0"},
		{"--endpoint-id", "e", "--api-key", "k", "--rate-limit", "run"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		var ue *usageError
		require.ErrorAs(t, err, &ue, "args %q", args)
	}
}
