package streams

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRevealRunpodJob(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, sub("r"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		_, res := b.readAdmit(t, "w1", 1, AdmitOpts{})
		epoch := res[0].Record.Epoch
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "r", Owner: "w1", Epoch: epoch, Step: "POLL", State: "QUEUED", RunpodID: "rp-2"}, b.now))

		entry := res[0].Record.Entry
		rv := func(id string, ms int64) RevealResult {
			got, err := b.st.RevealRunpodJob(b.ctx, Reveal{JobID: "r", Entry: entry, RunpodID: id, ExecMs: ms,
				Payload: EventPayload{RunpodID: id, RunpodStatus: "COMPLETED", ExecMs: ms, Attempt: 1}}, b.now.Add(time.Second))
			require.NoError(t, err)
			return got
		}
		require.Equal(t, RevealKnown, rv("rp-2", 5), "the recorded id is not revealed")
		require.Equal(t, Revealed, rv("rp-1", 1500))
		require.Equal(t, RevealKnown, rv("rp-1", 1500), "a duplicate delivery changes nothing")
		rec := b.get(t, "r")
		require.Equal(t, []string{"rp-1"}, rec.Revealed)
		require.EqualValues(t, 1500, rec.RevealedGPUMs)
		require.Equal(t, "QUEUED", rec.State, "no state change")
		require.Equal(t, []string{EventSubmitted, EventRunpodJobRevealed}, b.eventTypes(t, "r"))
		evs := b.events(t)
		last := evs[len(evs)-1]
		require.Equal(t, "rp-1", last.Payload.RunpodID)
		require.Equal(t, "QUEUED", last.State)
		require.Equal(t, epoch, last.Epoch)

		// On a finished job: recorded, but no event after the terminal one.
		errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "r", Entry: res[0].Record.Entry, Owner: "w1", Epoch: epoch, State: "COMPLETED", RunpodID: "rp-2"}}, FinalizeOpts{Now: b.now, ResultTTL: time.Hour})
		require.NoError(t, err)
		require.NoError(t, errs[0])
		require.Equal(t, RevealedTerminal, rv("rp-3", 700))
		rec = b.get(t, "r")
		require.Equal(t, []string{"rp-1", "rp-3"}, rec.Revealed)
		require.EqualValues(t, 2200, rec.RevealedGPUMs)
		require.Equal(t, []string{EventSubmitted, EventRunpodJobRevealed, EventCompleted}, b.eventTypes(t, "r"))

		// Another run's entry (a redrive opened a new run since the webhook's
		// URL was made): nothing written.
		before := b.get(t, "r")
		entry = "1-0"
		require.Equal(t, RevealStale, rv("rp-4", 900))
		require.Equal(t, before, b.get(t, "r"))
		require.Equal(t, []string{EventSubmitted, EventRunpodJobRevealed, EventCompleted}, b.eventTypes(t, "r"))

		_, err = b.st.RevealRunpodJob(b.ctx, Reveal{JobID: "gone", RunpodID: "x"}, b.now)
		require.ErrorIs(t, err, ErrNotFound)
		_, err = b.st.RevealRunpodJob(b.ctx, Reveal{JobID: "r", RunpodID: "a b"}, b.now)
		require.ErrorIs(t, err, ErrInvalid)
	})
}
