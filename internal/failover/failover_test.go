package failover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redisconn"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// jobsPerRun is the number of jobs each scenario submits.
const jobsPerRun = 300

func skipIfMissing(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, redistest.ErrNoBinary) {
		t.Skipf("skipping: %v", err)
	}
	require.NoError(t, err)
}

// startCluster starts a 3-master, 3-replica Cluster for the test (skipped
// when redis-server is missing) and returns it with a redis+cluster URL
// naming two of its nodes.
func startCluster(t *testing.T) (*redistest.Cluster, string) {
	t.Helper()
	c, err := redistest.StartCluster()
	skipIfMissing(t, err)
	t.Cleanup(c.Stop)
	return c, "redis+cluster://" + strings.Join(c.Addrs()[:2], ",")
}

// TestClusterMasterFailover: 300 jobs on a 3-master, 3-replica cluster;
// the master of the namespace's slot is killed after a third of them have
// finished. The replica takes over; every job ends with exactly one
// terminal event, nothing is left pending.
func TestClusterMasterFailover(t *testing.T) {
	t.Parallel()
	c, url := startCluster(t)
	ns := redistest.Namespace(t)
	master, replica, err := c.MasterOf(context.Background(), "{"+ns+"}:submissions")
	require.NoError(t, err)
	require.NotNil(t, replica, "the slot's master has a replica")
	// A one-server URL naming a node that does not serve the slot says
	// what to use instead of failing with MOVED alone.
	var other string
	for _, a := range c.Addrs() {
		if a != master.Addr && a != replica.Addr {
			other = a
			break
		}
	}
	single, err := redisconn.Parse(redisconn.Options{URL: "redis://" + other + "/0"})
	require.NoError(t, err)
	one := single.Client()
	err = one.Set(context.Background(), "{"+ns+"}:probe", "1", 0).Err()
	_ = one.Close()
	require.ErrorIs(t, err, redisconn.ErrClusterNode)
	require.ErrorContains(t, err, "MOVED")

	_, d := run(t, url, ns, master.Addr, master.Kill)
	t.Logf("cluster: master %s killed; replica %s took over; a job submitted at the kill completed %s later", master.Addr, replica.Addr, d)
}

// TestClusterSilentMaster: the master of the namespace's slot stops
// (SIGSTOP: connections open, nothing answers) instead of refusing
// connections. A command sent to it waits for its read timeout, not for
// the kernel's TCP timeouts; the slot map is reloaded and the replica's
// promotion found within a few read timeouts of the node timeout.
// Measured with go-redis's 3 s read timeout (before redisconn set 2 s and
// blocking reads their own deadline): the first Get answered 15.1 s after
// the pause, the job submitted at the pause completed after 15.2 s; after:
// 4.7 s and 9.1 s.
func TestClusterSilentMaster(t *testing.T) {
	t.Parallel()
	c, url := startCluster(t)
	ns := redistest.Namespace(t)
	master, replica, err := c.MasterOf(context.Background(), "{"+ns+"}:submissions")
	require.NoError(t, err)
	require.NotNil(t, replica, "the slot's master has a replica")
	t.Cleanup(master.Kill) // SIGKILL ends a stopped process too
	get, done := run(t, url, ns, master.Addr, master.Pause)
	// The promotion takes a few node timeouts (failure detection, then the
	// replica's election); a Get then loses at most a read timeout on the
	// silent node per attempt, and one more for a slot map reload that
	// asks it. The slack is for a loaded machine, not for the mechanism.
	bound := 3*redistest.ClusterNodeTimeout + 4*redisconn.ReadTimeout + 20*time.Second
	require.Less(t, get, bound, "the first Get after the pause answered %s later", get)
	require.Less(t, done, bound+10*time.Second, "the first job after the pause completed %s later", done)
	t.Logf("cluster: master %s paused; replica %s took over; first Get %s, first job completed %s after the pause", master.Addr, replica.Addr, get, done)
}

// TestSentinelMasterFailover: the same with a master, a replica and three
// sentinels; the client follows the promotion through the sentinels.
func TestSentinelMasterFailover(t *testing.T) {
	t.Parallel()
	s, err := redistest.StartSentinel()
	skipIfMissing(t, err)
	t.Cleanup(s.Stop)
	url := "redis+sentinel://" + strings.Join(s.SentinelAddrs(), ",") + "/" + redistest.SentinelMaster
	ns := redistest.Namespace(t)
	_, d := run(t, url, ns, s.Master.Addr, s.Master.Kill)
	now, err := s.CurrentMaster(context.Background())
	require.NoError(t, err)
	require.Equal(t, s.Replica.Addr, now, "the sentinels promoted the replica")
	t.Logf("sentinel: master %s killed; %s promoted; a job submitted at the kill completed %s later", s.Master.Addr, now, d)
}

// run submits jobsPerRun jobs through a client built from url by
// redisconn, runs them on two workers against the simulator, kills the
// master (kill) once a third have finished, waits for all of them, checks
// the invariants and returns the time from the kill to the completion of a
// job submitted right after it.
// connectAndSimulate opens the Redis client for url and serves a Runpod
// simulator with gpus workers and no limits, with a client for it whose
// breaker rides out the failover.
func connectAndSimulate(t *testing.T, url string, gpus int) (redis.UniversalClient, *runpodsim.Server, *activities.Client) {
	t.Helper()
	conn, err := redisconn.Parse(redisconn.Options{URL: url})
	require.NoError(t, err)
	rdb := conn.Client()
	t.Cleanup(func() { _ = rdb.Close() })
	sim, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "ep", APIKey: "key",
		GPUWorkers: gpus, DisableRateLimits: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sim.Close() })
	rp, err := activities.New(activities.Config{APIKey: "key", EndpointID: "ep", BaseURL: sim.URL,
		Limiter: activities.NewLocalLimiter(nil), BreakerFailures: 1000})
	require.NoError(t, err)
	t.Cleanup(rp.CloseIdleConnections)
	return rdb, sim, rp
}

func run(t *testing.T, url, ns, masterAddr string, kill func()) (firstAnswer, recovered time.Duration) {
	t.Helper()
	rdb, _, rp := connectAndSimulate(t, url, 64)

	var mu sync.Mutex
	var outcomes int // outcomes written
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		w, err := worker.New(rdb, worker.Config{
			Runpod: rp, InstanceID: fmt.Sprintf("w%d", i), Namespace: ns,
			MinIdle: 3 * time.Second, HeartbeatInterval: 500 * time.Millisecond, ClaimInterval: 500 * time.Millisecond,
			Poll:   workflow.PollPolicy{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond},
			Retry:  workflow.RetryPolicy{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond},
			Logger: hclog.NewNullLogger(),
			Hooks: worker.Hooks{OnOutcome: func(string, workflow.State) {
				mu.Lock()
				outcomes++
				mu.Unlock()
			}},
		})
		require.NoError(t, err)
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	cl, err := client.New(rdb, client.Config{Namespace: ns})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	tctx, tcancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer tcancel()
	ids := make([]string, jobsPerRun)
	for i := range ids {
		ids[i] = fmt.Sprintf("j%03d", i)
		in := map[string]any{"mock_delay": 100 + (i*37)%2400}
		_, err := cl.Submit(tctx, client.SubmitOptions{ClientJobID: ids[i], Input: in})
		require.NoError(t, err)
	}
	// Every submission is on the replica before the kill: asynchronous
	// replication may lose the last writes, and a lost submission is a job
	// nobody knows (docs/operations.md); workers' later writes recover.
	require.NoError(t, redistest.WaitReplicated(tctx, masterAddr, 10*time.Second))

	done := func() int {
		mu.Lock()
		defer mu.Unlock()
		return outcomes
	}
	require.Eventually(t, func() bool { return done() >= jobsPerRun/3 }, time.Minute, 5*time.Millisecond)
	killedAt := time.Now()
	kill()
	getBack := firstGet(tctx, cl, ids[0], killedAt)
	// The time to recover is how long a job submitted right after the
	// master's death takes to complete: it goes through the new master only.
	_, err = cl.Submit(tctx, client.SubmitOptions{ClientJobID: "probe", Input: map[string]any{"mock_delay": 1}})
	require.NoError(t, err, "a submit rides out the promotion")
	require.Eventually(t, func() bool {
		j, err := cl.Get(tctx, "probe")
		if err == nil && j.State == workflow.StateCompleted {
			recovered = time.Since(killedAt)
			return true
		}
		return false
	}, 2*time.Minute, 5*time.Millisecond, "the probe job never completed")

	// Wait until every job is terminal, reading records through the same
	// client (it rides out the failover with redisconn's retries).
	require.Eventually(t, func() bool {
		for _, id := range ids {
			j, err := cl.Get(tctx, id)
			if err != nil || !j.State.Terminal() {
				return false
			}
		}
		return true
	}, 2*time.Minute, 100*time.Millisecond, "not every job finished after the failover")

	// One terminal event per job, and nothing left in the stream.
	store, err := streams.New(rdb, streams.Config{Namespace: ns})
	require.NoError(t, err)
	terminal := map[string]int{}
	after := "0"
	for {
		evs, err := store.ReadEvents(tctx, after, 1000, 0)
		require.NoError(t, err)
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if workflow.State(e.State).Terminal() && e.Type != streams.EventCancelRequested {
				switch e.Type {
				case streams.EventCompleted, streams.EventFailed, streams.EventTimedOut, streams.EventCanceled:
					terminal[e.JobID]++
				}
			}
			after = e.ID
		}
	}
	states := map[workflow.State]int{}
	for _, id := range ids {
		require.Equal(t, 1, terminal[id], "job %s: terminal events", id)
		j, err := cl.Get(tctx, id)
		require.NoError(t, err)
		states[j.State]++
	}
	require.Equal(t, jobsPerRun, states[workflow.StateCompleted], "every job completed: %v", states)
	require.Eventually(t, func() bool {
		n, err := rdb.XLen(tctx, "{"+ns+"}:submissions").Result()
		return err == nil && n == 0
	}, 30*time.Second, 50*time.Millisecond, "submission entries left in the stream")
	pend, err := rdb.XPending(tctx, "{"+ns+"}:submissions", "workers").Result()
	if err == nil {
		require.Zero(t, pend.Count, "entries left pending")
	} else {
		require.True(t, redis.HasErrorPrefix(err, "NOGROUP"), "%v", err)
	}

	firstAnswer = <-getBack
	t.Logf("after the kill: the first Get answered %s later, the probe job completed %s later", firstAnswer, recovered)
	return firstAnswer, recovered
}

// firstGet polls Get of id (a job on the dead master) from the kill until
// one answers, and sends how long after killedAt that was; each Get rides
// out the promotion with redisconn's retries or fails, and is sent again.
func firstGet(ctx context.Context, cl *client.Client, id string, killedAt time.Time) <-chan time.Duration {
	out := make(chan time.Duration, 1)
	go func() {
		for ctx.Err() == nil {
			if _, err := cl.Get(ctx, id); err == nil {
				out <- time.Since(killedAt)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
		out <- -1
	}()
	return out
}
