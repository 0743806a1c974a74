package failover

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestClusterCrowdedNodeServesCommands is the mechanism behind the
// partitioned failover test's stalls (a final Get loop that crawled for
// minutes with the machine idle): a namespace of 6 partitions whose slots
// put 4 on one master, served by 3 workers sharing one client built by
// redisconn. Each worker keeps a blocking XREADGROUP open per partition, so
// 12 readers share that node's pool, which go-redis sizes at 5 connections
// per CPU (10 on a 2-core machine). Before, the readers held every
// connection and handed each one straight to the next waiting reader: every
// Get to that node waited for a reader's BLOCK to end (and each of the
// workers' own commands did too). Now blocking reads hold at most half of a
// client's pool, so the Gets find a connection without waiting.
func TestClusterCrowdedNodeServesCommands(t *testing.T) {
	t.Parallel()
	const p = 6
	c, url := startCluster(t)
	ctx := context.Background()

	// A namespace with 4 or more partitions on one master: the first of
	// ns-0, ns-1, ... (about one in three is).
	base := redistest.Namespace(t)
	var ns string
	var crowded []int // partitions on the crowded master
	for k := 0; ns == ""; k++ {
		require.Less(t, k, 200, "no namespace crowds a master")
		cand := fmt.Sprintf("%s-%d", base, k)
		on := map[string][]int{}
		for i := range p {
			m, _, err := c.MasterOf(ctx, "{"+streams.PartitionNamespace(cand, p, i)+"}:submissions")
			require.NoError(t, err)
			on[m.Addr] = append(on[m.Addr], i)
		}
		for _, parts := range on {
			if len(parts) >= 4 {
				ns, crowded = cand, parts
			}
		}
	}

	rdb, _, rp := connectAndSimulate(t, url, 16)
	cc, ok := rdb.(*redis.ClusterClient)
	require.True(t, ok)
	require.Less(t, cc.Options().PoolSize, 3*len(crowded),
		"the node's pool is smaller than its blocking readers (3 workers x %d partitions): pool %d", len(crowded), cc.Options().PoolSize)

	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 3 {
		w, err := worker.New(rdb, worker.Config{
			Runpod: rp, InstanceID: fmt.Sprintf("cw%d", i), Namespace: ns, Partitions: p,
			MinIdle: 30 * time.Second, HeartbeatInterval: time.Second, ClaimInterval: 10 * time.Second,
			Poll:   workflow.PollPolicy{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond},
			Logger: hclog.NewNullLogger(),
		})
		require.NoError(t, err)
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(wctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	cl, err := client.New(rdb, client.Config{Namespace: ns, Partitions: p})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	// The workers run: one job through every crowded partition completes.
	var ids []string
	for i := 0; len(ids) < len(crowded); i++ {
		id := fmt.Sprintf("c%d", i)
		if part := streams.PartitionOf(id, p); part == crowded[len(ids)] {
			ids = append(ids, id)
			_, err := cl.Submit(ctx, client.SubmitOptions{ClientJobID: id, Input: map[string]any{"mock_delay": 1}})
			require.NoError(t, err)
		}
	}
	for _, id := range ids {
		rctx, rcancel := context.WithTimeout(ctx, stall)
		res, err := cl.AwaitResult(rctx, id)
		rcancel()
		require.NoError(t, err)
		require.Equal(t, workflow.StateCompleted, res.Status)
	}

	// Gets of jobs on the crowded master, one after the other. Each
	// returns (a generous deadline each: a clean answer, not a timeout).
	const gets = 60
	before := cc.PoolStats().WaitCount
	for i := range gets {
		id := ids[i%len(ids)]
		gctx, gcancel := context.WithTimeout(ctx, stall)
		j, err := cl.Get(gctx, id)
		gcancel()
		require.NoError(t, err)
		require.Equal(t, workflow.StateCompleted, j.State)
	}
	// Before, every Get (and each reader beyond the pool, at every BLOCK)
	// waited for a connection: hundreds of waits. Now no Get needs to; a
	// few waits of the workers' own commands, when more of them than the
	// free half run at once on that node, are not the stall.
	waited := cc.PoolStats().WaitCount - before
	t.Logf("crowded master: partitions %v of %d, pool %d per node; %d Gets, %d waits for a pooled connection",
		crowded, p, cc.Options().PoolSize, gets, waited)
	require.Less(t, int(waited), gets/4, "commands waited for connections held by blocking reads")
}
