package activities

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// seenRequest is what the fake Runpod received.
type seenRequest struct {
	method, path, query, auth, contentType string
	body                                   string
}

// TestOperationsHappyPath checks each operation's method, path, headers and
// body on the wire, and the parsed result.
func TestOperationsHappyPath(t *testing.T) {
	t.Parallel()

	seen := make(chan seenRequest, 1)
	routes := map[string]string{
		"POST /v2/" + testEndpoint + "/run":                `{"id":"job-1-u1","status":"IN_QUEUE"}`,
		"GET /v2/" + testEndpoint + "/status/job-1-u1":     `{"id":"job-1-u1","status":"COMPLETED","delayTime":12,"executionTime":900,"workerId":"abcdefghijklmn","output":{"ok":true}}`,
		"POST /v2/" + testEndpoint + "/cancel/job-1-u1":    `{"id":"job-1-u1","status":"CANCELLED"}`,
		"GET /v2/" + testEndpoint + "/stream/job-1-u1":     `{"status":"IN_PROGRESS","stream":[{"output":"a"},{"output":"b"}]}`,
		"GET /v2/" + testEndpoint + "/health":              `{"jobs":{"completed":1,"failed":2,"inProgress":3,"inQueue":4,"retried":5},"workers":{"idle":6,"initializing":7,"ready":8,"running":9,"throttled":10,"unhealthy":11}}`,
		"POST /v2/" + testEndpoint + "/purge-queue":        `{"removed":3,"status":"completed"}`,
		"POST /v2/" + testEndpoint + "/retry/job-1-u1":     `{"id":"job-1-u1","status":"IN_QUEUE"}`,
		"GET /v2/" + testEndpoint + "/status/a%2Fb%20c-u1": `{"id":"a/b c-u1","status":"IN_QUEUE"}`,
	}
	b := setup(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- seenRequest{
			method: r.Method, path: r.URL.EscapedPath(), query: r.URL.RawQuery,
			auth: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type"),
			body: string(body),
		}
		resp, ok := routes[r.Method+" "+r.URL.EscapedPath()]
		if !ok {
			writeJSON(w, http.StatusNotFound, `{"error":"no route"}`)
			return
		}
		writeJSON(w, http.StatusOK, resp)
	}, func(c *Config) { c.StreamWait = 1500 * time.Millisecond })
	c := b.client
	ctx := context.Background()

	// next returns the request the server saw for the call just made.
	next := func() seenRequest {
		t.Helper()
		select {
		case s := <-seen:
			require.Equal(t, "Bearer "+testKey, s.auth, "Authorization header")
			return s
		default:
			t.Fatal("server saw no request")
			return seenRequest{}
		}
	}

	t.Run("Run", func(t *testing.T) {
		job, err := c.Run(ctx, workflow.RunRequest{
			Input:   json.RawMessage(`{"prompt":"hi"}`),
			Webhook: "https://example.test/hook",
			Policy:  &workflow.RunPolicy{ExecutionTimeoutMs: 60000, TTLMs: 3600000, LowPriority: true},
		})
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodJob{ID: "job-1-u1", Status: workflow.RunpodInQueue}, job)
		s := next()
		require.Equal(t, http.MethodPost, s.method)
		require.Equal(t, "application/json", s.contentType)
		require.JSONEq(t, `{"input":{"prompt":"hi"},"webhook":"https://example.test/hook",
			"policy":{"executionTimeout":60000,"ttl":3600000,"lowPriority":true}}`, s.body)
	})
	t.Run("RunMinimalBody", func(t *testing.T) {
		_, err := c.Run(ctx, workflow.RunRequest{Input: json.RawMessage(`{"n":1}`)})
		require.NoError(t, err)
		require.JSONEq(t, `{"input":{"n":1}}`, next().body)
	})
	t.Run("Status", func(t *testing.T) {
		job, err := c.Status(ctx, "job-1-u1")
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodJob{
			ID: "job-1-u1", Status: workflow.RunpodCompleted, DelayTime: 12, ExecutionTime: 900,
			WorkerID: "abcdefghijklmn", Output: json.RawMessage(`{"ok":true}`),
		}, job)
		require.Equal(t, http.MethodGet, next().method)
	})
	t.Run("StatusEscapesID", func(t *testing.T) {
		job, err := c.Status(ctx, "a/b c-u1")
		require.NoError(t, err)
		require.Equal(t, "a/b c-u1", job.ID)
		require.Equal(t, "/v2/"+testEndpoint+"/status/a%2Fb%20c-u1", next().path)
	})
	t.Run("Cancel", func(t *testing.T) {
		job, err := c.Cancel(ctx, "job-1-u1")
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodJob{ID: "job-1-u1", Status: workflow.RunpodCancelled}, job)
		s := next()
		require.Equal(t, http.MethodPost, s.method)
		require.Empty(t, s.body)
	})
	t.Run("Stream", func(t *testing.T) {
		res, err := c.Stream(ctx, "job-1-u1")
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodInProgress, res.Status)
		require.Len(t, res.Stream, 2)
		require.JSONEq(t, `"a"`, string(res.Stream[0].Output))
		require.JSONEq(t, `"b"`, string(res.Stream[1].Output))
		require.Equal(t, "wait=1500", next().query)
	})
	t.Run("Health", func(t *testing.T) {
		h, err := c.Health(ctx)
		require.NoError(t, err)
		require.Equal(t, Health{
			Jobs:    HealthJobs{Completed: 1, Failed: 2, InProgress: 3, InQueue: 4, Retried: 5},
			Workers: HealthWorkers{Idle: 6, Initializing: 7, Ready: 8, Running: 9, Throttled: 10, Unhealthy: 11},
		}, h)
		require.Equal(t, http.MethodGet, next().method)
	})
	t.Run("PurgeQueue", func(t *testing.T) {
		p, err := c.PurgeQueue(ctx)
		require.NoError(t, err)
		require.Equal(t, PurgeResult{Removed: 3, Status: "completed"}, p)
		require.Equal(t, http.MethodPost, next().method)
	})
	t.Run("Retry", func(t *testing.T) {
		job, err := c.Retry(ctx, "job-1-u1")
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodJob{ID: "job-1-u1", Status: workflow.RunpodInQueue}, job)
		require.Equal(t, http.MethodPost, next().method)
	})
	t.Run("OnCallSawEveryCall", func(t *testing.T) {
		require.Equal(t, []string{"ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"}, b.outcomes())
		require.Equal(t, "closed", c.BreakerState())
	})
}

// TestRefusedBeforeSending covers calls rejected locally.
func TestRefusedBeforeSending(t *testing.T) {
	t.Parallel()
	b := setup(t, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, `{}`) }, nil)
	ctx := context.Background()

	for name, call := range map[string]func() error{
		"run without input":   func() error { _, err := b.client.Run(ctx, workflow.RunRequest{}); return err },
		"run with bad JSON":   func() error { _, err := b.client.Run(ctx, workflow.RunRequest{Input: []byte("{")}); return err },
		"status without id":   func() error { _, err := b.client.Status(ctx, ""); return err },
		"cancel control char": func() error { _, err := b.client.Cancel(ctx, "a\nb"); return err },
		"stream without id":   func() error { _, err := b.client.Stream(ctx, ""); return err },
		"retry without id":    func() error { _, err := b.client.Retry(ctx, ""); return err },
	} {
		err := call()
		var ae *workflow.ActivityError
		require.ErrorAs(t, err, &ae, name)
		require.False(t, ae.Transient, name)
		require.ErrorIs(t, err, ErrInvalidRequest, name)
	}
	require.Zero(t, b.server.hits.Load(), "nothing may be sent")
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	valid := Config{APIKey: testKey, EndpointID: "abc123"}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"missing key", func(c *Config) { c.APIKey = "" }, "activities: APIKey: must not be empty"},
		{"key with space", func(c *Config) { c.APIKey = "a b" }, "activities: APIKey:"},
		{"missing endpoint", func(c *Config) { c.EndpointID = "" }, "activities: EndpointID: must not be empty"},
		{"bad endpoint", func(c *Config) { c.EndpointID = "a/b" }, "activities: EndpointID:"},
		{"bad scheme", func(c *Config) { c.BaseURL = "ftp://x" }, "activities: BaseURL:"},
		{"no host", func(c *Config) { c.BaseURL = "http://" }, "activities: BaseURL:"},
		{"query", func(c *Config) { c.BaseURL = "http://x/v2?a=1" }, "activities: BaseURL:"},
		{"negative timeout", func(c *Config) { c.RequestTimeout = -1 }, "activities: RequestTimeout:"},
		{"max below initial", func(c *Config) { c.RetryInitialBackoff = time.Minute }, "activities: RetryMaxBackoff:"},
		{"negative attempts", func(c *Config) { c.MaxAttempts = -1 }, "activities: MaxAttempts:"},
		{"stream wait", func(c *Config) { c.StreamWait = time.Hour }, "activities: StreamWait:"},
		{"short stream wait", func(c *Config) { c.StreamWait = time.Millisecond }, "activities: StreamWait:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid
			tt.mutate(&cfg)
			_, err := New(cfg)
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), tt.want), "have %q, want prefix %q", err, tt.want)
			requireNoKey(t, err.Error())
		})
	}

	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		c, err := New(valid)
		require.NoError(t, err)
		t.Cleanup(c.CloseIdleConnections)
		require.Equal(t, BaseURLDefault+"/abc123", c.base)
		require.Equal(t, RequestTimeoutDefault, c.cfg.RequestTimeout)
		require.Equal(t, MaxAttemptsDefault, c.cfg.MaxAttempts)
		require.Equal(t, BreakerFailuresDefault, c.cfg.BreakerFailures)
		require.Equal(t, "closed", c.BreakerState())
		require.True(t, c.traceTrusted)
	})
	t.Run("trailing slash and slug endpoint", func(t *testing.T) {
		t.Parallel()
		cfg := valid
		cfg.BaseURL = "http://127.0.0.1:9/v2/"
		cfg.EndpointID = "black-forest-labs-flux-1-schnell"
		c, err := New(cfg)
		require.NoError(t, err)
		require.Equal(t, "http://127.0.0.1:9/v2/black-forest-labs-flux-1-schnell", c.base)
	})
}
