package streams

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAdmitRawSubmission(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		id := b.rawAdd(t, "job_id", "raw-1", "input", `{"n":1}`, "timeout_ms", "1000")
		_, res := b.readAdmit(t, "w1", 10, AdmitOpts{})
		require.Equal(t, Admitted, res[0].Status)
		rec := res[0].Record
		require.Equal(t, "raw-1", rec.JobID)
		require.Equal(t, "SUBMITTED", rec.State)
		require.Equal(t, "SUBMIT", rec.Step)
		require.EqualValues(t, 1, rec.Epoch)
		require.Equal(t, "w1", rec.Owner)
		require.Equal(t, id, rec.Entry)
		require.Equal(t, 1, rec.Deliveries)
		require.Equal(t, b.now.UnixMilli()+1000, rec.DeadlineMs)
		require.JSONEq(t, `{"n":1}`, string(rec.Input), "input comes from the entry even when not persisted")

		stored := b.get(t, "raw-1")
		require.Nil(t, stored.Input, "input not persisted")
		require.Equal(t, rec.Epoch, stored.Epoch)
		require.Equal(t, []string{EventSubmitted}, b.eventTypes(t, "raw-1"))
		require.Equal(t, map[string]string{id: "w1"}, b.pel(t), "entry stays pending until finalized")
	})
}

func TestAdmitRawSubmissionPersistsInput(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		b.rawAdd(t, "job_id", "raw-p", "input", `{"keep":true}`, "input_hash", "h-p")
		_, res := b.readAdmit(t, "w1", 10, AdmitOpts{PersistInput: true})
		require.Equal(t, Admitted, res[0].Status)
		stored := b.get(t, "raw-p")
		require.JSONEq(t, `{"keep":true}`, string(stored.Input), "input persisted in the record")
		require.Equal(t, "h-p", stored.InputHash)
		require.Zero(t, stored.DeadlineMs, "no timeout_ms and no default: no deadline")
	})
}

func TestAdmitUnreadableRecordSparesBatchMates(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		// A record this code cannot decode (as one from a newer version could
		// be): its entry is reported Unreadable, and the other entry of the
		// same batch is still admitted.
		bad := b.rawAdd(t, "job_id", "unreadable", "input", `1`)
		require.NoError(t, b.rdb.HSet(b.ctx, b.keys.Job("unreadable"), "state", "SUBMITTED", "step", "SUBMIT",
			"epoch", "0", "entry", bad, "result", "not a msgpack envelope").Err())
		b.rawAdd(t, "job_id", "fine", "input", `2`)
		_, res := b.readAdmit(t, "w1", 10, AdmitOpts{})
		require.Len(t, res, 2)
		require.Equal(t, Unreadable, res[0].Status, res[0].Status.String())
		require.Error(t, res[0].Err)
		require.Equal(t, Admitted, res[1].Status)
		require.Equal(t, "fine", res[1].Record.JobID)
		require.Equal(t, "w1", b.pel(t)[bad], "the unreadable entry stays pending, to be reclaimed")
	})
}

func TestAdmitDuplicateRawEntry(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		first := b.rawAdd(t, "job_id", "dup", "input", `1`)
		second := b.rawAdd(t, "job_id", "dup", "input", `2`)
		_, res := b.readAdmit(t, "w1", 10, AdmitOpts{})
		require.Equal(t, Admitted, res[0].Status)
		require.Equal(t, Duplicate, res[1].Status)
		require.Equal(t, first, b.get(t, "dup").Entry)
		require.Equal(t, map[string]string{first: "w1"}, b.pel(t))
		require.EqualValues(t, 1, b.xlen(t, b.keys.Submissions()), "duplicate deleted")
		msgs, err := b.rdb.XRange(b.ctx, b.keys.Submissions(), second, second).Result()
		require.NoError(t, err)
		require.Empty(t, msgs)
		require.Equal(t, []string{EventSubmitted}, b.eventTypes(t, "dup"), "no event for the duplicate")

		// A Go Submit of an id a raw producer already sent is answered by the record.
		r, err := b.st.Submit(b.ctx, sub("dup"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		require.False(t, r.Created)
		require.Equal(t, first, r.Entry)
	})
}

func TestAdmitEpochBumps(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, sub("e"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		msgs, res := b.readAdmit(t, "w1", 1, AdmitOpts{})
		require.EqualValues(t, 1, res[0].Record.Epoch)
		// A takeover: w2 claims the entry and admits it again.
		b.takeOver(t, "w2", msgs[0].ID)
		res = b.admit(t, "w2", msgs, AdmitOpts{})
		require.Equal(t, Admitted, res[0].Status)
		require.EqualValues(t, 2, res[0].Record.Epoch)
		require.Equal(t, "w2", res[0].Record.Owner)
		require.Equal(t, 2, res[0].Record.Deliveries)
		// w1's stale delivery no longer names it in the PEL: Lost, nothing changed.
		res = b.admit(t, "w1", msgs, AdmitOpts{})
		require.Equal(t, Lost, res[0].Status)
		require.EqualValues(t, 2, b.get(t, "e").Epoch)
	})
}

func TestAdmitMaxDeliveries(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		s := sub("p")
		s.InputHash = "hp"
		_, err := b.st.Submit(b.ctx, s, SubmitOpts{Now: b.now, Dedupe: true})
		require.NoError(t, err)
		opts := AdmitOpts{MaxDeliveries: 2, ResultTTL: time.Hour}
		msgs, res := b.readAdmit(t, "w1", 1, opts)
		require.Equal(t, Admitted, res[0].Status)
		require.Equal(t, Admitted, b.admit(t, "w1", msgs, opts)[0].Status)
		require.Equal(t, Poisoned, b.admit(t, "w1", msgs, opts)[0].Status)

		rec := b.get(t, "p")
		require.Equal(t, "FAILED", rec.State)
		require.Equal(t, "DONE", rec.Step)
		require.Equal(t, "delivered 3 times, over MaxDeliveries 2", rec.Error)
		require.Equal(t, 3, rec.Deliveries)
		require.Equal(t, b.now.UnixMilli(), rec.FinishedMs)
		ttl, err := b.rdb.PTTL(b.ctx, b.keys.Job("p")).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 59*time.Minute)

		evs := b.events(t)
		last := evs[len(evs)-1]
		require.Equal(t, EventFailed, last.Type)
		require.Equal(t, "FAILED", last.State)
		require.Equal(t, rec.Error, last.Payload.Reason)
		require.Equal(t, rec.Error, last.Payload.Error)

		dead, err := b.rdb.XRange(b.ctx, b.keys.Dead(), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, dead, 1)
		require.Equal(t, "p", dead[0].Values["job_id"])
		require.Equal(t, string(s.Input), dead[0].Values["input"])
		require.Equal(t, rec.Error, dead[0].Values["dead_reason"])
		require.Equal(t, msgs[0].ID, dead[0].Values["dead_entry"])

		require.Empty(t, b.pel(t))
		require.EqualValues(t, 0, b.xlen(t, b.keys.Submissions()))
		n, err := b.rdb.Exists(b.ctx, b.keys.Dedupe("hp")).Result()
		require.NoError(t, err)
		require.Zero(t, n, "a failed job releases its dedupe key")
	})
}

func TestAdmitPoison(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		withID := b.rawAdd(t, "job_id", "bad-json", "input", `{"a":`)
		noID := b.rawAdd(t, "input", `{}`, "junk", "x")
		badV := b.rawAdd(t, "job_id", "v9", "input", `{}`, "v", "9")
		_, res := b.readAdmit(t, "w1", 10, AdmitOpts{})
		for i := range res {
			require.Equal(t, Poisoned, res[i].Status, "entry %d", i)
		}
		rec := b.get(t, "bad-json")
		require.Equal(t, "FAILED", rec.State)
		require.Contains(t, rec.Error, "not valid JSON")
		require.Equal(t, withID, rec.Entry)
		require.Equal(t, []string{EventFailed}, b.eventTypes(t, "bad-json"))
		require.Contains(t, b.get(t, "v9").Error, "unknown wire version")

		var rejected []Event
		for _, e := range b.events(t) {
			if e.Type == EventRejected {
				rejected = append(rejected, e)
			}
		}
		require.Len(t, rejected, 1)
		require.Equal(t, "", rejected[0].JobID)
		require.Contains(t, rejected[0].Payload.Reason, "missing job_id")

		dead, err := b.rdb.XRange(b.ctx, b.keys.Dead(), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, dead, 3)
		byEntry := map[string]map[string]any{}
		for _, d := range dead {
			byEntry[d.Values["dead_entry"].(string)] = d.Values
		}
		require.Equal(t, "x", byEntry[noID]["junk"], "original fields are copied")
		require.Contains(t, byEntry[badV]["dead_reason"], "unknown wire version")
		require.Empty(t, b.pel(t))
		require.EqualValues(t, 0, b.xlen(t, b.keys.Submissions()))
	})
}

func TestAdmitFinishedJob(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, sub("f"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		msgs, _ := b.readAdmit(t, "w1", 1, AdmitOpts{})
		// A record that is terminal while its entry is still pending (a
		// finalize from an older version that did not ack, or a hand edit).
		require.NoError(t, b.rdb.HSet(b.ctx, b.keys.Job("f"), "state", "COMPLETED").Err())
		res := b.admit(t, "w1", msgs, AdmitOpts{})
		require.Equal(t, Finished, res[0].Status)
		require.Empty(t, b.pel(t))
		require.EqualValues(t, 0, b.xlen(t, b.keys.Submissions()))
	})
}

func TestAdmitRawDedupe(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		b.rawAdd(t, "job_id", "holder", "input", `1`, "input_hash", "H")
		b.rawAdd(t, "job_id", "alias", "input", `1`, "input_hash", "H")
		opts := AdmitOpts{Dedupe: true, ResultTTL: time.Hour}
		_, res := b.readAdmit(t, "w1", 10, opts)
		require.Equal(t, Admitted, res[0].Status)
		require.Equal(t, Deduplicated, res[1].Status, "same batch: the second sees the first's dedupe key")

		alias := b.get(t, "alias")
		require.Equal(t, "holder", alias.AliasOf)
		require.Equal(t, "", alias.State)
		require.Equal(t, []string{EventDeduplicated}, b.eventTypes(t, "alias"))
		evs := b.events(t)
		require.Equal(t, "holder", evs[len(evs)-1].Payload.AliasOf)

		// Submit of the alias id answers with the holder.
		r, err := b.st.Submit(b.ctx, sub("alias"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		require.Equal(t, "holder", r.JobID)
		require.True(t, r.Deduped)
		require.Equal(t, "SUBMITTED", r.State)

		st, err := b.st.Cancel(b.ctx, "alias", CancelOpts{Now: b.now})
		require.NoError(t, err)
		require.Equal(t, "", st, "alias records are left alone")
		require.Len(t, b.pel(t), 1)
	})
}

// TestAdmitHandoffNotCounted: a delivery that follows a graceful handoff is
// not counted toward MaxDeliveries, so a healthy job survives any number of
// rolling restarts; the handoff flag is cleared by the admit that sees it.
func TestAdmitHandoffNotCounted(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		opts := AdmitOpts{MaxDeliveries: 5, ResultTTL: time.Hour}
		_, err := b.st.Submit(b.ctx, sub("long"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		msgs, res := b.readAdmit(t, "w0", 1, opts)
		require.Equal(t, Admitted, res[0].Status)
		require.Equal(t, 1, res[0].Record.Deliveries)
		owner, epoch := "w0", res[0].Record.Epoch
		for i := 1; i <= 6; i++ {
			n, err := b.st.Handoff(b.ctx, owner, []Lease{{JobID: "long", Entry: msgs[0].ID, Epoch: epoch}})
			require.NoError(t, err)
			require.Equal(t, 1, n)
			flag, err := b.rdb.HGet(b.ctx, b.keys.Job("long"), "handoff").Result()
			require.NoError(t, err)
			require.Equal(t, "1", flag)

			next := fmt.Sprintf("w%d", i)
			got, _, _, err := b.st.Claim(b.ctx, next, 30*time.Second, 10, "0-0")
			require.NoError(t, err)
			require.Len(t, got, 1)
			r := b.admit(t, next, got, opts)[0]
			require.Equal(t, Admitted, r.Status, "handoff #%d", i)
			require.Equal(t, 1, r.Record.Deliveries, "handoff #%d is not counted", i)
			require.Equal(t, next, r.Record.Owner)
			owner, epoch = next, r.Record.Epoch
			n64, err := b.rdb.HExists(b.ctx, b.keys.Job("long"), "handoff").Result()
			require.NoError(t, err)
			require.False(t, n64, "the admit clears the handoff flag")
		}
		rec := b.get(t, "long")
		require.Equal(t, "SUBMITTED", rec.State)
		require.EqualValues(t, 7, rec.Epoch)
		require.Zero(t, b.xlen(t, b.keys.Dead()))

		// Without a handoff the next re-deliveries count again: 1 + 4 = 5 is
		// allowed, the 6th counted admit poisons.
		for i := 0; i < 4; i++ {
			b.takeOver(t, "wx", msgs[0].ID)
			require.Equal(t, Admitted, b.admit(t, "wx", msgs, opts)[0].Status)
		}
		b.takeOver(t, "wx", msgs[0].ID)
		require.Equal(t, Poisoned, b.admit(t, "wx", msgs, opts)[0].Status)
		require.Equal(t, 6, b.get(t, "long").Deliveries)
	})
}

// TestAdmitOnRunpodNotCounted: once the record has a runpod_id the worker
// only polls the job, so re-deliveries (worker crashes, reclaims) are not
// counted and a long job on Runpod is never poisoned while it still runs.
func TestAdmitOnRunpodNotCounted(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		opts := AdmitOpts{MaxDeliveries: 5, ResultTTL: time.Hour}
		_, err := b.st.Submit(b.ctx, sub("rp"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		msgs, res := b.readAdmit(t, "w0", 1, opts)
		require.Equal(t, Admitted, res[0].Status)
		rec := res[0].Record
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "rp", Owner: rec.Owner, Epoch: rec.Epoch, Step: "SUBMITTING", Attempts: 1}, b.now))
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "rp", Owner: rec.Owner, Epoch: rec.Epoch, Step: "POLL",
			State: "IN_PROGRESS", RunpodID: "rp-1", RunpodStatus: "IN_PROGRESS"}, b.now))
		for i := 1; i <= 6; i++ {
			c := fmt.Sprintf("w%d", i)
			b.takeOver(t, c, msgs[0].ID)
			r := b.admit(t, c, msgs, opts)[0]
			require.Equal(t, Admitted, r.Status, "reclaim #%d", i)
			require.Equal(t, 1, r.Record.Deliveries, "reclaim #%d of a job on Runpod is not counted", i)
		}
		got := b.get(t, "rp")
		require.Equal(t, "IN_PROGRESS", got.State)
		require.Equal(t, "rp-1", got.RunpodID)
		require.EqualValues(t, 7, got.Epoch)
		require.Zero(t, b.xlen(t, b.keys.Dead()))
	})
}

// TestAdmitCrashLoopStillPoisoned: with no runpod_id and no handoff every
// re-delivery counts, as before: past MaxDeliveries the job is poisoned.
func TestAdmitCrashLoopStillPoisoned(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		opts := AdmitOpts{MaxDeliveries: 5, ResultTTL: time.Hour}
		_, err := b.st.Submit(b.ctx, sub("crash"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		msgs, res := b.readAdmit(t, "w0", 1, opts)
		require.Equal(t, Admitted, res[0].Status)
		for i := 1; i <= 4; i++ {
			c := fmt.Sprintf("w%d", i)
			b.takeOver(t, c, msgs[0].ID)
			r := b.admit(t, c, msgs, opts)[0]
			require.Equal(t, Admitted, r.Status)
			require.Equal(t, i+1, r.Record.Deliveries)
		}
		b.takeOver(t, "w5", msgs[0].ID)
		require.Equal(t, Poisoned, b.admit(t, "w5", msgs, opts)[0].Status)
		rec := b.get(t, "crash")
		require.Equal(t, "FAILED", rec.State)
		require.Equal(t, "delivered 6 times, over MaxDeliveries 5", rec.Error)
		require.EqualValues(t, 1, b.xlen(t, b.keys.Dead()))
	})
}

// aliasOf makes raw x an alias of raw y (same input hash h) and returns
// y's admitted record.
func (b *testBundle) aliasOf(t *testing.T, x, y, h string, opts AdmitOpts) Record {
	t.Helper()
	b.rawAdd(t, "job_id", y, "input", `1`, "input_hash", h)
	_, res := b.readAdmit(t, "w1", 10, opts)
	last := res[len(res)-1] // earlier entries may be pending ones of the test
	require.Equal(t, Admitted, last.Status)
	require.Equal(t, y, last.Record.JobID)
	b.rawAdd(t, "job_id", x, "input", `1`, "input_hash", h)
	_, res2 := b.readAdmit(t, "w1", 10, opts)
	require.Equal(t, Deduplicated, res2[len(res2)-1].Status)
	require.Equal(t, y, b.get(t, x).AliasOf)
	return last.Record
}

// TestAdmitStaleAlias: a raw re-submission of an alias id whose holder
// FAILED (or expired) runs as a new job instead of being a duplicate; an
// alias of a live or COMPLETED holder still answers Finished/Duplicate.
func TestAdmitStaleAlias(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		opts := AdmitOpts{Dedupe: true, ResultTTL: time.Hour, MaxDeliveries: 5}
		y := b.aliasOf(t, "X", "Y", "h", opts)

		// Holder live: the re-XADD of X is a duplicate, X stays an alias.
		b.rawAdd(t, "job_id", "X", "input", `1`, "input_hash", "h")
		_, res := b.readAdmit(t, "w1", 10, opts)
		require.Equal(t, Duplicate, res[0].Status)
		require.Equal(t, "Y", b.get(t, "X").AliasOf)

		errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "Y", Entry: y.Entry, Owner: y.Owner, Epoch: y.Epoch, State: "FAILED",
			Error: "boom", InputHash: "h"}}, FinalizeOpts{ResultTTL: time.Hour, Now: b.now})
		require.NoError(t, err)
		require.NoError(t, errs[0])

		b.rawAdd(t, "job_id", "X", "input", `1`, "input_hash", "h")
		_, res = b.readAdmit(t, "w1", 10, opts)
		require.Equal(t, Admitted, res[0].Status)
		x := b.get(t, "X")
		require.Equal(t, "", x.AliasOf)
		require.Equal(t, "SUBMITTED", x.State)
		require.Equal(t, res[0].Record.Entry, x.Entry)
		require.Equal(t, "w1", x.Owner)
		require.EqualValues(t, 1, x.Epoch)
		require.Equal(t, 1, x.Deliveries)
		require.Equal(t, []string{EventDeduplicated, EventSubmitted}, b.eventTypes(t, "X"))
		holder, err := b.rdb.Get(b.ctx, b.keys.Dedupe("h")).Result()
		require.NoError(t, err)
		require.Equal(t, "X", holder, "the re-run job takes the dedupe key")
		ttl, err := b.rdb.PTTL(b.ctx, b.keys.Job("X")).Result()
		require.NoError(t, err)
		require.Less(t, ttl, time.Duration(0), "the new record has no alias TTL")

		// Holder expired: same.
		b.aliasOf(t, "X2", "Y2", "h2", opts)
		require.NoError(t, b.rdb.Del(b.ctx, b.keys.Job("Y2")).Err())
		b.rawAdd(t, "job_id", "X2", "input", `1`)
		_, res = b.readAdmit(t, "w1", 10, opts)
		require.Equal(t, Admitted, res[0].Status)
		require.Equal(t, "", b.get(t, "X2").AliasOf)
	})
}

// TestAdmitOwnLeaseBackNotCounted: an admit whose caller still runs the job
// (HeldEpoch) at the record's owner and epoch is its own lapsed lease taken
// back, not a crash: it is not counted, however often it happens. An admit
// claiming to hold the job at another epoch, or by another consumer, counts
// as before, and so does one by the same consumer without memory of the job
// (a restart under a fixed instance id).
func TestAdmitOwnLeaseBackNotCounted(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		opts := AdmitOpts{MaxDeliveries: 2, ResultTTL: time.Hour}
		_, err := b.st.Submit(b.ctx, sub("own"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		msgs, res := b.readAdmit(t, "w1", 1, opts)
		require.Equal(t, Admitted, res[0].Status)
		epoch := res[0].Record.Epoch
		again := func(consumer string, held int64) AdmitResult {
			t.Helper()
			b.takeOver(t, consumer, msgs[0].ID)
			req := NewAdmitRequest(msgs[0], 1<<20)
			req.HeldEpoch = held
			o := opts
			o.Consumer, o.Now = consumer, b.now
			r, err := b.st.Admit(b.ctx, []AdmitRequest{req}, o)
			require.NoError(t, err)
			return r[0]
		}
		for i := 0; i < 5; i++ {
			r := again("w1", epoch)
			require.Equal(t, Admitted, r.Status, "own re-admit #%d", i+1)
			require.Equal(t, 1, r.Record.Deliveries, "own re-admit #%d is not counted", i+1)
			epoch = r.Record.Epoch
		}
		r := again("w1", epoch-1) // memory of an older epoch: someone may have owned it since
		require.Equal(t, Admitted, r.Status)
		require.Equal(t, 2, r.Record.Deliveries)
		epoch = r.Record.Epoch
		r = again("w2", epoch) // another consumer cannot hold our epoch
		require.Equal(t, Poisoned, r.Status)
		require.Equal(t, "delivered 3 times, over MaxDeliveries 2", b.get(t, "own").Error)
	})
}
