package bench_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/yourscope/runpod-orchestrator/internal/bench"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// go-redis's cluster client may still sleep its slot-reload cooldown after
// Close (TestRunOnClusterWithPartitions), as in internal/failover.
func TestMain(m *testing.M) {
	redistest.Main(m,
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9.(*clusterStateHolder).LazyReload.func1"),
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// TestRunCountsEveryJob: a small run of each mode ends with one outcome per
// job, one /run per job, and server-side counts that are really measured.
func TestRunCountsEveryJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name string
		o    bench.Options
	}{
		{"StandinClientPrefill", bench.Options{Runpod: bench.RunpodStandin, Submit: bench.SubmitClient, Prefill: true}},
		{"StandinRawLive", bench.Options{Runpod: bench.RunpodStandin, Submit: bench.SubmitRaw, Workers: 2}},
		{"Sim", bench.Options{Runpod: bench.RunpodSim, Prefill: true}},
		{"StandinOfferedRate", bench.Options{Runpod: bench.RunpodStandin, Rate: 2000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.RedisURL = "redis://" + redistest.Addr()
			o.Namespace = redistest.Namespace(t)
			o.Jobs = 200
			o.Worker = worker.Config{Poll: workflow.PollPolicy{Initial: time.Millisecond}}
			res, err := bench.Run(ctx, o)
			require.NoError(t, err)
			require.Equal(t, map[string]int{"COMPLETED": 200}, res.Outcomes)
			require.Greater(t, res.RedisCmdsPerJob, 1.0, "the server ran commands for the jobs")
			require.Greater(t, res.RoundTripsPerJob, 0.0)
			if o.Rate > 0 {
				require.Equal(t, o.Rate, res.OfferedRate)
				require.NotNil(t, res.SubmitLateMs, "how late each submission was is measured")
			}
			if o.Runpod == bench.RunpodStandin {
				require.EqualValues(t, 200, res.RunpodRuns)
				require.NotNil(t, res.SubmitToRunMs)
				require.NotNil(t, res.CompletionToOutcomeMs)
			}
		})
	}
}

// TestHoldMeasuresKeepAlive: jobs held in flight are all on Runpod and the
// keep-alive window is measured.
func TestHoldMeasuresKeepAlive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.Run(ctx, bench.Options{
		RedisURL: "redis://" + redistest.Addr(), Namespace: redistest.Namespace(t),
		Jobs: 100, Hold: true, HoldFor: time.Second,
		Worker: worker.Config{Poll: workflow.PollPolicy{Initial: time.Hour, Max: time.Hour}},
	})
	require.NoError(t, err)
	require.EqualValues(t, 100, res.RunpodRuns)
	require.GreaterOrEqual(t, res.KeepAliveSeconds, 1.0)
}

func TestOptionsNameTheBadField(t *testing.T) {
	_, err := bench.Run(context.Background(), bench.Options{RedisURL: "redis://" + redistest.Addr(), Jobs: 1, Runpod: "gpu"})
	require.ErrorContains(t, err, "--runpod")
	_, err = bench.Run(context.Background(), bench.Options{RedisURL: "redis://" + redistest.Addr(), Jobs: 0})
	require.ErrorContains(t, err, "--jobs")
	_, err = bench.Run(context.Background(), bench.Options{RedisURL: "redis://" + redistest.Addr(), Jobs: 1, Rate: 10, Prefill: true})
	require.ErrorContains(t, err, "--rate", "an offered rate is not a drain")
}

// TestRunOnClusterWithPartitions: the bench drives a 3-master Cluster with
// a partitioned namespace, sums the server figures over the masters, and
// every job completes once.
func TestRunOnClusterWithPartitions(t *testing.T) {
	c, err := redistest.StartCluster()
	if errors.Is(err, redistest.ErrNoBinary) {
		t.Skipf("skipping: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.Run(ctx, bench.Options{
		NewClient: func() redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()[:2]})
		},
		Namespace: redistest.Namespace(t), Jobs: 300, Partitions: 3, Workers: 2,
		Worker: worker.Config{Poll: workflow.PollPolicy{Initial: time.Millisecond}},
	})
	require.NoError(t, err)
	require.Equal(t, map[string]int{"COMPLETED": 300}, res.Outcomes)
	require.EqualValues(t, 300, res.RunpodRuns)
	require.Equal(t, 3, res.Masters)
	require.Equal(t, 3, res.Partitions)
	require.Greater(t, res.RedisCmdsPerJob, 1.0)
}

// TestMarksAndProfileScripts: Run's phase marks come in order around the
// prefill and the drain, and ProfileScripts takes every job through each
// hot script (one mark per phase) and leaves every job COMPLETED, so a
// profiler dumping at the marks (bench/peers --callgrind) counts each
// script alone.
func TestMarksAndProfileScripts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var marks []string
	res, err := bench.Run(ctx, bench.Options{RedisURL: "redis://" + redistest.Addr(), Namespace: redistest.Namespace(t),
		Jobs: 50, Prefill: true, Worker: worker.Config{Poll: workflow.PollPolicy{Initial: time.Millisecond}},
		Mark: func(p string) error { marks = append(marks, p); return nil }})
	require.NoError(t, err)
	require.Equal(t, map[string]int{"COMPLETED": 50}, res.Outcomes)
	require.Equal(t, []string{"submit", "drain", ""}, marks)

	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
	defer rdb.Close()
	ns := redistest.Namespace(t) + "p"
	marks = nil
	var completed int64
	err = bench.ProfileScripts(ctx, rdb, ns, 120, 50, func(p string) error {
		if p == "" {
			// Before ProfileScripts clears the namespace.
			n, err := rdb.XLen(ctx, "{"+ns+"}:events").Result()
			completed = n
			return err
		}
		marks = append(marks, p)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{bench.PhaseSubmit, bench.PhaseRead, bench.PhaseAdmit, bench.PhaseIntent,
		bench.PhaseRunpodID, bench.PhaseFinalize}, marks)
	require.EqualValues(t, 3*120, completed, "submitted, queued and completed events for every job")
}
