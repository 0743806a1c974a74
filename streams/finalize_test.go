package streams

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFinalize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		state, event string
	}{
		{"COMPLETED", EventCompleted}, {"FAILED", EventFailed}, {"TIMED_OUT", EventTimedOut}, {"CANCELED", EventCanceled},
	} {
		t.Run(tc.state, func(t *testing.T) {
			t.Parallel()
			eachBackend(t, func(t *testing.T, b *testBundle) {
				rec := b.admitted(t, "f")
				out := Outcome{JobID: "f", Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch, State: tc.state,
					Output: []byte(`{"ok":true}`), Error: "why", RunpodID: "rp", RunpodStatus: "X"}
				opts := FinalizeOpts{ResultTTL: time.Hour, Now: b.now.Add(time.Second)}
				errs, err := b.st.Finalize(b.ctx, []Outcome{out}, opts)
				require.NoError(t, err)
				require.NoError(t, errs[0])

				got := b.get(t, "f")
				require.Equal(t, tc.state, got.State)
				require.Equal(t, "DONE", got.Step)
				require.Equal(t, opts.Now.UnixMilli(), got.FinishedMs)
				require.JSONEq(t, `{"ok":true}`, string(got.Output))
				require.Equal(t, "why", got.Error)
				require.Equal(t, "rp", got.RunpodID)
				ttl, err := b.rdb.PTTL(b.ctx, b.keys.Job("f")).Result()
				require.NoError(t, err)
				require.Greater(t, ttl, 59*time.Minute)
				require.Empty(t, b.pel(t))
				require.EqualValues(t, 0, b.xlen(t, b.keys.Submissions()))

				evs := b.events(t)
				last := evs[len(evs)-1]
				require.Equal(t, tc.event, last.Type)
				require.Equal(t, tc.state, last.State)
				require.Equal(t, rec.Epoch, last.Epoch)
				require.Equal(t, "rp", last.Payload.RunpodID)

				// Twice (a retry whose first try applied): recognised as
				// this same outcome, still one terminal event.
				errs, err = b.st.Finalize(b.ctx, []Outcome{out}, opts)
				require.NoError(t, err)
				require.NoError(t, errs[0])
				require.Equal(t, []string{EventSubmitted, tc.event}, b.eventTypes(t, "f"))
				// Another outcome, or the same at another epoch: refused.
				other := out
				other.Error = "another reason"
				stale := out
				stale.Epoch++
				errs, err = b.st.Finalize(b.ctx, []Outcome{other, stale}, opts)
				require.NoError(t, err)
				require.ErrorIs(t, errs[0], ErrTerminal)
				require.ErrorIs(t, errs[1], ErrTerminal)
				require.Equal(t, []string{EventSubmitted, tc.event}, b.eventTypes(t, "f"))
			})
		})
	}
}

func TestFinalizeRefusals(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "a")
		stored := b.get(t, "a")
		errs, err := b.st.Finalize(b.ctx, []Outcome{
			{JobID: "a", Owner: rec.Owner, Epoch: rec.Epoch + 1, State: "COMPLETED"},
			{JobID: "gone", Entry: "", Epoch: 1, State: "FAILED"},
		}, FinalizeOpts{Now: b.now})
		require.NoError(t, err)
		require.ErrorIs(t, errs[0], ErrFenced)
		require.ErrorIs(t, errs[1], ErrNotFound)
		require.Equal(t, stored, b.get(t, "a"), "fenced: nothing touched")
		require.Len(t, b.pel(t), 1)
		require.Equal(t, []string{EventSubmitted}, b.eventTypes(t, "a"))

		// A missing record with a pending entry: the entry is still cleaned up.
		id := b.rawAdd(t, "job_id", "ghost", "input", `1`)
		_, res := b.readAdmit(t, "w1", 1, AdmitOpts{})
		require.Equal(t, Admitted, res[0].Status)
		require.NoError(t, b.rdb.Del(b.ctx, b.keys.Job("ghost")).Err())
		errs, err = b.st.Finalize(b.ctx, []Outcome{{JobID: "ghost", Entry: id, Epoch: 1, State: "FAILED"}}, FinalizeOpts{Now: b.now})
		require.NoError(t, err)
		require.ErrorIs(t, errs[0], ErrNotFound)
		_, pending := b.pel(t)[id]
		require.False(t, pending)

		_, err = b.st.Finalize(b.ctx, []Outcome{{JobID: "a", Owner: rec.Owner, Epoch: rec.Epoch, State: "QUEUED"}}, FinalizeOpts{Now: b.now})
		require.ErrorIs(t, err, ErrInvalid)
	})
}

func withInput(r Record, in []byte) Record { r.Input = in; return r }

func TestFinalizeRaceDifferentEpochs(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		for round := range 20 {
			id := "race-" + string(rune('a'+round))
			_, err := b.st.Submit(b.ctx, sub(id), SubmitOpts{Now: b.now})
			require.NoError(t, err)
			msgs, res := b.readAdmit(t, "w1", 1, AdmitOpts{})
			b.takeOver(t, "w2", msgs[0].ID)
			res = append(res, b.admit(t, "w2", msgs, AdmitOpts{})...)
			stale, current := res[0].Record, res[1].Record
			require.Equal(t, stale.Epoch+1, current.Epoch)

			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, r := range []Record{stale, current} {
				wg.Go(func() {
					e, err := b.st.Finalize(b.ctx, []Outcome{{JobID: id, Entry: r.Entry, Owner: r.Owner, Epoch: r.Epoch,
						State: []string{"FAILED", "COMPLETED"}[i]}}, FinalizeOpts{Now: b.now})
					if err == nil {
						err = e[0]
					}
					errs[i] = err
				})
			}
			wg.Wait()
			require.True(t, errors.Is(errs[0], ErrFenced) || errors.Is(errs[0], ErrTerminal), "stale: %v", errs[0])
			require.NoError(t, errs[1])
			require.Equal(t, []string{EventSubmitted, EventCompleted}, b.eventTypes(t, id), "exactly one terminal event")
			require.Equal(t, "COMPLETED", b.get(t, id).State)
		}
	})
}

func TestFinalizeDeadLetterAndDedupe(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		s := sub("d")
		s.InputHash = "hd"
		_, err := b.st.Submit(b.ctx, s, SubmitOpts{Now: b.now, Dedupe: true})
		require.NoError(t, err)
		_, res := b.readAdmit(t, "w1", 1, AdmitOpts{})
		rec := res[0].Record
		errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "d", Owner: rec.Owner, Epoch: rec.Epoch, State: "FAILED",
			Error: "handler crashed", DeadLetter: "runpod rejected the input"}}, FinalizeOpts{Now: b.now})
		require.NoError(t, err)
		require.NoError(t, errs[0])
		dead, err := b.rdb.XRange(b.ctx, b.keys.Dead(), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, dead, 1)
		require.Equal(t, "d", dead[0].Values["job_id"])
		require.Equal(t, "hd", dead[0].Values["input_hash"])
		require.Equal(t, "runpod rejected the input", dead[0].Values["dead_reason"])
		require.Equal(t, rec.Entry, dead[0].Values["dead_entry"])
		n, err := b.rdb.Exists(b.ctx, b.keys.Dedupe("hd")).Result()
		require.NoError(t, err)
		require.Zero(t, n, "InputHash read from the record, dedupe key released")
	})
}
