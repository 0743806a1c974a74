package activities

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Integration tests against the simulator over real loopback HTTP.

const simEndpoint = "simendpoint001"

type simBundle struct {
	srv    *runpodsim.Server
	sim    *runpodsim.Sim
	clock  *runpodsim.ManualClock // nil with a scaled wall clock
	client *Client
}

// setupSim serves a simulator (with a manual clock unless the config sets
// TimeScale) and returns a client for it; mutate adjusts the client config.
func setupSim(t *testing.T, simCfg runpodsim.Config, mutate func(*Config)) *simBundle {
	t.Helper()
	b := &simBundle{}
	simCfg.EndpointID = simEndpoint
	simCfg.APIKey = testKey
	simCfg.Seed = 7
	if simCfg.TimeScale == 0 && simCfg.Clock == nil {
		b.clock = runpodsim.NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		simCfg.Clock = b.clock
	}
	srv, err := runpodsim.Serve("127.0.0.1:0", simCfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	b.srv, b.sim = srv, srv.Sim

	cfg := Config{
		APIKey:              testKey,
		EndpointID:          simEndpoint,
		BaseURL:             srv.URL,
		RequestTimeout:      5 * time.Second,
		RetryInitialBackoff: time.Millisecond,
		RetryMaxBackoff:     10 * time.Millisecond,
		StreamWait:          StreamWaitMin,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(c.CloseIdleConnections)
	b.client = c
	return b
}

func TestSimOperations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("run, status to COMPLETED, health", func(t *testing.T) {
		t.Parallel()
		b := setupSim(t, runpodsim.Config{GPUWorkers: 2}, nil)
		job, err := b.client.Run(ctx, workflow.RunRequest{
			Input:  json.RawMessage(`{"mock_delay":1500,"mock_return":{"image":"done.png"}}`),
			Policy: &workflow.RunPolicy{ExecutionTimeoutMs: 60000, TTLMs: 3600000},
		})
		require.NoError(t, err)
		require.NotEmpty(t, job.ID)
		require.Contains(t, []workflow.RunpodStatus{workflow.RunpodInQueue, workflow.RunpodInProgress}, job.Status)

		st, err := b.client.Status(ctx, job.ID)
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodInProgress, st.Status)
		require.NotEmpty(t, st.WorkerID)

		h, err := b.client.Health(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(1), h.Jobs.InProgress)
		require.Equal(t, int64(1), h.Workers.Running)

		b.clock.Advance(1500 * time.Millisecond)
		st, err = b.client.Status(ctx, job.ID)
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodCompleted, st.Status)
		require.Equal(t, int64(1500), st.ExecutionTime)
		require.JSONEq(t, `{"image":"done.png"}`, string(st.Output))
		require.Empty(t, st.Error)

		h, err = b.client.Health(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(1), h.Jobs.Completed)
		require.Zero(t, h.Jobs.InProgress)
		require.Equal(t, int64(1), b.sim.Stats().JobsCreated)
	})

	t.Run("failed job, retry under the same id", func(t *testing.T) {
		t.Parallel()
		b := setupSim(t, runpodsim.Config{}, nil)
		job, err := b.client.Run(ctx, workflow.RunRequest{Input: json.RawMessage(`{"mock_delay":100,"mock_error":"bad prompt"}`)})
		require.NoError(t, err)
		b.clock.Advance(100 * time.Millisecond)
		st, err := b.client.Status(ctx, job.ID)
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodFailed, st.Status)
		// The Python worker's error: a JSON-encoded string, kept as the
		// object it holds, with a readable text.
		var pyErr map[string]any
		require.NoError(t, json.Unmarshal(st.ErrorJSON, &pyErr), "error %s", st.ErrorJSON)
		require.Equal(t, "bad prompt", pyErr["error_message"])
		require.Equal(t, "Exception: bad prompt", st.Error)

		again, err := b.client.Retry(ctx, job.ID)
		require.NoError(t, err)
		require.Equal(t, job.ID, again.ID)
		require.Contains(t, []workflow.RunpodStatus{workflow.RunpodInQueue, workflow.RunpodInProgress}, again.Status)
		b.clock.Advance(100 * time.Millisecond)
		st, err = b.client.Status(ctx, job.ID)
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodFailed, st.Status)
		require.Equal(t, 1, st.Retries)
	})

	t.Run("cancel and purge-queue", func(t *testing.T) {
		t.Parallel()
		b := setupSim(t, runpodsim.Config{GPUWorkers: 1}, nil)
		var ids []string
		for range 4 {
			job, err := b.client.Run(ctx, workflow.RunRequest{Input: json.RawMessage(`{"mock_delay":3600000}`)})
			require.NoError(t, err)
			ids = append(ids, job.ID)
		}
		// ids[0] runs; the rest wait. Cancel one queued job, purge the rest.
		c, err := b.client.Cancel(ctx, ids[1])
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodJob{ID: ids[1], Status: workflow.RunpodCancelled}, c)
		p, err := b.client.PurgeQueue(ctx)
		require.NoError(t, err)
		require.Equal(t, PurgeResult{Removed: 2, Status: "completed"}, p)

		st, err := b.client.Status(ctx, ids[0])
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodInProgress, st.Status, "purge leaves running jobs")
		c, err = b.client.Cancel(ctx, ids[0])
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodCancelled, c.Status)
		st, err = b.client.Status(ctx, ids[0])
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodCancelled, st.Status)
	})

	t.Run("not found, expired and unauthorized", func(t *testing.T) {
		t.Parallel()
		b := setupSim(t, runpodsim.Config{}, nil)
		_, err := b.client.Status(ctx, "00000000-0000-4000-8000-000000000000-u1")
		require.ErrorIs(t, err, workflow.ErrRunpodJobNotFound)

		// A completed job is deleted 30 minutes after completion.
		job, err := b.client.Run(ctx, workflow.RunRequest{Input: json.RawMessage(`{"mock_delay":10}`)})
		require.NoError(t, err)
		b.clock.Advance(10 * time.Millisecond)
		st, err := b.client.Status(ctx, job.ID)
		require.NoError(t, err)
		require.Equal(t, workflow.RunpodCompleted, st.Status)
		b.clock.Advance(31 * time.Minute)
		_, err = b.client.Status(ctx, job.ID)
		require.ErrorIs(t, err, workflow.ErrRunpodJobNotFound)
		var ae *workflow.ActivityError
		require.ErrorAs(t, err, &ae)
		require.Equal(t, 404, ae.StatusCode)
		require.False(t, ae.Transient)

		cfg := b.client.cfg
		cfg.APIKey = "rpa_wrong"
		wrong, err := New(cfg)
		require.NoError(t, err)
		t.Cleanup(wrong.CloseIdleConnections)
		_, err = wrong.Health(ctx)
		require.ErrorIs(t, err, ErrUnauthorized)
		requireNoKey(t, err.Error())
	})
}

// TestSimStream drains a generator job's chunks until the terminal, empty
// answer. The stream hold is simulated time, so this uses a scaled clock.
func TestSimStream(t *testing.T) {
	t.Parallel()
	b := setupSim(t, runpodsim.Config{TimeScale: 20}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	job, err := b.client.Run(ctx, workflow.RunRequest{
		Input: json.RawMessage(`{"mock_delay":2000,"mock_stream":["a","b",{"c":3}],"mock_aggregate_stream":true}`),
	})
	require.NoError(t, err)

	var chunks []string
	var last StreamResult
	for {
		res, err := b.client.Stream(ctx, job.ID)
		require.NoError(t, err)
		for _, ch := range res.Stream {
			chunks = append(chunks, string(ch.Output))
		}
		last = res
		if res.Status.Terminal() && len(res.Stream) == 0 {
			break
		}
	}
	require.Equal(t, []string{`"a"`, `"b"`, `{"c":3}`}, chunks)
	require.Equal(t, workflow.RunpodCompleted, last.Status)
	st, err := b.client.Status(ctx, job.ID)
	require.NoError(t, err)
	require.JSONEq(t, `["a","b",{"c":3}]`, string(st.Output))
}

// TestSimFaults runs the client against the simulator's injected faults and
// uses its job ledger to prove /run never created a second job.
func TestSimFaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	input := json.RawMessage(`{"mock_delay":10}`)

	t.Run("refused /run is retried once nothing was created", func(t *testing.T) {
		t.Parallel()
		b := setupSim(t, runpodsim.Config{}, nil)
		require.NoError(t, b.sim.SetFaults(runpodsim.OpRun, runpodsim.Faults{Script: []int{503, 429}}))
		job, err := b.client.Run(ctx, workflow.RunRequest{Input: input})
		require.NoError(t, err)
		require.Equal(t, int64(1), b.sim.Stats().JobsCreated)
		require.Equal(t, job.ID, b.sim.Jobs()[0].ID)
	})

	for name, script := range map[string]int{
		"502 after the job was created":                502,
		"dropped connection after the job was created": runpodsim.ScriptDrop,
		"truncated 200 body":                           runpodsim.ScriptInvalidJSON,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setupSim(t, runpodsim.Config{}, nil)
			require.NoError(t, b.sim.SetFaults(runpodsim.OpRun, runpodsim.Faults{Script: []int{script}, After: true}))
			_, err := b.client.Run(ctx, workflow.RunRequest{Input: input})
			require.ErrorIs(t, err, workflow.ErrSubmitUncertain)
			require.False(t, workflow.IsTransient(err))
			require.Equal(t, int64(1), b.sim.Stats().JobsCreated, "the job exists and was not resubmitted")
		})
	}

	t.Run("hung /run is uncertain, hung /status is retried", func(t *testing.T) {
		t.Parallel()
		b := setupSim(t, runpodsim.Config{}, func(c *Config) {
			c.RequestTimeout = 200 * time.Millisecond
			// Five transient failures in a row (the hung /run and four
			// /status faults) may open the default breaker; this test is
			// about retries, not the breaker.
			c.BreakerFailures = 100
		})
		require.NoError(t, b.sim.SetFaults(runpodsim.OpRun, runpodsim.Faults{Script: []int{runpodsim.ScriptHang}, After: true}))
		_, err := b.client.Run(ctx, workflow.RunRequest{Input: input})
		require.ErrorIs(t, err, workflow.ErrSubmitUncertain)
		require.ErrorIs(t, err, ErrAttemptTimeout)
		require.Equal(t, int64(1), b.sim.Stats().JobsCreated)

		id := b.sim.Jobs()[0].ID
		require.NoError(t, b.sim.SetFaults(runpodsim.OpStatus, runpodsim.Faults{
			Script: []int{runpodsim.ScriptHang, 500, runpodsim.ScriptDrop, runpodsim.ScriptInvalidJSON},
		}))
		st, err := b.client.Status(ctx, id)
		require.NoError(t, err, "four transient faults, five attempts")
		require.Equal(t, id, st.ID)
		require.Equal(t, int64(5), b.sim.Stats().Requests[runpodsim.OpStatus])
	})

	t.Run("429 with Retry-After from the simulator", func(t *testing.T) {
		t.Parallel()
		b := setupSim(t, runpodsim.Config{}, func(c *Config) { c.RetryMaxBackoff = 5 * time.Second })
		require.NoError(t, b.sim.SetFaults(runpodsim.OpHealth, runpodsim.Faults{Script: []int{429}, Retry429After: "1"}))
		start := time.Now()
		_, err := b.client.Health(ctx)
		require.NoError(t, err)
		require.GreaterOrEqual(t, time.Since(start), time.Second)
		require.Equal(t, int64(2), b.sim.Stats().Requests[runpodsim.OpHealth])
	})
}

// TestSimRateLimitNoStorm: 5,000 status calls through the client's limiter
// against the simulator enforcing Runpod's status budget (2,000 per
// 10-second window, time scaled 20× so a window is 500 ms). The limiter,
// given the same published budget (it keeps 5% headroom for network
// jitter), keeps the simulator from answering 429.
func TestSimRateLimitNoStorm(t *testing.T) {
	t.Parallel()
	const (
		calls   = 5000
		workers = 64
		scale   = 20
	)
	window := runpodsim.RateLimitWindow / scale
	b := setupSim(t, runpodsim.Config{TimeScale: scale}, func(c *Config) {
		c.Limiter = NewLocalLimiter(map[string]RateLimit{
			OpStatus: {Requests: DefaultRateLimits[OpStatus].Requests, Per: window},
		})
		c.MaxAttempts = 1 // a 429 would surface as an error
	})
	job, err := b.client.Run(context.Background(), workflow.RunRequest{Input: json.RawMessage(`{"mock_delay":3600000}`)})
	require.NoError(t, err)

	jobs := make(chan struct{}, calls)
	for range calls {
		jobs <- struct{}{}
	}
	close(jobs)
	var (
		mu     sync.Mutex
		failed []error
	)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range jobs {
				if _, err := b.client.Status(context.Background(), job.ID); err != nil {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stats := b.sim.Stats()
	t.Logf("%d status calls in %s; simulator rate-limited %d", calls, elapsed, stats.RateLimited[runpodsim.OpStatus])
	require.Empty(t, failed)
	require.Zero(t, stats.RateLimited[runpodsim.OpStatus])
	require.Equal(t, int64(calls), stats.Requests[runpodsim.OpStatus])
	// 5,000 calls at 2,000 per 500 ms cannot finish in under 1 s.
	require.GreaterOrEqual(t, elapsed, window*2)
}
