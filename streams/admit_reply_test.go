package streams

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestAdmitReplyFieldsAgree: admit.lua answers an admitted record by
// position (the values of its one HMGET of READ_FIELDS, updated), so
// READ_FIELDS and admit.go's admitReplyFields must name the same fields in
// the same order, each a field record.go knows.
func TestAdmitReplyFieldsAgree(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "record.go", nil, 0)
	require.NoError(t, err)
	known := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || !strings.HasPrefix(vs.Names[0].Name, "rec") || len(vs.Values) != 1 {
			return true
		}
		if lit, ok := vs.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			v, err := strconv.Unquote(lit.Value)
			require.NoError(t, err)
			known[v] = true
		}
		return true
	})
	require.Greater(t, len(known), 20, "record.go's field constants were found")
	lua, err := os.ReadFile("lua/admit.lua")
	require.NoError(t, err)
	list := func(name string) []string {
		m := regexp.MustCompile(`(?s)local ` + name + ` = \{(.*?)\}`).FindSubmatch(lua)
		require.NotNil(t, m, "admit.lua declares %s", name)
		var out []string
		for _, q := range regexp.MustCompile(`'([a-z_]+)'`).FindAllSubmatch(m[1], -1) {
			out = append(out, string(q[1]))
		}
		return out
	}
	read := list("READ_FIELDS")
	require.Equal(t, admitReplyFields, read, "admit.lua's READ_FIELDS (its reply) and admit.go's admitReplyFields")
	for _, f := range read {
		require.True(t, known[f] || f == "handoff", "READ_FIELDS names %q, not a record field", f)
	}
}

// admittedView is what an admitted Record carries of a stored one
// (AdmitResult.Record): the fields a worker resumes a job from.
func admittedView(r Record) Record {
	return Record{JobID: r.JobID, State: r.State, Step: r.Step, Epoch: r.Epoch, Owner: r.Owner, PrevOwner: r.PrevOwner,
		Entry: r.Entry, RunpodID: r.RunpodID, RunpodStatus: r.RunpodStatus, Attempts: r.Attempts,
		UncertainAttempt: r.UncertainAttempt, Deliveries: r.Deliveries, InputHash: r.InputHash, Input: r.Input,
		Cancel: r.Cancel, DeadlineMs: r.DeadlineMs, CreatedMs: r.CreatedMs, Run: r.Run, Output: r.Output, Error: r.Error,
		ErrorJSON: r.ErrorJSON, Chunks: r.Chunks}
}

// TestAdmitReplyIsTheStoredRecord: the admitted record (built from what
// the script read and wrote) equals what Get reads back, as far as a worker
// resumes from it, for a fresh job and for a re-admit of one with every
// kind of field set.
func TestAdmitReplyIsTheStoredRecord(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, sub("full"), SubmitOpts{Now: b.now, PersistInput: true})
		require.NoError(t, err)
		msgs, res := b.readAdmit(t, "w1", 1, AdmitOpts{DefaultTimeout: 5000})
		require.Equal(t, Admitted, res[0].Status)
		require.Equal(t, admittedView(b.get(t, "full")), res[0].Record)
		require.NotEmpty(t, res[0].Record.Input)

		result, err := EncodeResult([]byte(`{"partial":1}`), "")
		require.NoError(t, err)
		require.NoError(t, b.rdb.HSet(b.ctx, b.keys.Job("full"), "runpod_id", "rp-1", "runpod_status", "IN_PROGRESS",
			"step", "POLL", "state", "RUNNING", "attempts", "2", "uncertain", "1", "uncertain_attempt", "1",
			"result", string(result), "run", "2", "revealed", "rp-0 rp-x", "revealed_gpu_ms", "77", "handoff", "1",
			"chunks", "3", "cancel", "1").Err())
		b.takeOver(t, "w2", msgs[0].ID)
		res = b.admit(t, "w2", msgs, AdmitOpts{DefaultTimeout: 5000})
		require.Equal(t, Admitted, res[0].Status)
		got := b.get(t, "full")
		require.Equal(t, admittedView(got), res[0].Record)
		require.Equal(t, "w1", got.PrevOwner)
		require.EqualValues(t, 2, got.Epoch)
		require.Equal(t, "rp-1", got.RunpodID)
		require.Equal(t, 2, got.Run)
		require.Equal(t, []byte(`{"partial":1}`), res[0].Record.Output)
		require.Equal(t, 3, res[0].Record.Chunks)
		require.True(t, res[0].Record.Cancel)
		v, err := b.rdb.HExists(b.ctx, b.keys.Job("full"), "handoff").Result()
		require.NoError(t, err)
		require.False(t, v, "the handoff mark is cleared")
	})
}

// TestAdmitSameEntryTwiceInOneBatch: the batch's PEL owners are read once,
// up front; an entry the script acknowledged earlier in the same batch is
// still answered lost, as a per-entry XPENDING would.
func TestAdmitSameEntryTwiceInOneBatch(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, sub("twice"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		msgs, _ := b.readAdmit(t, "w1", 1, AdmitOpts{})
		require.NoError(t, b.rdb.HSet(b.ctx, b.keys.Job("twice"), "state", "COMPLETED").Err())
		res := b.admit(t, "w1", []redis.XMessage{msgs[0], msgs[0]}, AdmitOpts{})
		require.Equal(t, Finished, res[0].Status)
		require.Equal(t, Lost, res[1].Status)
	})
}

// TestAdmitBatchOwnersOneCall: a batch's PEL check is one XPENDING, and
// an entry of the batch that another consumer holds is lost while its
// batch-mates are admitted.
func TestAdmitBatchOwnersOneCall(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		for _, id := range []string{"o1", "o2", "o3"} {
			_, err := b.st.Submit(b.ctx, sub(id), SubmitOpts{Now: b.now})
			require.NoError(t, err)
		}
		msgs, err := b.st.Read(b.ctx, "w1", 3, 0)
		require.NoError(t, err)
		b.takeOver(t, "w2", msgs[1].ID)
		res := b.admit(t, "w1", msgs, AdmitOpts{})
		require.Equal(t, []AdmitStatus{Admitted, Lost, Admitted}, []AdmitStatus{res[0].Status, res[1].Status, res[2].Status})
	})
}

// TestFinalizeKnownNoHashReadsNothing: an outcome whose caller knows the job
// has no input hash (InputHashKnown) costs the one script call, not a read
// of the record first.
func TestFinalizeKnownNoHashReadsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, backendRedis)
	_, err := b.st.Submit(b.ctx, sub("nohash"), SubmitOpts{Now: b.now})
	require.NoError(t, err)
	msgs, res := b.readAdmit(t, "w1", 1, AdmitOpts{})
	require.Equal(t, Admitted, res[0].Status)
	require.NoError(t, b.st.LoadScripts(b.ctx)) // no NOSCRIPT fallback counted
	h := &countHook{}
	b.rdb.AddHook(h)
	errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "nohash", Entry: msgs[0].ID, Owner: "w1", Epoch: 1,
		State: "COMPLETED", InputHashKnown: true}}, FinalizeOpts{Now: b.now})
	require.NoError(t, err)
	require.NoError(t, errs[0])
	require.EqualValues(t, 1, h.trips.Load(), "the script call only")
	require.Equal(t, "COMPLETED", b.get(t, "nohash").State)
}
