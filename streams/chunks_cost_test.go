package streams

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// TestChunksCostLinear: a streamed output of n chunks, recorded one chunk
// per AppendChunks call (a /stream read each time a chunk is ready), costs
// Redis work linear in n. Measured without a clock: the bytes each call
// makes Redis write to its append-only file (what a replica receives too)
// and the commands it runs. Doubling n from 500 to 1,000 chunks must not
// quadruple either.
func TestChunksCostLinear(t *testing.T) {
	t.Parallel()
	srv, err := redistest.StartWith(redistest.Options{AppendOnly: true, AppendFsync: "no"})
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()

	measure := func(n int) (aofBytes, commands int64) {
		t.Helper()
		st, err := New(rdb, Config{Namespace: fmt.Sprintf("cost%d", n)})
		require.NoError(t, err)
		require.NoError(t, st.EnsureGroup(ctx))
		id := "s"
		_, err = st.Submit(ctx, Submission{JobID: id, Input: []byte(`{}`)}, SubmitOpts{})
		require.NoError(t, err)
		msgs, err := st.Read(ctx, "w", 1, 0)
		require.NoError(t, err)
		res, err := st.Admit(ctx, []AdmitRequest{NewAdmitRequest(msgs[0], 1<<20)}, AdmitOpts{Consumer: "w"})
		require.NoError(t, err)
		rec := res[0].Record
		require.NoError(t, st.LoadScripts(ctx))
		aof0, cmd0 := aofSize(t, rdb), commandCount(t, rdb)
		for i := 0; i < n; i++ {
			got, err := st.AppendChunks(ctx, Chunks{JobID: id, Owner: "w", Epoch: rec.Epoch, First: i,
				Outputs: [][]byte{[]byte(fmt.Sprintf(`"token %04d"`, i))}, RunpodID: "rp"}, time.Time{})
			require.NoError(t, err)
			require.Equal(t, i+1, got)
		}
		got, err := st.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, n, got.Chunks)
		require.True(t, strings.HasSuffix(string(got.ChunkData), fmt.Sprintf(`"token %04d"]`, n-1)))
		return aofSize(t, rdb) - aof0, commandCount(t, rdb) - cmd0
	}
	aof500, cmd500 := measure(500)
	aof1000, cmd1000 := measure(1000)
	t.Logf("500 chunks: %d AOF bytes, %d commands; 1,000 chunks: %d AOF bytes (%.1f per chunk), %d commands (%.1f per chunk)",
		aof500, cmd500, aof1000, float64(aof1000)/1000, cmd1000, float64(cmd1000)/1000)
	require.Less(t, aof1000, 3*aof500, "AOF bytes grow faster than the chunk count")
	require.Less(t, cmd1000, 3*cmd500, "commands grow faster than the chunk count")
}

func aofSize(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "persistence").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "aof_current_size:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("INFO persistence has no aof_current_size")
	return 0
}

// commandCount is every command the server ran (commandstats, the commands
// of scripts included), less the INFO calls that read it.
func commandCount(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	var n int64
	for name, c := range redistest.CommandCalls(t, rdb) {
		if name != "info" {
			n += c
		}
	}
	return n
}

// TestRetryClearsChunks: a redrive opens the new run without the previous
// run's stream chunks (every chunk:<i> field goes, across HDEL batches).
func TestRetryClearsChunks(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, Submission{JobID: "rc", Input: []byte(`{}`)}, SubmitOpts{PersistInput: true, Now: b.now})
		require.NoError(t, err)
		_, res := b.readAdmit(t, "w1", 1, AdmitOpts{})
		rec := res[0].Record
		outs := make([][]byte, 1500)
		for i := range outs {
			outs[i] = []byte(strconv.Itoa(i))
		}
		n, err := b.st.AppendChunks(b.ctx, Chunks{JobID: "rc", Owner: "w1", Epoch: rec.Epoch, Outputs: outs}, b.now)
		require.NoError(t, err)
		require.Equal(t, 1500, n)
		got := b.get(t, "rc")
		require.Equal(t, 1500, got.Chunks)
		require.True(t, strings.HasPrefix(string(got.ChunkData), "[0,1,2,"))
		require.True(t, strings.HasSuffix(string(got.ChunkData), ",1498,1499]"))
		errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "rc", Entry: rec.Entry, Owner: "w1", Epoch: rec.Epoch,
			State: "FAILED", Error: "x", InputHashKnown: true}}, FinalizeOpts{Now: b.now})
		require.NoError(t, err)
		require.NoError(t, errs[0])
		_, err = b.st.Retry(b.ctx, "rc", nil, b.now)
		require.NoError(t, err)
		got = b.get(t, "rc")
		require.Zero(t, got.Chunks)
		require.Nil(t, got.ChunkData)
		fields, err := b.rdb.HKeys(b.ctx, b.keys.Job("rc")).Result()
		require.NoError(t, err)
		for _, f := range fields {
			require.False(t, strings.HasPrefix(f, "chunk"), "field %s left from run 1", f)
		}
	})
}
