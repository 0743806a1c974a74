package main

import (
	"context"
	"fmt"
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

// TestRunpodEchoedSecretsStayOut runs the worker, as a Redis user limited
// to its namespace (the ACL of docs/operations.md), against the simulator,
// with jobs whose handler echoes the API key in its error, its progress
// output and its output (mock_echo_key). The key appears in no record, no
// event and no log line, and the Redis password is handed to the Runpod
// client to redact as well. Before the fix the error and the progress were
// stored, logged and emitted as Runpod sent them.
func TestRunpodEchoedSecretsStayOut(t *testing.T) {
	t.Parallel()
	ns := redistest.Namespace(t)
	user, password := redistest.ACLUser(t, ns)
	redisURL := fmt.Sprintf("redis://%s:%s@%s/0", user, password, redistest.Addr())
	admin := redistest.Client(t)
	t.Cleanup(func() { redistest.DeleteNamespace(admin, ns) })

	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep1", APIKey: secretKey, GPUWorkers: 4})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })

	s := start(t, []string{"--redis-url", redisURL, "--namespace", ns,
		"--runpod-api-key", secretKey, "--runpod-endpoint-id", "ep1", "--runpod-base-url", srv.URL,
		"--poll-initial", "20ms", "--poll-max", "50ms", "--http-addr=", "--log-level", "trace"}, nil)
	find(t, s.stderr, regexp.MustCompile(`(starting)`), s)

	// The producer uses the same limited user.
	opt, err := redis.ParseURL(redisURL)
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	c, err := client.New(rdb, client.Config{Namespace: ns})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	key := runpodsim.EchoKeyPlaceholder
	jobs := map[string]map[string]any{
		"fails": {"mock_echo_key": true, "mock_delay": 600, "mock_error": "auth failed with key " + key,
			"mock_progress": []any{"loading with " + key, map[string]any{"env": "RUNPOD_API_KEY=" + key}}},
		"completes": {"mock_echo_key": true, "mock_delay": 600, "mock_return": map[string]any{"env": key},
			"mock_progress": []any{"step 1 " + key, "step 2 " + key}},
	}
	for id, in := range jobs {
		_, err := c.Submit(ctx, client.SubmitOptions{ClientJobID: id, Input: in})
		require.NoError(t, err)
	}
	failed, err := c.AwaitResult(ctx, "fails")
	require.NoError(t, err)
	require.Equal(t, workflow.StateFailed, failed.Status)
	require.Contains(t, failed.Error, "auth failed with key [REDACTED]")
	done, err := c.AwaitResult(ctx, "completes")
	require.NoError(t, err)
	require.Equal(t, workflow.StateCompleted, done.Status, done.Error)
	require.JSONEq(t, `{"env":"[REDACTED]"}`, string(done.Output))

	// Cancel as the limited user too: the script's PUBLISH is on the
	// namespace's channel.
	_, err = c.Submit(ctx, client.SubmitOptions{ClientJobID: "canceled", Input: map[string]any{"mock_delay": 60000}})
	require.NoError(t, err)
	_, err = c.Cancel(ctx, "canceled")
	require.NoError(t, err)
	res, err := c.AwaitResult(ctx, "canceled")
	require.NoError(t, err)
	require.Equal(t, workflow.StateCanceled, res.Status)
	s.stop(t)

	// Everything in the namespace, every log line.
	var all strings.Builder
	keys, err := admin.Keys(ctx, "{"+ns+"}:*").Result()
	require.NoError(t, err)
	for _, k := range keys {
		switch admin.Type(ctx, k).Val() {
		case "hash":
			fmt.Fprintln(&all, admin.HGetAll(ctx, k).Val())
		case "stream":
			fmt.Fprintln(&all, admin.XRange(ctx, k, "-", "+").Val())
		case "string":
			fmt.Fprintln(&all, admin.Get(ctx, k).Val())
		}
	}
	stored := all.String()
	require.Contains(t, stored, "[REDACTED]", "the echoed key reached the records redacted")
	require.Contains(t, stored, "progress", "progress was recorded")
	logs := s.stderr.String()
	require.Contains(t, logs, "[REDACTED]", "the failure was logged, redacted")
	for _, out := range []string{stored, logs, s.stdout.String()} {
		require.NotContains(t, out, secretKey)
		require.NotContains(t, out, password)
	}
}

// TestRedisPasswordRedactedFromRunpod: the worker hands the passwords of
// --redis-url to the Runpod client, which redacts them like the key.
func TestRedisPasswordRedactedFromRunpod(t *testing.T) {
	t.Parallel()
	o := defaultOptions()
	o.redisURL = "redis+sentinel://app:" + secretPassword + "@s1:26379/m?sentinel_password=other-" + secretPassword
	conn, err := o.redisConn(o.redisURL)
	require.NoError(t, err)
	cfg := o.activitiesConfig(secretKey, "ep1", "http://127.0.0.1:1/v2", conn.Secrets(), nil, newMetrics())
	require.Contains(t, cfg.Secrets, secretPassword)
	require.Contains(t, cfg.Secrets, "other-"+secretPassword)
}

// TestMutualTLS: the worker runs a job against a TLS-only redis-server that
// requires client certificates, with the CA and the client certificate from
// the REDIS_TLS_* environment variables.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	files, err := redistest.WriteTLSFiles(t.TempDir())
	require.NoError(t, err)
	rs, err := redistest.StartTLS(files)
	require.NoError(t, err, "this redis-server must be built with TLS (Debian's is)")
	t.Cleanup(rs.Stop)
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep1", APIKey: secretKey})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })

	ns := redistest.Namespace(t)
	s := start(t, []string{"--namespace", ns, "--runpod-endpoint-id", "ep1", "--runpod-base-url", srv.URL,
		"--poll-initial", "20ms", "--poll-max", "50ms", "--http-addr="}, map[string]string{
		"REDIS_URL": "rediss://" + rs.Addr + "/0", "RUNPOD_API_KEY": secretKey,
		"REDIS_TLS_CA_FILE": files.CA, "REDIS_TLS_CERT_FILE": files.ClientCert, "REDIS_TLS_KEY_FILE": files.ClientKey,
	})
	find(t, s.stderr, regexp.MustCompile(`(starting)`), s)

	cfg, err := files.ClientTLS()
	require.NoError(t, err)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr, TLSConfig: cfg})
	t.Cleanup(func() { _ = rdb.Close() })
	c, err := client.New(rdb, client.Config{Namespace: ns})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.Submit(ctx, client.SubmitOptions{ClientJobID: "tls-1", Input: map[string]any{"x": 1}})
	require.NoError(t, err)
	res, err := c.AwaitResult(ctx, "tls-1")
	require.NoError(t, err)
	require.Equal(t, workflow.StateCompleted, res.Status, res.Error)
	s.stop(t)
	require.Contains(t, s.stderr.String(), "rediss://"+rs.Addr)
}
