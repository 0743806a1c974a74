package streams

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// TestHappyPathCommands counts, on a server of its own (so no other test's
// commands are counted), every command Redis runs for one job at each step
// of its happy path: what issue 10's "commands per job" measures, exact and
// independent of timing. A script change that adds a command fails here.
func TestHappyPathCommands(t *testing.T) {
	srv, err := redistest.Start()
	require.NoError(t, err)
	defer srv.Stop()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	st, err := New(rdb, Config{Namespace: "cmds"})
	require.NoError(t, err)
	require.NoError(t, st.EnsureGroup(ctx))
	require.NoError(t, st.LoadScripts(ctx))

	prev := redistest.CommandCalls(t, rdb)
	step := func(name string, want map[string]int64) {
		t.Helper()
		cur := redistest.CommandCalls(t, rdb)
		got := map[string]int64{}
		for k, v := range cur {
			if d := v - prev[k]; d > 0 && k != "info" {
				got[k] = d
			}
		}
		if d := cur["info"] - prev["info"]; d > 1 {
			got["info"] = d - 1 // this reading's own INFO
		}
		prev = redistest.CommandCalls(t, rdb)
		require.Equal(t, want, got, "commands Redis ran for %s", name)
	}

	// As the worker calls them: no time given, the scripts read Redis's.
	_, err = st.Submit(ctx, Submission{JobID: "j1", Input: []byte(`{"job":"j1"}`)}, SubmitOpts{})
	require.NoError(t, err)
	// No EXISTS before the HMGET: all-nil fields mean no record.
	step("submit", map[string]int64{"evalsha": 1, "hmget": 1, "time": 1, "xadd": 2, "hset": 1})

	msgs, err := st.Read(ctx, "w1", 10, 0)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	step("read", map[string]int64{"xreadgroup": 1})

	res, err := st.Admit(ctx, []AdmitRequest{NewAdmitRequest(msgs[0], 0)},
		AdmitOpts{Consumer: "w1", MaxDeliveries: 5, DefaultTimeout: time.Hour, ResultTTL: time.Hour})
	require.NoError(t, err)
	require.Equal(t, Admitted, res[0].Status)
	step("admit", map[string]int64{"evalsha": 1, "time": 1, "xpending": 1, "hmget": 1, "hset": 1})
	epoch := res[0].Record.Epoch

	require.NoError(t, st.Checkpoint(ctx, Checkpoint{JobID: "j1", Owner: "w1", Epoch: epoch, Step: "SUBMITTING", Attempts: 1}, time.Time{}))
	step("intent", map[string]int64{"evalsha": 1, "time": 1, "hmget": 1, "hset": 1})

	require.NoError(t, st.Checkpoint(ctx, Checkpoint{JobID: "j1", Owner: "w1", Epoch: epoch, Step: "POLL", State: "QUEUED",
		RunpodID: "rp1", RunpodStatus: "IN_QUEUE", Event: &EventInput{Type: EventQueued}}, time.Time{}))
	step("runpod id", map[string]int64{"evalsha": 1, "time": 1, "hmget": 1, "hset": 1, "xadd": 1})

	errs, err := st.Finalize(ctx, []Outcome{{JobID: "j1", Entry: msgs[0].ID, Owner: "w1", Epoch: epoch, State: "COMPLETED",
		Output: []byte(`{}`), RunpodID: "rp1", RunpodStatus: "COMPLETED", InputHashKnown: true, ExecMs: 1, Endpoint: "e"}},
		FinalizeOpts{ResultTTL: time.Hour})
	require.NoError(t, err)
	require.NoError(t, errs[0])
	step("finalize", map[string]int64{"evalsha": 1, "time": 1, "hmget": 1, "hset": 1, "xadd": 1, "pexpire": 1, "xack": 1,
		"xdel": 1, "hincrby": 2})
}
