package failover

import (
	"context"
	"fmt"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// partitionedJobs is the size of the partitioned cluster run: a few
// thousand jobs, CI-sized.
const partitionedJobs = 2000

// TestClusterPartitionedFailover: a namespace split into 6 partitions over
// a 3-master, 3-replica cluster (so every master carries some partitions),
// 2,000 jobs on three workers; the master of partition 0's slot is killed
// after a third have finished. Every job ends with exactly one terminal
// outcome (the client's audit over every partition: no violation), every
// one completed, the simulator ran each job at most once more than the
// audit's possible duplicates, and nothing is left pending in any
// partition.
func TestClusterPartitionedFailover(t *testing.T) {
	t.Parallel()
	const p = 6
	c, url := startCluster(t)
	ns := redistest.Namespace(t)
	ctx := context.Background()

	// The partitions are spread over the masters.
	masters := map[string]bool{}
	for i := range p {
		m, _, err := c.MasterOf(ctx, "{"+streams.PartitionNamespace(ns, p, i)+"}:submissions")
		require.NoError(t, err)
		masters[m.Addr] = true
	}
	require.GreaterOrEqual(t, len(masters), 2, "6 partitions on one master")
	master, replica, err := c.MasterOf(ctx, "{"+streams.PartitionNamespace(ns, p, 0)+"}:submissions")
	require.NoError(t, err)
	require.NotNil(t, replica)

	rdb, srv, rp := connectAndSimulate(t, url, 256)

	var mu sync.Mutex
	outcomes := map[string]int{}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var workers []*worker.Worker
	for i := range 3 {
		w, err := worker.New(rdb, worker.Config{
			Runpod: rp, InstanceID: fmt.Sprintf("pw%d", i), Namespace: ns, Partitions: p,
			MaxInFlight: 400, Concurrency: 32,
			MinIdle: 3 * time.Second, HeartbeatInterval: 500 * time.Millisecond, ClaimInterval: 500 * time.Millisecond,
			Poll:   workflow.PollPolicy{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond},
			Retry:  workflow.RetryPolicy{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond},
			Logger: hclog.NewNullLogger(),
			Hooks: worker.Hooks{OnOutcome: func(id string, _ workflow.State) {
				mu.Lock()
				outcomes[id]++
				mu.Unlock()
			}},
		})
		require.NoError(t, err)
		workers = append(workers, w)
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(wctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	cl, err := client.New(rdb, client.Config{Namespace: ns, Partitions: p})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	// No fixed total: a loaded machine may take many times the usual 30 s.
	// The waits below fail only when nothing progresses for stall; tctx
	// just ends before the package's test timeout does.
	tctx, tcancel := context.WithDeadline(ctx, testDeadline(t))
	defer tcancel()
	// A subscription from before the first submit sees every job's events.
	sub, err := cl.NewSubscription(tctx, client.EventsOptions{})
	require.NoError(t, err)
	require.Len(t, strings.Split(sub.Position(), ","), p, "one position per partition")

	ids := make([]string, partitionedJobs)
	var sw sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 { // a few producers in parallel
		sw.Add(1)
		go func() {
			defer sw.Done()
			for i := g; i < len(ids); i += 8 {
				id := fmt.Sprintf("pj%04d", i)
				ids[i] = id
				if _, err := cl.Submit(tctx, client.SubmitOptions{ClientJobID: id,
					Input: map[string]any{"mock_delay": 50 + (i*37)%400}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	sw.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, cl.CheckPartitions(tctx), "the workers recorded P = 6")
	for m := range masters {
		require.NoError(t, redistest.WaitReplicated(tctx, m, stall))
	}

	// written counts every outcome write (a rewritten one too): it moves
	// while any worker makes headway.
	written := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, k := range outcomes {
			n += k
		}
		return n
	}
	finished := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(outcomes)
	}
	require.True(t, waitProgress(tctx, func() (bool, int) {
		n := finished()
		return n >= partitionedJobs/3, n
	}), "a third of the jobs did not finish: %d, and none finished for %s", finished(), stall)
	killedAt := time.Now()
	master.Kill()
	var onDead string // a job of partition 0, on the dead master
	for _, id := range ids {
		if streams.PartitionOf(id, p) == 0 {
			onDead = id
			break
		}
	}
	getBack := firstGet(tctx, cl, onDead, killedAt)
	probe := ""
	for i := 0; probe == ""; i++ { // a job of partition 0, whose master died
		if id := fmt.Sprintf("probe-%d", i); streams.PartitionOf(id, p) == 0 {
			probe = id
		}
	}
	_, err = cl.Submit(tctx, client.SubmitOptions{ClientJobID: probe, Input: map[string]any{"mock_delay": 1}})
	require.NoError(t, err, "a submit to the dead master's partition rides out the promotion")
	res, err := cl.AwaitResult(tctx, probe)
	require.NoError(t, err)
	require.Equal(t, workflow.StateCompleted, res.Status)
	recovered := time.Since(killedAt)
	firstGetAfter := <-getBack

	// Wait until every job is terminal: a pass that finds one that is not
	// starts the next pass there (the client rides out the failover).
	// It fails only when neither the pass nor any outcome write moved for
	// stall: a slow run keeps waiting, a stuck job does not.
	left := slices.Clone(ids)
	waitProgress(tctx, func() (bool, int) {
		for len(left) > 0 {
			j, err := cl.Get(tctx, left[0])
			if err != nil || !j.State.Terminal() {
				break
			}
			left = left[1:]
		}
		return len(left) == 0, len(ids) - len(left) + written()
	})
	if len(left) > 0 {
		// Say what is stuck, and where.
		for _, id := range left[:min(len(left), 10)] {
			j, err := cl.Get(ctx, id)
			t.Logf("not finished: %s partition %d: %+v (err %v)", id, streams.PartitionOf(id, p), j, err)
		}
		for _, w := range workers {
			t.Logf("worker %s: %+v", w.InstanceID(), w.Stats())
		}
		ps, _ := streams.NewPartitions(rdb, streams.Config{Namespace: ns}, p)
		for i, st := range ps.All() {
			q, err := st.QueueInfo(ctx)
			t.Logf("partition %d: %+v (err %v)", i, q, err)
		}
		t.Fatalf("%d jobs not finished after the failover; none finished for %s (or the test's time ran out: %v)",
			len(left), stall, tctx.Err())
	}

	// List walks every partition's records, each on its own master.
	listed := map[string]bool{}
	for cursor, pages := uint64(0), 0; ; pages++ {
		require.Less(t, pages, 10_000)
		page, err := cl.List(tctx, client.ListOptions{Limit: 500, Cursor: cursor})
		require.NoError(t, err)
		for _, j := range page.Jobs {
			listed[j.ID] = true
		}
		if cursor = page.NextCursor; cursor == 0 {
			break
		}
	}
	require.Len(t, listed, partitionedJobs+1, "List saw every job of every partition (and the probe)")

	// The audit reads every partition's events: one terminal outcome per
	// job, no violation.
	rep, err := cl.Audit(tctx, client.AuditOptions{})
	require.NoError(t, err)
	require.True(t, rep.OK(), "audit: %+v", rep.Violations)
	states := map[workflow.State]int{}
	for _, id := range ids {
		// One Get is one round trip: bounded by stall, so a Get that hangs
		// (seen twice under load, after every job had completed: one Get
		// blocked with the machine idle until the test's context ended)
		// fails here with every goroutine's stack instead of eating the
		// whole budget.
		gctx, gcancel := context.WithTimeout(tctx, stall)
		j, err := cl.Get(gctx, id)
		gcancel()
		if err != nil {
			var stacks strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			t.Logf("goroutines:\n%s", stacks.String())
		}
		require.NoError(t, err)
		states[j.State]++
	}
	require.Equal(t, partitionedJobs, states[workflow.StateCompleted], "every job completed: %v", states)

	// The subscription taken before the submits delivers each job's
	// terminal event once, across the partitions.
	terminal := map[string]int{}
	rest, err := cl.NewSubscription(tctx, client.EventsOptions{From: sub.Position(), StopAtEnd: true})
	require.NoError(t, err)
	for ev, err := range rest.Events(tctx) {
		require.NoError(t, err)
		if ev.Type.Terminal() {
			terminal[ev.JobID]++
		}
	}
	for _, id := range ids {
		require.Equal(t, 1, terminal[id], "job %s: terminal events", id)
	}

	// Nothing run twice beyond what the audit counts as possible, nothing
	// pending in any partition.
	runs := srv.Sim.Stats().Requests[runpodsim.OpRun]
	require.GreaterOrEqual(t, runs, int64(partitionedJobs+1))
	require.LessOrEqual(t, runs, int64(partitionedJobs+1+rep.PossibleDuplicateGPUJobs),
		"/run calls beyond the jobs and the possible duplicates the audit counts")
	ps, err := streams.NewPartitions(rdb, streams.Config{Namespace: ns}, p)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		q, err := ps.QueueInfo(tctx)
		return err == nil && q.Length == 0 && q.Pending == 0
	}, stall, 50*time.Millisecond, "submissions left in some partition")
	// A worker's outcome write the dead master acknowledged but never
	// replicated is written again by the job's next owner: the hook counts
	// both, the surviving history (the audit) has one.
	rewritten := 0
	mu.Lock()
	for _, n := range outcomes {
		rewritten += n - 1
	}
	mu.Unlock()
	t.Logf("partitioned cluster: P=%d on %d masters, %d jobs; master %s (partition 0) killed, replica %s took over; "+
		"a Get of a partition-0 job answered %s later, a partition-0 job submitted at the kill completed %s later; /run calls %d, possible duplicates %d, outcomes written again %d",
		p, len(masters), partitionedJobs, master.Addr, replica.Addr, firstGetAfter, recovered, runs, rep.PossibleDuplicateGPUJobs, rewritten)
}

// stall is how long a wait of this package may see no progress at all
// before it fails: far beyond any pause of a loaded machine, well within
// the package's test timeout.
const stall = 2 * time.Minute

// testDeadline is when the test's own waits must give up: shortly before
// go test's -timeout would kill the whole package without the diagnostics.
func testDeadline(t *testing.T) time.Time {
	if d, ok := t.Deadline(); ok {
		return d.Add(-30 * time.Second)
	}
	return time.Now().Add(10 * time.Minute)
}

// waitProgress polls step until it reports done. It gives up, returning
// false, when the progress count step returns has not grown for stall, or
// when ctx ends.
func waitProgress(ctx context.Context, step func() (done bool, progress int)) bool {
	last, lastAt := -1, time.Now()
	for {
		done, n := step()
		if done {
			return true
		}
		if n > last {
			last, lastAt = n, time.Now()
		}
		if time.Since(lastAt) > stall || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
