package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/internal/syncbuf"
)

// TestUIServesWithoutSecrets: "submitter ui" as a namespace-limited Redis
// user (a password in --redis-url) serves every page on loopback, none of
// which holds the password or the URL, and stops cleanly when interrupted.
func TestUIServesWithoutSecrets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	user, password := redistest.ACLUser(t, b.ns)
	url := fmt.Sprintf("redis://%s:%s@%s/0", user, password, redistest.Addr())
	require.Zero(t, b.run(t, "", "--redis-url", url, "submit", "--id", "ui-1", "--input", `{"x":1}`).code)

	stdout, stderr := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	c := &cli{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr,
		getenv: func(k string) string { return map[string]string{"RUNPOD_API_KEY": helpAPIKey}[k] }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- c.run(ctx, []string{"--redis-url", url, "--namespace", b.ns, "ui", "--listen", "127.0.0.1:0"})
	}()
	re := regexp.MustCompile(`dashboard: (http://127\.0\.0\.1:\d+)/`)
	var base string
	deadline := time.Now().Add(time.Minute)
	for base == "" {
		if m := re.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("ui returned before listening: %v; stderr: %s", err, stderr.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "no listen line; stdout %q stderr %q", stdout.String(), stderr.String())
		time.Sleep(10 * time.Millisecond)
	}
	for _, p := range []string{"/", "/jobs", "/job?id=ui-1", "/dead", "/jobs?state=SUBMITTED"} {
		res, err := http.Get(base + p)
		require.NoError(t, err)
		body, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.StatusCode, "%s: %s", p, body)
		if p != "/" && p != "/dead" {
			require.Contains(t, string(body), "ui-1", p)
		}
		for _, secret := range []string{password, url, helpAPIKey} {
			require.NotContains(t, string(body), secret, p)
		}
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("ui did not stop within a minute of the interrupt")
	}
	for _, secret := range []string{password, helpAPIKey} {
		require.NotContains(t, stdout.String()+stderr.String(), secret)
	}
}
