package streams

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFinalizeBatchSumsGPUAndAcksOnce: a batch's GPU counter moves by the
// sum of its runs (written once per field), and every entry of the batch is
// acknowledged and deleted.
func TestFinalizeBatchSumsGPUAndAcksOnce(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		var outs []Outcome
		for i, id := range []string{"g0", "g1", "g2"} {
			rec := b.admitted(t, id)
			outs = append(outs, Outcome{JobID: id, Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch, State: "COMPLETED",
				RunpodID: "rp-" + id, ExecMs: int64(100 * (i + 1)), Endpoint: "ep", InputHashKnown: true})
		}
		errs, err := b.st.Finalize(b.ctx, outs, FinalizeOpts{Now: b.now})
		require.NoError(t, err)
		for _, e := range errs {
			require.NoError(t, e)
		}
		m, err := b.rdb.HGetAll(b.ctx, b.keys.GPU()).Result()
		require.NoError(t, err)
		require.Equal(t, map[string]string{"runs:ep": "3", "ms:ep": "600"}, m)
		require.Empty(t, b.pel(t))
		require.EqualValues(t, 0, b.xlen(t, b.keys.Submissions()))
	})
}

// TestFinalizeFailingOutcomeKeepsEarlierOnes: a command that fails in the
// middle of a batch (the third job's record is not a hash) fails the call,
// but what the outcomes before it wrote stays whole: their entries are
// acknowledged and their GPU time counted, so the retry answers them as
// already written and counts nothing twice.
func TestFinalizeFailingOutcomeKeepsEarlierOnes(t *testing.T) {
	t.Parallel()
	b := setup(t, backendRedis)
	var outs []Outcome
	for _, id := range []string{"k0", "k1"} {
		rec := b.admitted(t, id)
		outs = append(outs, Outcome{JobID: id, Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch, State: "COMPLETED",
			RunpodID: "rp-" + id, ExecMs: 10, Endpoint: "ep", InputHashKnown: true})
	}
	require.NoError(t, b.rdb.Set(b.ctx, b.keys.Job("bad"), "x", 0).Err())
	bad := Outcome{JobID: "bad", Owner: "w1", Epoch: 1, State: "COMPLETED", Endpoint: "ep", InputHashKnown: true}
	_, err := b.st.Finalize(b.ctx, append(outs[:1:1], bad, outs[1]), FinalizeOpts{Now: b.now})
	require.ErrorContains(t, err, "WRONGTYPE")
	require.Equal(t, "COMPLETED", b.get(t, "k0").State)
	require.Equal(t, "SUBMITTED", b.get(t, "k1").State, "after the failure nothing ran")
	m, err := b.rdb.HGetAll(b.ctx, b.keys.GPU()).Result()
	require.NoError(t, err)
	require.Equal(t, map[string]string{"runs:ep": "1", "ms:ep": "10"}, m, "k0 counted")
	require.Len(t, b.pel(t), 1, "k0's entry acknowledged, k1's still pending")

	errs, err := b.st.Finalize(b.ctx, outs, FinalizeOpts{Now: b.now.Add(time.Second)})
	require.NoError(t, err)
	require.NoError(t, errs[0], "k0: already written, ours")
	require.NoError(t, errs[1])
	m, err = b.rdb.HGetAll(b.ctx, b.keys.GPU()).Result()
	require.NoError(t, err)
	require.Equal(t, map[string]string{"runs:ep": "2", "ms:ep": "20"}, m)
	require.Empty(t, b.pel(t))
}

// TestFinalizeIDTellsWritersApart: an outcome written again under the same
// fence with the same result is "ours" (nil) only when it is the same write
// (its FinalizeID, or the id derived from the outcome when none is given):
// a webhook delivery and the owner's poll writing the same result have
// their own ids, and the second is ErrTerminal, so only one of them counts
// the outcome. Nothing is written twice either way.
func TestFinalizeIDTellsWritersApart(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "f")
		out := Outcome{JobID: "f", Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch, State: "COMPLETED",
			Output: []byte(`{"x":1}`), RunpodID: "rp-f", InputHashKnown: true, FinalizeID: "webhook-1"}
		finalize := func(o Outcome) error {
			t.Helper()
			errs, err := b.st.Finalize(b.ctx, []Outcome{o}, FinalizeOpts{Now: b.now})
			require.NoError(t, err)
			return errs[0]
		}
		require.NoError(t, finalize(out), "the first write")
		require.NoError(t, finalize(out), "its retry (reply lost): ours")
		poll := out
		poll.FinalizeID = "poll-1"
		require.ErrorIs(t, finalize(poll), ErrTerminal, "the same outcome by another writer")
		derived := out
		derived.FinalizeID = ""
		require.ErrorIs(t, finalize(derived), ErrTerminal, "a caller without an id is another writer too")

		rec2 := b.admitted(t, "g")
		plain := Outcome{JobID: "g", Entry: rec2.Entry, Owner: rec2.Owner, Epoch: rec2.Epoch, State: "FAILED",
			Error: "boom", InputHashKnown: true}
		require.NoError(t, finalize(plain))
		require.NoError(t, finalize(plain), "no id given: the same outcome sent again is ours")
		other := plain
		other.Error = "another result"
		require.ErrorIs(t, finalize(other), ErrTerminal)

		evs, err := b.rdb.XRange(b.ctx, b.keys.Events(), "-", "+").Result()
		require.NoError(t, err)
		terminal := 0
		for _, e := range evs {
			if e.Values["type"] == "completed" || e.Values["type"] == "failed" {
				terminal++
			}
		}
		require.Equal(t, 2, terminal, "one terminal event per job")
	})
}
