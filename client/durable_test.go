package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// With Config.Durability, Submit reports success only for a job the
// replica has: a replica that stalls (SIGSTOP) gets ErrNotDurable, also
// when a restarted producer submits the same id again on a new connection
// (whose WAIT would otherwise have nothing to wait for). Then the primary
// dies and the stalled replica is promoted: every job Submit acknowledged
// is there.
func TestSubmitDurableSurvivesFailover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary, err := redistest.StartWith(redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(primary.Stop)
	replica, err := redistest.StartWith(redistest.Options{ReplicaOf: primary.Addr})
	require.NoError(t, err)
	t.Cleanup(func() { replica.Resume(); replica.Stop() })
	rrd := redis.NewClient(&redis.Options{Addr: replica.Addr})
	t.Cleanup(func() { _ = rrd.Close() })
	require.Eventually(t, func() bool {
		m, err := rrd.InfoMap(ctx, "replication").Result()
		return err == nil && m["Replication"]["master_link_status"] == "up"
	}, 10*time.Second, 20*time.Millisecond)

	newClient := func(dur streams.Durability) *client.Client {
		rdb := redis.NewClient(&redis.Options{Addr: primary.Addr})
		t.Cleanup(func() { _ = rdb.Close() })
		c, err := client.New(rdb, client.Config{Namespace: "dsub", Durability: dur})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// A live replica confirms within the generous timeout however loaded the
	// machine; a stalled one never does, so its short timeout only bounds
	// the test's time.
	confirm := streams.Durability{Replicas: 1, Timeout: time.Minute}
	stalled := streams.Durability{Replicas: 1, Timeout: 200 * time.Millisecond}
	_, err = newClient(confirm).Submit(ctx, client.SubmitOptions{ClientJobID: "before", Input: map[string]any{"n": 1}})
	require.NoError(t, err, "the replica is up: confirmed")
	c := newClient(stalled)

	replica.Pause()
	acked := map[string]bool{"before": true}
	_, err = c.Submit(ctx, client.SubmitOptions{ClientJobID: "stalled", Input: map[string]any{"n": 2}})
	require.ErrorIs(t, err, client.ErrNotDurable, "the replica cannot have it")
	if err == nil {
		acked["stalled"] = true
	}
	// A producer restarted after that error submits the same id again: the
	// job exists on the primary, but the replica still lacks it.
	_, err = newClient(stalled).Submit(ctx, client.SubmitOptions{ClientJobID: "stalled", Input: map[string]any{"n": 2}})
	require.ErrorIs(t, err, client.ErrNotDurable, "an existing id is confirmed only once the replica has it")
	if err == nil {
		acked["stalled"] = true
	}

	// Failover to the stalled replica.
	primary.Kill()
	replica.Resume()
	require.NoError(t, rrd.Do(ctx, "REPLICAOF", "NO", "ONE").Err())
	for id := range acked {
		n, err := rrd.Exists(ctx, "{dsub}:job:"+id).Result()
		require.NoError(t, err)
		require.Equal(t, int64(1), n, "Submit acknowledged %q, the promoted replica lost it", id)
	}
}

func TestErrNotDurableIsStreams(t *testing.T) {
	t.Parallel()
	require.True(t, errors.Is(client.ErrNotDurable, streams.ErrNotDurable))
}
