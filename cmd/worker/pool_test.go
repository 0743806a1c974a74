package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

const secretWebhookKey = "whk-SECRET-0123456789"

// TestDevWebhooks: --webhook-listen in dev mode: the simulator's webhook
// finishes the job, counted in webhooks_total; the key is never printed.
func TestDevWebhooks(t *testing.T) {
	t.Parallel()
	s := start(t, []string{"--dev", "--dev-redis-addr", "127.0.0.1:0", "--dev-runpod-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--webhook-listen", "127.0.0.1:0", "--webhook-poll-interval", "5m"},
		map[string]string{"RUNPOD_WEBHOOK_KEY": secretWebhookKey})
	redisURL := find(t, s.stdout, regexp.MustCompile(`dev mode: embedded Redis at (redis://127\.0\.0\.1:\d+)`), s)
	base := find(t, s.stdout, regexp.MustCompile(`metrics:  (http://127\.0\.0\.1:\d+)/metrics`), s)
	find(t, s.stderr, regexp.MustCompile(`serving runpod webhooks: addr=(127\.0\.0\.1:\d+)`), s)

	opt, err := redis.ParseURL(redisURL)
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	c, err := client.New(rdb, client.Config{})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.Submit(ctx, client.SubmitOptions{ClientJobID: "hook-1", Input: map[string]any{"prompt": "x"}})
	require.NoError(t, err)
	res, err := c.AwaitResult(ctx, "hook-1")
	require.NoError(t, err)
	require.Equal(t, workflow.StateCompleted, res.Status)

	require.Eventually(t, func() bool {
		return scrape(t, base+"/metrics")[metricWebhooks].value(t, "result", "finalized") == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.Regexp(t, `job finished: .*job_id=hook-1 runpod_id=\S+ state=COMPLETED by=webhook`, s.stderr.String())
	s.stop(t)
	require.NotContains(t, s.stderr.String()+s.stdout.String(), secretWebhookKey)
}

func TestBadWebhookConfiguration(t *testing.T) {
	t.Parallel()
	ok := []string{"--runpod-api-key", secretKey, "--runpod-endpoint-id", "ep1"}
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"admission interval without depth", append([]string{"--admission-interval", "2s"}, ok...), nil, "--admission-interval: only applies with --admission-depth"},
		{"url without listener", append([]string{"--webhook-url", "https://h/hook"}, ok...), nil, "--webhook-url: only applies with --webhook-listen"},
		{"listener without key", append([]string{"--webhook-listen", "127.0.0.1:0"}, ok...), nil, "--webhook-key: required with --webhook-listen"},
		{"short key (library rule)", append([]string{"--webhook-listen", "127.0.0.1:0"}, ok...), map[string]string{"RUNPOD_WEBHOOK_KEY": "short"}, "--webhook-key: must be at least 16 bytes"},
		{"url with query (library rule)", append([]string{"--webhook-listen", "127.0.0.1:0", "--webhook-url", "https://h/hook?a=1"}, ok...), map[string]string{"RUNPOD_WEBHOOK_KEY": secretWebhookKey}, "--webhook-url: must have no query"},
		{"fallback slower than the horizon (library rule)", append([]string{"--webhook-listen", "127.0.0.1:0", "--webhook-poll-interval", "20m"}, ok...), map[string]string{"RUNPOD_WEBHOOK_KEY": secretWebhookKey}, "--webhook-poll-interval: 20m0s is more than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := runEnv(ctx, tt.args, env(tt.env), &stdout, &stderr)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
			require.Equal(t, 2, exitCode(err))
			for _, out := range []string{err.Error(), stdout.String(), stderr.String()} {
				require.NotContains(t, out, secretWebhookKey)
			}
		})
	}
}

// TestAdmissionFlags: --admission-depth sets one pool-wide gate named by
// the endpoint, reading /health through the Runpod client.
func TestAdmissionFlags(t *testing.T) {
	t.Parallel()
	o := defaultOptions()
	table := newFlagTable(o)
	sources, err := table.parse([]string{"--admission-depth", "25", "--admission-interval", "500ms"}, func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	o.apiKey, o.endpointID = secretKey, "ep1"
	require.NoError(t, o.check(sources))
	cfg := o.workerConfig(placeholderRunpod{}, nil, worker.Hooks{})
	require.Equal(t, 25, cfg.Admission.Depth)
	require.Equal(t, 500*time.Millisecond, cfg.Admission.Interval)
	require.NotNil(t, cfg.Admission.Health)
	_, err = cfg.Admission.Health(context.Background())
	require.ErrorContains(t, err, "cannot read /health", "a Runpod without /health admits nothing")
	require.Zero(t, defaultOptions().workerConfig(placeholderRunpod{}, nil, worker.Hooks{}).Admission.Depth, "off by default")
}
