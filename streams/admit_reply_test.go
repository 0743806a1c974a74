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

// TestAdmitFieldsCoverRecord: admit.lua builds its admitted reply from one
// HMGET of REC_FIELDS instead of HGETALL, so a record field that
// record.go knows but REC_FIELDS lacks would silently vanish from every
// admitted record. Every rec* constant must be listed.
func TestAdmitFieldsCoverRecord(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "record.go", nil, 0)
	require.NoError(t, err)
	var fields []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || !strings.HasPrefix(vs.Names[0].Name, "rec") || len(vs.Values) != 1 {
			return true
		}
		if lit, ok := vs.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			v, err := strconv.Unquote(lit.Value)
			require.NoError(t, err)
			fields = append(fields, v)
		}
		return true
	})
	require.Greater(t, len(fields), 20, "record.go's field constants were found")
	lua, err := os.ReadFile("lua/admit.lua")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?s)local REC_FIELDS = \{(.*?)\}`).FindSubmatch(lua)
	require.NotNil(t, m, "admit.lua declares REC_FIELDS")
	listed := map[string]bool{}
	for _, q := range regexp.MustCompile(`'([a-z_]+)'`).FindAllSubmatch(m[1], -1) {
		listed[string(q[1])] = true
	}
	for _, f := range fields {
		require.True(t, listed[f], "admit.lua's REC_FIELDS lacks record field %q", f)
	}
}

// TestAdmitReplyIsTheStoredRecord: the admitted record (built from what
// the script read and wrote) equals what Get reads back, for a fresh job and
// for a re-admit of one with every kind of field set.
func TestAdmitReplyIsTheStoredRecord(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, sub("full"), SubmitOpts{Now: b.now, PersistInput: true})
		require.NoError(t, err)
		msgs, res := b.readAdmit(t, "w1", 1, AdmitOpts{DefaultTimeout: 5000})
		require.Equal(t, Admitted, res[0].Status)
		require.Equal(t, b.get(t, "full"), res[0].Record)

		result, err := EncodeResult([]byte(`{"partial":1}`), "")
		require.NoError(t, err)
		require.NoError(t, b.rdb.HSet(b.ctx, b.keys.Job("full"), "runpod_id", "rp-1", "runpod_status", "IN_PROGRESS",
			"step", "POLL", "state", "RUNNING", "attempts", "2", "uncertain", "1", "uncertain_attempt", "1",
			"result", string(result), "run", "2", "revealed", "rp-0 rp-x", "revealed_gpu_ms", "77", "handoff", "1").Err())
		b.takeOver(t, "w2", msgs[0].ID)
		res = b.admit(t, "w2", msgs, AdmitOpts{DefaultTimeout: 5000})
		require.Equal(t, Admitted, res[0].Status)
		got := b.get(t, "full")
		require.Equal(t, got, res[0].Record)
		require.Equal(t, "w1", got.PrevOwner)
		require.EqualValues(t, 2, got.Epoch)
		require.Equal(t, "rp-1", got.RunpodID)
		require.Equal(t, 2, got.Run)
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
