package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// partsSetup is a test namespace split into p partitions.
func partsSetup(t *testing.T, p int) (*testBundle, *streams.Partitions) {
	t.Helper()
	b := setup(t)
	ps, err := streams.NewPartitions(b.rdb, streams.Config{Namespace: b.ns}, p)
	require.NoError(t, err)
	return b, ps
}

func submitTo(t *testing.T, ps *streams.Partitions, id, input string) {
	t.Helper()
	res, err := ps.For(id).Submit(context.Background(), streams.Submission{JobID: id, Input: []byte(input)}, streams.SubmitOpts{})
	require.NoError(t, err)
	require.True(t, res.Created, id)
}

// TestPartitionedWorkersRunEveryJobOnce: two workers over P=4 run every job
// of every partition exactly once, each job's record and events in its
// partition, and every partition's group ends with nothing pending.
func TestPartitionedWorkersRunEveryJobOnce(t *testing.T) {
	t.Parallel()
	b, ps := partsSetup(t, 4)
	var outcomes sync.Map
	var count atomic.Int64
	for i := range 2 {
		cfg := b.config(fmt.Sprintf("w%d", i))
		cfg.Partitions = 4
		cfg.MaxInFlight = 20
		cfg.Hooks.OnOutcome = func(id string, _ workflow.State) {
			count.Add(1)
			if _, dup := outcomes.LoadOrStore(id, true); dup {
				t.Errorf("second outcome for %s", id)
			}
		}
		b.start(t, cfg)
	}
	const n = 200
	ids := jobIDs("pj", n)
	for _, id := range ids {
		submitTo(t, ps, id, `{"mock_delay":10}`)
	}
	require.Eventually(t, func() bool { return count.Load() == n }, time.Minute, 20*time.Millisecond,
		"outcomes %d of %d", count.Load(), n)
	perPart := make([]int, 4)
	for _, id := range ids {
		rec, err := ps.For(id).Get(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, string(workflow.StateCompleted), rec.State)
		perPart[streams.PartitionOf(id, 4)]++
	}
	for i, st := range ps.All() {
		require.NotZero(t, perPart[i], "partition %d got no job", i)
		pending, err := st.Pending(context.Background())
		require.NoError(t, err)
		require.Zero(t, pending, "partition %d", i)
	}
	runs, _, _ := b.rp.counts()
	require.Equal(t, n, runs, "one /run per job")
	stored, err := ps.StoredPartitions(context.Background())
	require.NoError(t, err)
	require.Equal(t, 4, stored, "the first worker recorded P")
}

// TestServePartitionsSubset: a worker serving partitions {0, 2} of 4 runs
// their jobs and leaves partitions 1 and 3 untouched (no group read, no
// job admitted), for a worker that serves those.
func TestServePartitionsSubset(t *testing.T) {
	t.Parallel()
	b, ps := partsSetup(t, 4)
	cfg := b.config("w02")
	cfg.Partitions, cfg.ServePartitions = 4, []int{2, 0}
	b.start(t, cfg)
	ids := jobIDs("sub", 80)
	for _, id := range ids {
		submitTo(t, ps, id, `{}`)
	}
	served := func(id string) bool { p := streams.PartitionOf(id, 4); return p == 0 || p == 2 }
	for _, id := range ids {
		if served(id) {
			b.waitState2(t, ps, id, workflow.StateCompleted)
		}
	}
	for _, id := range ids {
		if !served(id) {
			rec, err := ps.For(id).Get(context.Background(), id)
			require.NoError(t, err)
			require.Equal(t, string(workflow.StateSubmitted), rec.State, id)
		}
	}
	q, err := ps.At(1).QueueInfo(context.Background())
	require.NoError(t, err)
	require.False(t, q.GroupExists, "partition 1 is not served")

	cfg2 := b.config("w13")
	cfg2.Partitions, cfg2.ServePartitions = 4, []int{1, 3}
	b.start(t, cfg2)
	for _, id := range ids {
		b.waitState2(t, ps, id, workflow.StateCompleted)
	}
}

func (b *testBundle) waitState2(t *testing.T, ps *streams.Partitions, id string, st workflow.State) {
	t.Helper()
	require.Eventually(t, func() bool {
		rec, err := ps.For(id).Get(context.Background(), id)
		return err == nil && rec.State == string(st)
	}, time.Minute, 10*time.Millisecond, "job %s never reached %s", id, st)
}

// TestPartitionMismatchRefused: a worker configured with another P than
// the namespace's recorded one does not start, and says both counts.
func TestPartitionMismatchRefused(t *testing.T) {
	t.Parallel()
	b, ps := partsSetup(t, 3)
	require.NoError(t, ps.CheckPartitions(context.Background(), true))
	cfg := b.config("w")
	cfg.Partitions = 2
	w, err := New(b.rdb, cfg)
	require.NoError(t, err)
	err = w.Run(context.Background())
	require.ErrorIs(t, err, streams.ErrPartitionsMismatch)
	require.ErrorContains(t, err, "has 3 partitions")
	require.ErrorContains(t, err, "configured with 2")
}

// TestWrongPartitionEntryDeadLettered: a raw producer's entry written to a
// partition its id does not hash to is dead-lettered there with a reason
// naming the right partition, and no record is created where nobody looks.
func TestWrongPartitionEntryDeadLettered(t *testing.T) {
	t.Parallel()
	b, ps := partsSetup(t, 4)
	const id = "job-1" // partition 3 of 4
	require.Equal(t, 3, streams.PartitionOf(id, 4))
	wrong := ps.At(1)
	require.NoError(t, b.rdb.XAdd(context.Background(), &redis.XAddArgs{
		Stream: wrong.Keys().Submissions(), Values: map[string]any{"v": "1", "job_id": id, "input": "{}"},
	}).Err())
	cfg := b.config("w")
	cfg.Partitions = 4
	b.start(t, cfg)
	require.Eventually(t, func() bool {
		d, err := wrong.ReadDead(context.Background(), "", 10)
		return err == nil && len(d) == 1
	}, time.Minute, 10*time.Millisecond)
	d, err := wrong.ReadDead(context.Background(), "", 10)
	require.NoError(t, err)
	require.Contains(t, d[0].Reason, "belongs to partition 3 of 4")
	require.Equal(t, id, d[0].JobID, "the copy keeps the submission's fields")
	_, err = wrong.Get(context.Background(), id)
	require.ErrorIs(t, err, streams.ErrNotFound)
}

// TestFetchSharesCapacityAcrossPartitions: with capacity for only a few
// jobs and a backlog in every partition, no partition waits for another's
// backlog to drain: every partition has a job running while all of them
// still have a backlog.
func TestFetchSharesCapacityAcrossPartitions(t *testing.T) {
	t.Parallel()
	b, ps := partsSetup(t, 3)
	// Partition 0 gets a large backlog first, then 1 and 2 a few jobs.
	var ids [3][]string
	for i := 0; len(ids[0]) < 60 || len(ids[1]) < 5 || len(ids[2]) < 5; i++ {
		id := fmt.Sprintf("fair-%d", i)
		p := streams.PartitionOf(id, 3)
		if p != 0 && len(ids[p]) >= 5 || p == 0 && len(ids[0]) >= 60 {
			continue
		}
		ids[p] = append(ids[p], id)
	}
	for _, p := range []int{0, 1, 2} {
		for _, id := range ids[p] {
			submitTo(t, ps, id, `{"mock_delay":300}`)
		}
	}
	started := make(chan string, 100)
	cfg := b.config("w")
	cfg.Partitions, cfg.MaxInFlight = 3, 3
	cfg.Hooks.OnTransition = func(id string, _, to workflow.State) {
		if to == workflow.StateQueued || to == workflow.StateInProgress {
			select {
			case started <- id:
			default:
			}
		}
	}
	b.start(t, cfg)
	// Among the first jobs to reach Runpod, before partition 0's backlog of
	// 60 is anywhere near drained, are jobs of partitions 1 and 2.
	seen := map[int]bool{}
	timeout := time.After(time.Minute)
	for n := 0; n < 20 && !(seen[1] && seen[2]); n++ {
		select {
		case id := <-started:
			seen[streams.PartitionOf(id, 3)] = true
		case <-timeout:
			t.Fatal("jobs did not start")
		}
	}
	require.True(t, seen[1] && seen[2], "partitions 1 and 2 starved behind partition 0: %v", seen)
}

// TestReclaimAcrossPartitions: a worker that died holding jobs in every
// partition (admitted, never run) leaves them pending in each partition's
// group; a peer's claim passes (XAUTOCLAIM per partition) take over all of
// them, and each runs once.
func TestReclaimAcrossPartitions(t *testing.T) {
	t.Parallel()
	const p = 3
	b, ps := partsSetup(t, p)
	ctx := context.Background()
	ids := jobIDs("rc", 30)
	for _, id := range ids {
		submitTo(t, ps, id, `{}`)
	}
	// The ghost reads and admits every entry of every partition, then dies.
	for i, st := range ps.All() {
		require.NoError(t, st.EnsureGroup(ctx))
		msgs, err := st.Read(ctx, "ghost", 100, 0)
		require.NoError(t, err)
		require.NotEmpty(t, msgs, "partition %d", i)
		reqs := make([]streams.AdmitRequest, len(msgs))
		for k, m := range msgs {
			reqs[k] = streams.NewAdmitRequest(m, 1<<20)
		}
		_, err = st.Admit(ctx, reqs, streams.AdmitOpts{Consumer: "ghost", MaxDeliveries: 5, ResultTTL: time.Hour})
		require.NoError(t, err)
	}
	cfg := b.config("heir")
	cfg.Partitions = p
	r := b.start(t, cfg)
	require.Eventually(t, func() bool {
		_, _ = r.w.RecoverNow(ctx) // entries become claimable after MinIdle (1 s)
		for _, id := range ids {
			rec, err := ps.For(id).Get(ctx, id)
			if err != nil || rec.State != string(workflow.StateCompleted) {
				return false
			}
		}
		return true
	}, time.Minute, 200*time.Millisecond, "not every partition's jobs were reclaimed")
	runs, _, _ := b.rp.counts()
	require.Equal(t, len(ids), runs, "one /run per job")
	require.GreaterOrEqual(t, r.w.Stats().Reclaimed, uint64(len(ids)))
}

// TestUnrecordedNamespaceWithOtherLayoutRefused: a raw producer following
// docs/wire-format.md on a namespace no worker ran on yet reads no count
// ("absent = 1") and XADDs to {ns}:submissions; a worker configured with
// P = 4 must not record 4 over that data and start, or the job sits where
// no worker reads. It refuses, naming the stream; so does a P = 1 worker
// over entries written under P = 4, and after a Redis rollback that lost
// {ns}:meta but kept the data, a worker with the data's count starts.
func TestUnrecordedNamespaceWithOtherLayoutRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	run := func(b *testBundle, p int) error {
		cfg := b.config("w")
		cfg.Partitions = p
		w, err := New(b.rdb, cfg)
		require.NoError(t, err)
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		started := make(chan struct{})
		go func() {
			defer close(started)
			// The check is the first thing Run does; a worker that passes it
			// runs until cancelled below, once it recorded the count.
			err = w.Run(rctx)
		}()
		ps, _ := streams.NewPartitions(b.rdb, streams.Config{Namespace: b.ns}, p)
		for {
			select {
			case <-started:
				return err
			case <-time.After(10 * time.Millisecond):
			}
			if n, _ := ps.StoredPartitions(ctx); n != 0 {
				cancel()
				<-started
				return nil
			}
		}
	}

	b := setup(t)
	one, err := streams.NewPartitions(b.rdb, streams.Config{Namespace: b.ns}, 1)
	require.NoError(t, err)
	require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: one.At(0).Keys().Submissions(),
		Values: map[string]any{"v": "1", "job_id": "job-1", "input": "{}"}}).Err())
	err = run(b, 4)
	require.ErrorIs(t, err, streams.ErrPartitionsMismatch, "a P=4 worker over P=1 entries")
	require.ErrorContains(t, err, one.At(0).Keys().Submissions())
	n, err := one.StoredPartitions(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing recorded by the refused worker")

	b2 := setup(t)
	four, err := streams.NewPartitions(b2.rdb, streams.Config{Namespace: b2.ns}, 4)
	require.NoError(t, err)
	submitTo(t, four, "job-1", `{}`) // partition 3 of 4
	err = run(b2, 1)
	require.ErrorIs(t, err, streams.ErrPartitionsMismatch, "a P=1 worker over P=4 entries")
	err = run(b2, 2)
	require.ErrorIs(t, err, streams.ErrPartitionsMismatch, "a P=2 worker over P=4 entries (in partition 3)")
	require.NoError(t, run(b2, 4), "the data's own count starts and records")
}

// hbFailing is a partition whose Redis master is away for heartbeats.
type hbFailing struct {
	store
	calls atomic.Int64
}

func (s *hbFailing) Beat(context.Context, string, streams.Liveness, []streams.Lease) (streams.BeatResult, error) {
	s.calls.Add(1)
	return streams.BeatResult{}, errors.New("injected: partition's master unreachable")
}

// hbCounting counts a healthy partition's heartbeat calls.
type hbCounting struct {
	store
	calls atomic.Int64
}

func (s *hbCounting) Beat(ctx context.Context, consumer string, lv streams.Liveness, leases []streams.Lease) (streams.BeatResult, error) {
	s.calls.Add(1)
	return s.store.Beat(ctx, consumer, lv, leases)
}

// TestHeartbeatPartitionFailureSparesOthers: partition 1's heartbeats
// fail (its Cluster master is away); partition 0 is healthy. With leases
// in more than one heartbeat batch (500 leases a batch; 1 here), a failed
// batch stopped the whole beat, so the healthy partition's leases in the
// later batches were never refreshed for as long as the other master
// stayed away: past MinIdle its peers take over jobs of a healthy
// partition. Each partition's leases must be beaten whatever another's
// heartbeats do.
func TestHeartbeatPartitionFailureSparesOthers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, ps := partsSetup(t, 2)
	var idA, idB string // A in partition 1 (failing), B in partition 0 (healthy)
	for i := 0; idA == "" || idB == ""; i++ {
		id := fmt.Sprintf("hb-%d", i)
		if streams.PartitionOf(id, 2) == 1 && idA == "" {
			idA = id
		} else if streams.PartitionOf(id, 2) == 0 && idB == "" {
			idB = id
		}
	}
	// A's entry id sorts before B's: its batch comes first in each beat.
	for _, e := range []struct{ id, entry string }{{idA, "1-1"}, {idB, "2-1"}} {
		require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: ps.For(e.id).Keys().Submissions(), ID: e.entry,
			Values: map[string]any{"v": "1", "job_id": e.id, "input": `{"mock_delay":600000}`}}).Err())
	}
	cfg := b.config("w")
	cfg.Partitions = 2
	cfg.MinIdle = time.Hour // nobody reclaims; the test watches the beats
	cfg.HeartbeatInterval = 20 * time.Millisecond
	w, err := New(b.rdb, cfg)
	require.NoError(t, err)
	w.hbBatch = 1
	healthy := &hbCounting{store: w.store.all[0]}
	failing := &hbFailing{store: w.store.all[1]}
	w.store.all[0], w.store.all[1] = healthy, failing
	b.run(t, w)
	for _, id := range []string{idA, idB} {
		require.Eventually(t, func() bool {
			rec, err := ps.For(id).Get(ctx, id)
			return err == nil && rec.RunpodID != ""
		}, time.Minute, 10*time.Millisecond, "job %s on Runpod", id)
	}
	// Both jobs are owned from here on: every beat has A's batch, then B's.
	before := healthy.calls.Load()
	start := failing.calls.Load()
	require.Eventually(t, func() bool { return failing.calls.Load() >= start+3 }, time.Minute, 5*time.Millisecond)
	require.Greater(t, healthy.calls.Load(), before,
		"partition 0's lease was not refreshed in %d beats while partition 1's heartbeats failed", failing.calls.Load()-start)
}
