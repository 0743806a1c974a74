package streams

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSubmitIdempotent(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		s := sub("job-1")
		s.TimeoutMs = 60_000
		r1, err := b.st.Submit(b.ctx, s, SubmitOpts{Now: b.now, PersistInput: true})
		require.NoError(t, err)
		require.True(t, r1.Created)
		require.Equal(t, "SUBMITTED", r1.State)

		r2, err := b.st.Submit(b.ctx, s, SubmitOpts{Now: b.now})
		require.NoError(t, err)
		require.False(t, r2.Created)
		require.Equal(t, r1.Entry, r2.Entry)
		require.Equal(t, "job-1", r2.JobID)

		require.EqualValues(t, 1, b.xlen(t, b.keys.Submissions()), "one submission entry")
		require.Equal(t, []string{EventSubmitted}, b.eventTypes(t, "job-1"))

		rec := b.get(t, "job-1")
		require.Equal(t, "SUBMITTED", rec.State)
		require.Equal(t, "SUBMIT", rec.Step)
		require.EqualValues(t, 0, rec.Epoch)
		require.Equal(t, r1.Entry, rec.Entry)
		require.Equal(t, b.now.UnixMilli(), rec.CreatedMs)
		require.Equal(t, b.now.UnixMilli()+60_000, rec.DeadlineMs)
		require.JSONEq(t, string(s.Input), string(rec.Input))

		// The entry holds exactly the fields a raw producer writes.
		msgs, err := b.rdb.XRange(b.ctx, b.keys.Submissions(), "-", "+").Result()
		require.NoError(t, err)
		require.Equal(t, map[string]any{"job_id": "job-1", "input": string(s.Input), "timeout_ms": "60000", "v": "1"}, msgs[0].Values)
		got, err := DecodeSubmission(msgs[0], 0)
		require.NoError(t, err)
		require.Equal(t, s, got)
	})
}

func TestSubmitNotPersistedInput(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, sub("j"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		rec := b.get(t, "j")
		require.Nil(t, rec.Input)
		require.Zero(t, rec.DeadlineMs)
	})
}

func TestSubmitRejectsPoison(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		for _, s := range []Submission{
			{JobID: "", Input: []byte(`{}`)},
			{JobID: "a b", Input: []byte(`{}`)},
			{JobID: "x", Input: []byte(`{`)},
			{JobID: "x", Input: []byte(`{}`), TimeoutMs: -1},
		} {
			_, err := b.st.Submit(b.ctx, s, SubmitOpts{Now: b.now})
			var pe *PoisonError
			require.ErrorAs(t, err, &pe, "submission %+v", s)
		}
		_, err := b.st.Submit(b.ctx, sub("big"), SubmitOpts{Now: b.now, MaxInput: 4})
		var pe *PoisonError
		require.ErrorAs(t, err, &pe)
		require.EqualValues(t, 0, b.xlen(t, b.keys.Submissions()))
	})
}

func TestSubmitDedupe(t *testing.T) {
	t.Parallel()
	withHash := func(id string) Submission {
		s := sub(id)
		s.InputHash = "h1"
		return s
	}
	opts := func(b *testBundle) SubmitOpts { return SubmitOpts{Now: b.now, Dedupe: true} }

	t.Run("live", func(t *testing.T) {
		t.Parallel()
		eachBackend(t, func(t *testing.T, b *testBundle) {
			r1, err := b.st.Submit(b.ctx, withHash("a"), opts(b))
			require.NoError(t, err)
			r2, err := b.st.Submit(b.ctx, withHash("b"), opts(b))
			require.NoError(t, err)
			require.Equal(t, SubmitResult{JobID: "a", Deduped: true, State: "SUBMITTED", Entry: r1.Entry}, r2)
			_, err = b.st.Get(b.ctx, "b")
			require.ErrorIs(t, err, ErrNotFound)
			require.EqualValues(t, 1, b.xlen(t, b.keys.Submissions()))
			// Dedupe off: a new job despite the same hash.
			r3, err := b.st.Submit(b.ctx, withHash("c"), SubmitOpts{Now: b.now})
			require.NoError(t, err)
			require.True(t, r3.Created)
		})
	})
	for _, tc := range []struct {
		state     string
		runsAgain bool
	}{
		{"COMPLETED", false}, {"FAILED", true}, {"TIMED_OUT", true}, {"CANCELED", true},
	} {
		t.Run("after "+tc.state, func(t *testing.T) {
			t.Parallel()
			eachBackend(t, func(t *testing.T, b *testBundle) {
				_, err := b.st.Submit(b.ctx, withHash("a"), opts(b))
				require.NoError(t, err)
				_, res := b.readAdmit(t, "w1", 10, AdmitOpts{})
				require.Equal(t, Admitted, res[0].Status)
				errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "a", Owner: res[0].Record.Owner, Epoch: res[0].Record.Epoch,
					State: tc.state, Output: []byte(`1`)}}, FinalizeOpts{Now: b.now})
				require.NoError(t, err)
				require.NoError(t, errs[0])

				r2, err := b.st.Submit(b.ctx, withHash("b"), opts(b))
				require.NoError(t, err)
				if tc.runsAgain {
					require.True(t, r2.Created)
					require.Equal(t, "b", r2.JobID)
					held, err := b.rdb.Get(b.ctx, b.keys.Dedupe("h1")).Result()
					require.NoError(t, err)
					require.Equal(t, "b", held)
				} else {
					require.Equal(t, SubmitResult{JobID: "a", Deduped: true, State: "COMPLETED", Entry: res[0].Record.Entry}, r2)
				}
			})
		})
	}
}

// TestSubmitStaleAlias: Submit of an alias id answers with the holder while
// it is live or COMPLETED, and creates the job anew once the holder FAILED
// or expired.
func TestSubmitStaleAlias(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		opts := AdmitOpts{Dedupe: true, ResultTTL: time.Hour}
		y := b.aliasOf(t, "X", "Y", "h", opts)
		s := Submission{JobID: "X", Input: []byte(`1`), InputHash: "h"}

		r, err := b.st.Submit(b.ctx, s, SubmitOpts{Now: b.now, Dedupe: true})
		require.NoError(t, err)
		require.Equal(t, SubmitResult{JobID: "Y", Deduped: true, State: "SUBMITTED", Entry: y.Entry}, r)

		errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "Y", Entry: y.Entry, Owner: y.Owner, Epoch: y.Epoch, State: "FAILED",
			Error: "boom", InputHash: "h"}}, FinalizeOpts{ResultTTL: time.Hour, Now: b.now})
		require.NoError(t, err)
		require.NoError(t, errs[0])

		r, err = b.st.Submit(b.ctx, s, SubmitOpts{Now: b.now, Dedupe: true})
		require.NoError(t, err)
		require.True(t, r.Created, "X may run again after its holder failed: %+v", r)
		require.Equal(t, "X", r.JobID)
		x := b.get(t, "X")
		require.Equal(t, "", x.AliasOf)
		require.Equal(t, "SUBMITTED", x.State)
		require.Equal(t, r.Entry, x.Entry)
		require.Equal(t, []string{EventDeduplicated, EventSubmitted}, b.eventTypes(t, "X"))

		// COMPLETED holder: the alias still answers with it.
		y3 := b.aliasOf(t, "X3", "Y3", "h3", opts)
		errs, err = b.st.Finalize(b.ctx, []Outcome{{JobID: "Y3", Entry: y3.Entry, Owner: y3.Owner, Epoch: y3.Epoch, State: "COMPLETED",
			Output: []byte(`1`), InputHash: "h3"}}, FinalizeOpts{ResultTTL: time.Hour, Now: b.now})
		require.NoError(t, err)
		require.NoError(t, errs[0])
		r, err = b.st.Submit(b.ctx, Submission{JobID: "X3", Input: []byte(`1`)}, SubmitOpts{Now: b.now})
		require.NoError(t, err)
		require.Equal(t, SubmitResult{JobID: "Y3", Deduped: true, State: "COMPLETED", Entry: y3.Entry}, r)

		// Expired holder: the alias id is created anew.
		require.NoError(t, b.rdb.Del(b.ctx, b.keys.Job("Y3")).Err())
		r, err = b.st.Submit(b.ctx, Submission{JobID: "X3", Input: []byte(`1`)}, SubmitOpts{Now: b.now})
		require.NoError(t, err)
		require.True(t, r.Created)
		require.Equal(t, "X3", r.JobID)
		require.Equal(t, "", b.get(t, "X3").AliasOf)
	})
}
