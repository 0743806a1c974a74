package main

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
)

// TestQueueCommands: stats shows jobs no worker read yet (backlog) and warns
// that no worker reads the namespace; list --state, dead, retry (a COMPLETED
// job refused, a FAILED one run again as run 2), retry --dead, and purge
// (refused without --yes, then deleting finished records only).
func TestQueueCommands(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.run(t, "", "submit", "--count", "3", "--prefix", "wait", "--input", `{"n":{{i}}}`)
	require.NoError(t, r.err, r.stderr)
	r = b.run(t, "", "stats")
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stdout, "backlog 3 (not yet read by a worker)")
	require.Contains(t, r.stdout, "no worker reads namespace")
	js := b.run(t, "", "stats", "--json")
	require.NoError(t, js.err)
	st := lines[client.Stats](t, js.stdout)[0]
	require.Equal(t, int64(3), st.Backlog)

	b.startWorker(t)
	r = b.run(t, "", "submit", "--persist-input", "--id", "q-fail", "--input", `{"fail":"boom"}`, "--wait", "--timeout", "20s")
	require.Error(t, r.err)
	r = b.run(t, "", "submit", "--persist-input", "--id", "q-ok", "--input", `{"x":1}`, "--wait", "--timeout", "20s")
	require.NoError(t, r.err, r.stderr)
	r = b.run(t, "", "get", "q-ok")
	require.NoError(t, r.err, r.stderr)
	got := lines[client.Job](t, r.stdout)[0]
	require.EqualValues(t, 1000, got.ExecutionMs)
	require.EqualValues(t, 20, got.DelayMs)
	require.Equal(t, "gpuworker00001", got.RunpodWorkerID)
	require.Equal(t, "fake", got.FinalizedBy)
	r = b.run(t, "", "stats")
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stdout, "gpu time (runpod executionTime of finished runs): endpoint ep-sub 5.0 gpu-s over 5 runs", "three earlier jobs, q-fail and q-ok")
	_, err := b.rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: b.store.Keys().Submissions(),
		Values: []any{"job_id", "q-poison", "input", `{"p":1}`, "v", "99"}}).Result()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return strings.Contains(b.run(t, "", "dead").stdout, "q-poison")
	}, 20*time.Second, 20*time.Millisecond)

	r = b.run(t, "", "list", "--state", "FAILED")
	require.NoError(t, r.err, r.stderr)
	var ids []string
	for _, j := range lines[client.Job](t, r.stdout) {
		ids = append(ids, j.ID)
	}
	require.ElementsMatch(t, []string{"q-fail", "q-poison"}, ids)
	require.Equal(t, 2, b.run(t, "", "list", "--state", "NOPE").code)

	r = b.run(t, "", "retry", "q-ok")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "COMPLETED; a completed job is not run again")
	r = b.run(t, "", "retry", "q-fail")
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, 2, lines[client.RetryResult](t, r.stdout)[0].Run)
	require.Eventually(t, func() bool {
		return strings.Contains(b.run(t, "", "get", "q-fail").stdout, `"state":"FAILED","step":"DONE"`)
	}, 20*time.Second, 20*time.Millisecond, "run 2 ends too")
	require.Contains(t, b.run(t, "", "get", "q-fail").stdout, `"run":2`)

	r = b.run(t, "", "retry", "--dead")
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stdout, `"clientJobId":"q-poison"`)
	require.Empty(t, strings.TrimSpace(b.run(t, "", "dead").stdout))
	r = b.run(t, "", "audit")
	require.NoError(t, r.err, r.stdout)

	r = b.run(t, "", "purge")
	require.Equal(t, 2, r.code, "no --yes: nothing deleted")
	require.Contains(t, r.stderr, "run again with --yes")
	r = b.run(t, "", "purge", "--yes", "--state", "COMPLETED")
	require.NoError(t, r.err, r.stderr)
	require.Contains(t, r.stdout, `"jobs":`)
	require.Equal(t, 1, b.run(t, "", "get", "q-ok").code, "purged")
}
