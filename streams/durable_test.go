package streams

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// Durability Replicas=1: a durable checkpoint returns only once the replica
// has it (read back from the replica at once), costs one WAIT in the same
// round trip, and reports ErrNotDurable (applied, not confirmed) when the
// replica is gone; LocalAOF on a server without WAITAOF is refused up front.
func TestDurabilityWaitsForReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary, err := redistest.StartWith(redistest.Options{AppendOnly: true, AppendFsync: "everysec"})
	require.NoError(t, err)
	t.Cleanup(func() { primary.Stop() })
	replica, err := redistest.StartWith(redistest.Options{ReplicaOf: primary.Addr})
	require.NoError(t, err)
	t.Cleanup(func() { replica.Stop() })
	rdb := redis.NewClient(&redis.Options{Addr: primary.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	rrd := redis.NewClient(&redis.Options{Addr: replica.Addr})
	t.Cleanup(func() { _ = rrd.Close() })
	require.Eventually(t, func() bool {
		m, err := rrd.InfoMap(ctx, "replication").Result()
		return err == nil && m["Replication"]["master_link_status"] == "up"
	}, 10*time.Second, 20*time.Millisecond)

	st, err := New(rdb, Config{Namespace: "dur"})
	require.NoError(t, err)
	st.SetDurability(Durability{Replicas: 1, Timeout: 5 * time.Second})
	require.NoError(t, st.CheckDurability(ctx))
	require.NoError(t, st.EnsureGroup(ctx))
	now := time.UnixMilli(1_700_000_000_000)
	const n = 50
	recs := make([]Record, 0, n)
	for i := 0; i < n; i++ {
		_, err := st.Submit(ctx, sub("d"+string(rune('a'+i%26))+string(rune('a'+i/26))), SubmitOpts{Now: now})
		require.NoError(t, err)
	}
	msgs, err := st.Read(ctx, "w", n, 0)
	require.NoError(t, err)
	reqs := make([]AdmitRequest, len(msgs))
	for i, m := range msgs {
		reqs[i] = NewAdmitRequest(m, 1<<20)
	}
	res, err := st.Admit(ctx, reqs, AdmitOpts{Consumer: "w", Now: now})
	require.NoError(t, err)
	for _, r := range res {
		require.Equal(t, Admitted, r.Status)
		recs = append(recs, r.Record)
	}

	calls0 := redistest.CommandCalls(t, rdb)
	waits0, evals0 := calls0["wait"], calls0["evalsha"]
	start := time.Now()
	for _, r := range recs {
		require.NoError(t, st.Checkpoint(ctx, Checkpoint{JobID: r.JobID, Owner: "w", Epoch: r.Epoch, Step: "SUBMITTING", Attempts: 1, Durable: true}, now))
		step, err := rrd.HGet(ctx, st.Keys().Job(r.JobID), "step").Result()
		require.NoError(t, err)
		require.Equal(t, "SUBMITTING", step, "WAIT returned before the replica had the intent")
	}
	durable := time.Since(start)
	calls := redistest.CommandCalls(t, rdb)
	require.Equal(t, int64(n), calls["wait"]-waits0, "one WAIT per durable checkpoint")
	require.Equal(t, int64(n), calls["evalsha"]-evals0)
	start = time.Now()
	for _, r := range recs {
		require.NoError(t, st.Checkpoint(ctx, Checkpoint{JobID: r.JobID, Owner: "w", Epoch: r.Epoch, State: "QUEUED", RunpodID: "rp-" + r.JobID}, now))
	}
	plain := time.Since(start)
	// Each figure includes one HGET on the replica per checkpoint only in
	// the durable loop; they are reported, not asserted (machine speed).
	t.Logf("durable intent: %v per checkpoint (1 EVALSHA + 1 WAIT, one round trip, + a replica read); plain: %v per checkpoint",
		durable/n, plain/n)

	// The replica goes away: the write is applied, not confirmed.
	replica.Kill()
	st.SetDurability(Durability{Replicas: 1, Timeout: 100 * time.Millisecond})
	err = st.Checkpoint(ctx, Checkpoint{JobID: recs[0].JobID, Owner: "w", Epoch: recs[0].Epoch, State: "IN_PROGRESS", Durable: true}, now)
	require.True(t, errors.Is(err, ErrNotDurable), "%v", err)
	rec, err := st.Get(ctx, recs[0].JobID)
	require.NoError(t, err)
	require.Equal(t, "IN_PROGRESS", rec.State, "the write is applied even when not confirmed")
	_, err = st.Finalize(ctx, []Outcome{{JobID: recs[1].JobID, Owner: "w", Epoch: recs[1].Epoch, State: "COMPLETED"}}, FinalizeOpts{Now: now})
	require.True(t, errors.Is(err, ErrNotDurable), "%v", err)
	require.Error(t, st.CheckDurability(ctx), "no replica connected")

	// WAITAOF needs Redis 7.2.
	st.SetDurability(Durability{LocalAOF: true})
	if err := st.CheckDurability(ctx); err != nil {
		require.Contains(t, err.Error(), "WAITAOF")
		t.Logf("LocalAOF refused as expected on this server: %v", err)
	}
}
