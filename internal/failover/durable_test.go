package failover

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// TestClusterDurableWriteWaitsOnItsMaster: a durable write (Submit,
// Finalize, a durable Checkpoint) is the script and a WAIT pipelined on one
// connection, since WAIT waits for the writes of its own connection. On a
// Cluster client the keyless WAIT was routed to any master, not the
// script's: there it had nothing to wait for and answered at once, so with
// the slot's replica stalled (SIGSTOP) writes were reported durable that no
// replica had.
func TestClusterDurableWriteWaitsOnItsMaster(t *testing.T) {
	t.Parallel()
	c, _ := startCluster(t)
	ctx := context.Background()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := streams.New(rdb, streams.Config{Namespace: "dur"})
	require.NoError(t, err)
	st.SetDurability(streams.Durability{Replicas: 1, Timeout: time.Minute})
	require.NoError(t, st.CheckDurability(ctx))
	_, err = st.Submit(ctx, streams.Submission{JobID: "up", Input: []byte(`{}`)}, streams.SubmitOpts{})
	require.NoError(t, err, "the replica is up: confirmed")

	_, replica, err := c.MasterOf(ctx, st.Keys().Submissions())
	require.NoError(t, err)
	require.NotNil(t, replica)
	// A stalled replica never confirms: the short timeout only bounds the test.
	st.SetDurability(streams.Durability{Replicas: 1, Timeout: 100 * time.Millisecond})
	replica.Pause()
	t.Cleanup(replica.Resume)
	for i := range 6 { // a keyless command goes to one of 3 masters: 6 tries miss the right one
		_, err := st.Submit(ctx, streams.Submission{JobID: fmt.Sprintf("stalled-%d", i), Input: []byte(`{}`)}, streams.SubmitOpts{})
		require.ErrorIs(t, err, streams.ErrNotDurable, "submit %d: no replica has it", i)
	}
}

// TestClusterCheckDurabilityAsksItsMaster: CheckDurability (the worker
// refuses to start when fewer replicas are connected than asked) read INFO
// replication from any master of a Cluster, so with the namespace's master
// left without a replica it passed whenever another master answered.
func TestClusterCheckDurabilityAsksItsMaster(t *testing.T) {
	t.Parallel()
	c, _ := startCluster(t)
	ctx := context.Background()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := streams.New(rdb, streams.Config{Namespace: "durcheck"})
	require.NoError(t, err)
	st.SetDurability(streams.Durability{Replicas: 1, Timeout: time.Second})
	require.NoError(t, st.CheckDurability(ctx))
	master, replica, err := c.MasterOf(ctx, st.Keys().Submissions())
	require.NoError(t, err)
	require.NotNil(t, replica)
	replica.Kill()
	mc := redis.NewClient(&redis.Options{Addr: master.Addr})
	t.Cleanup(func() { _ = mc.Close() })
	require.Eventually(t, func() bool {
		m, err := mc.InfoMap(ctx, "replication").Result()
		return err == nil && m["Replication"]["connected_slaves"] == "0"
	}, 30*time.Second, 20*time.Millisecond, "the master sees its replica gone")
	for i := range 6 { // a keyless command goes to one of 3 masters
		require.Error(t, st.CheckDurability(ctx), "check %d: the namespace's master has no replica", i)
	}
}
