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
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// hugeEntry returns the field/value list of a raw entry with n fields, the
// job id first and no input (poison on any version of the decoder).
func hugeEntry(jobID string, n int) []any {
	vals := []any{"job_id", jobID}
	for i := 1; i < n; i++ {
		vals = append(vals, fmt.Sprintf("f%05d", i), "x")
	}
	return vals
}

// A raw entry with thousands of fields used to make the dead-letter copy
// one redis.call with every field, which Lua refuses above ~8,000 values:
// admit.lua failed whole, nothing was acked and the good entries of the
// batch stayed pending forever.
func TestAdmitHugeEntrySparesBatchMates(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		b.rawAdd(t, "job_id", "good-1", "input", `1`)
		huge := b.rawAdd(t, hugeEntry("huge", 5000)...)
		b.rawAdd(t, "job_id", "good-2", "input", `2`)
		_, res := b.readAdmit(t, "w1", 10, AdmitOpts{ResultTTL: time.Hour})
		require.Len(t, res, 3)
		require.Equal(t, Admitted, res[0].Status)
		require.Equal(t, Poisoned, res[1].Status)
		require.Equal(t, Admitted, res[2].Status)

		rec := b.get(t, "huge")
		require.Equal(t, "FAILED", rec.State)
		require.Contains(t, rec.Error, "MaxSubmissionFields")
		require.NotContains(t, b.pel(t), huge, "the huge entry is acknowledged")

		dead, err := b.rdb.XRange(b.ctx, b.keys.Dead(), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, dead, 1)
		d := dead[0].Values
		require.Equal(t, "huge", d["job_id"])
		require.Equal(t, "1", d["dead_truncated"])
		require.Equal(t, "5000", d["dead_fields"])
		require.Equal(t, huge, d["dead_entry"])
		require.Contains(t, d["dead_reason"], "MaxSubmissionFields")
		require.Len(t, d, MaxSubmissionFields+5, "64 copied fields + dead_reason, dead_entry, dead_ms, dead_truncated, dead_fields")
	})
}

// The dead-letter copy is bounded in bytes too, and says it was cut.
func TestDeadLetterCopyBoundedInBytes(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		big := strings.Repeat("y", 3<<20) // not JSON: poison
		b.rawAdd(t, "job_id", "bigbad", "input", big, "z", "after")
		msgs, err := b.st.Read(b.ctx, "w1", 10, 0)
		require.NoError(t, err)
		res := b.admit(t, "w1", msgs, AdmitOpts{})
		require.Equal(t, Poisoned, res[0].Status)
		dead, err := b.rdb.XRange(b.ctx, b.keys.Dead(), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, dead, 1)
		d := dead[0].Values
		in, _ := d["input"].(string)
		require.Equal(t, 1<<20-len("job_id")-len("bigbad")-len("input"), len(in), "the input is cut to the 1 MiB budget")
		require.NotContains(t, d, "z", "fields past the budget are not copied")
		require.Equal(t, "1", d["dead_truncated"])
		require.Equal(t, "3", d["dead_fields"])
	})
}

// A small poison entry is copied whole, without the truncation marks.
func TestDeadLetterCopyWhole(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		b.rawAdd(t, "job_id", "p", "input", "{not json", "extra", "kept")
		b.readAdmit(t, "w1", 10, AdmitOpts{})
		dead, err := b.rdb.XRange(b.ctx, b.keys.Dead(), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, dead, 1)
		require.Equal(t, "kept", dead[0].Values["extra"])
		require.NotContains(t, dead[0].Values, "dead_truncated")
	})
}

// A job whose record has a Runpod id is resumed, never judged poison on its
// entry: a rolling upgrade that lowers --max-input-bytes must not fail a job
// whose GPU job runs on.
func TestAdmitOnRunpodNotJudgedPoison(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		entry := b.rawAdd(t, "job_id", "big", "input", `{"prompt":"a long input"}`)
		msgs, err := b.st.Read(b.ctx, "old", 1, 0)
		require.NoError(t, err)
		res := b.admit(t, "old", msgs, AdmitOpts{}) // 1 MiB limit: fine
		require.Equal(t, Admitted, res[0].Status)
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "big", Owner: res[0].Record.Owner, Epoch: res[0].Record.Epoch,
			Step: "POLL", State: "QUEUED", RunpodID: "rp-1", RunpodStatus: "IN_QUEUE"}, b.now))

		// The new worker's limit is lower than the input.
		b.takeOver(t, "new", entry)
		req := NewAdmitRequest(msgs[0], 8)
		require.NotEmpty(t, req.Poison, "today's validation refuses the entry")
		got, err := b.st.Admit(b.ctx, []AdmitRequest{req}, AdmitOpts{Consumer: "new", Now: b.now})
		require.NoError(t, err)
		require.Equal(t, Admitted, got[0].Status, "resumed, not poisoned")
		require.Equal(t, "rp-1", got[0].Record.RunpodID)
		require.Equal(t, "QUEUED", got[0].Record.State)
		require.Equal(t, "new", got[0].Record.Owner)
		require.Zero(t, b.xlen(t, b.keys.Dead()), "nothing dead-lettered")

		// Without a Runpod id the same entry is poison, as before.
		entry2 := b.rawAdd(t, "job_id", "big2", "input", `{"prompt":"a long input"}`)
		msgs, err = b.st.Read(b.ctx, "new", 1, 0)
		require.NoError(t, err)
		require.Equal(t, entry2, msgs[0].ID)
		got, err = b.st.Admit(b.ctx, []AdmitRequest{NewAdmitRequest(msgs[0], 8)}, AdmitOpts{Consumer: "new", Now: b.now})
		require.NoError(t, err)
		require.Equal(t, Poisoned, got[0].Status)
	})
}

// A cancel of an id that has no record yet (a raw submission still waiting
// in the stream) is kept as a stub; the admit of that entry ends the job
// CANCELED without it ever being sent.
func TestAdmitHonoursCancelStub(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		entry := b.rawAdd(t, "job_id", "raw-c", "input", `1`)
		_, err := b.st.Cancel(b.ctx, "raw-c", CancelOpts{Now: b.now})
		require.ErrorIs(t, err, ErrNotFound, "no stub without StubTTL")
		_, err = b.st.Cancel(b.ctx, "raw-c", CancelOpts{Now: b.now, StubTTL: time.Hour})
		require.ErrorIs(t, err, ErrCancelPending)
		_, err = b.st.Get(b.ctx, "raw-c")
		require.ErrorIs(t, err, ErrNotFound, "a stub is not a job")
		ttl, err := b.rdb.PTTL(b.ctx, b.keys.Job("raw-c")).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 59*time.Minute, "the stub expires")

		b.rawAdd(t, "job_id", "raw-ok", "input", `2`)
		_, res := b.readAdmit(t, "w1", 10, AdmitOpts{ResultTTL: 2 * time.Hour})
		require.Equal(t, Canceled, res[0].Status)
		require.Equal(t, Admitted, res[1].Status, "the batch-mate is unaffected")

		rec := b.get(t, "raw-c")
		require.Equal(t, "CANCELED", rec.State)
		require.Equal(t, "DONE", rec.Step)
		require.Equal(t, entry, rec.Entry)
		require.Equal(t, workflow.ReasonCanceledUnsent, rec.Error)
		require.Zero(t, rec.Attempts, "never sent")
		require.Equal(t, []string{EventSubmitted, EventCancelRequested, EventCanceled}, b.eventTypes(t, "raw-c"))
		require.NotContains(t, b.pel(t), entry)
		ttl, err = b.rdb.PTTL(b.ctx, b.keys.Job("raw-c")).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, time.Hour, "the terminal record takes the result TTL")
	})
}

// Submit of an id cancelled beforehand creates the job with its cancel flag.
func TestSubmitHonoursCancelStub(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Cancel(b.ctx, "s", CancelOpts{Now: b.now, StubTTL: time.Hour})
		require.ErrorIs(t, err, ErrCancelPending)
		r, err := b.st.Submit(b.ctx, sub("s"), SubmitOpts{Now: b.now})
		require.NoError(t, err)
		require.True(t, r.Created)
		rec := b.get(t, "s")
		require.True(t, rec.Cancel)
		require.Equal(t, "SUBMITTED", rec.State)
		require.Equal(t, []string{EventSubmitted, EventCancelRequested}, b.eventTypes(t, "s"))
		ttl, err := b.rdb.PTTL(b.ctx, b.keys.Job("s")).Result()
		require.NoError(t, err)
		require.Equal(t, time.Duration(-1), ttl, "the live job does not expire with the stub")
	})
}

// Without a test override the scripts stamp records with Redis's clock.
func TestScriptsUseRedisClock(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		if b.mini != nil {
			b.mini.SetTime(time.UnixMilli(1_900_000_000_000))
		}
		before, err := b.rdb.Time(b.ctx).Result()
		require.NoError(t, err)
		_, err = b.st.Submit(b.ctx, Submission{JobID: "t1", Input: []byte(`1`), TimeoutMs: 3_600_000}, SubmitOpts{})
		require.NoError(t, err)
		b.rawAdd(t, "job_id", "t2", "input", `1`, "timeout_ms", "3600000")
		msgs, err := b.st.Read(b.ctx, "w1", 10, 0)
		require.NoError(t, err)
		reqs := []AdmitRequest{NewAdmitRequest(msgs[0], 0), NewAdmitRequest(msgs[1], 0)}
		res, err := b.st.Admit(b.ctx, reqs, AdmitOpts{Consumer: "w1"})
		require.NoError(t, err)
		after, err := b.rdb.Time(b.ctx).Result()
		require.NoError(t, err)
		lo, hi := before.UnixMilli(), after.UnixMilli()
		for i, id := range []string{"t1", "t2"} {
			rec := res[i].Record
			require.Equal(t, id, rec.JobID)
			require.GreaterOrEqual(t, rec.CreatedMs, lo)
			require.LessOrEqual(t, rec.CreatedMs, hi)
			require.Equal(t, rec.CreatedMs+3_600_000, rec.DeadlineMs)
			require.GreaterOrEqual(t, res[i].RedisNow.UnixMilli(), lo)
			require.LessOrEqual(t, res[i].RedisNow.UnixMilli(), hi)
		}
	})
}

// ErrDedupeContention is matchable with errors.Is. A hook rewrites the
// dedupe key after every read, so the script always sees it changed.
func TestDedupeContentionIsMatchable(t *testing.T) {
	t.Parallel()
	b := setup(t, backendRedis)
	other := redis.NewClient(b.rdb.Options())
	t.Cleanup(func() { _ = other.Close() })
	n := 0
	b.rdb.AddHook(contentionHook{after: func(cmd redis.Cmder) {
		if cmd.Name() == "get" && len(cmd.Args()) > 1 && cmd.Args()[1] == b.keys.Dedupe("h") {
			n++
			other.Set(context.Background(), b.keys.Dedupe("h"), fmt.Sprint("racer-", n), 0)
		}
	}})
	_, err := b.st.Submit(b.ctx, Submission{JobID: "d", Input: []byte(`1`), InputHash: "h"}, SubmitOpts{Dedupe: true})
	require.ErrorIs(t, err, ErrDedupeContention)
	_, err = b.st.Get(b.ctx, "d")
	require.ErrorIs(t, err, ErrNotFound, "nothing written")
}

type contentionHook struct{ after func(redis.Cmder) }

func (contentionHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h contentionHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.after(cmd)
		return err
	}
}
func (contentionHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// The field-count limit is a poison reason that names the limit.
func TestDecodeSubmissionFieldLimit(t *testing.T) {
	t.Parallel()
	vals := map[string]any{"job_id": "j", "input": "1"}
	for i := 0; len(vals) < MaxSubmissionFields; i++ {
		vals[fmt.Sprint("x", i)] = "1"
	}
	_, err := DecodeSubmission(redis.XMessage{Values: vals}, 0)
	require.NoError(t, err, "exactly the limit is fine")
	vals["one-more"] = "1"
	_, err = DecodeSubmission(redis.XMessage{Values: vals}, 0)
	var pe *PoisonError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "j", pe.JobID, "the job id is kept, so the job ends FAILED")
	require.Contains(t, pe.Reason, "MaxSubmissionFields")
	require.Contains(t, pe.Reason, fmt.Sprint(MaxSubmissionFields))
}

// TestWorkerWritesUseRedisClock: checkpoint.lua, chunks.lua, reveal.lua and
// finalize.lua called without a time (what the worker does) stamp
// updated_ms, finished_ms, dead_ms and their events' ts with Redis's clock,
// not the caller's: a worker hours off cannot skew what readers compare
// with Redis's times.
func TestWorkerWritesUseRedisClock(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		if b.mini != nil {
			b.mini.SetTime(time.UnixMilli(1_900_000_000_000))
		}
		before, err := b.rdb.Time(b.ctx).Result()
		require.NoError(t, err)
		_, err = b.st.Submit(b.ctx, sub("w"), SubmitOpts{})
		require.NoError(t, err)
		msgs, err := b.st.Read(b.ctx, "w1", 1, 0)
		require.NoError(t, err)
		res, err := b.st.Admit(b.ctx, []AdmitRequest{NewAdmitRequest(msgs[0], 1<<20)}, AdmitOpts{Consumer: "w1"})
		require.NoError(t, err)
		rec := res[0].Record
		cp := Checkpoint{JobID: "w", Owner: rec.Owner, Epoch: rec.Epoch}
		step := cp
		step.Step, step.State, step.RunpodID, step.Attempts = "POLL", "QUEUED", "rp-1", 1
		step.Event = &EventInput{Type: EventQueued}
		require.NoError(t, b.st.Checkpoint(b.ctx, step, time.Time{}))
		_, err = b.st.AppendChunks(b.ctx, Chunks{JobID: "w", Owner: rec.Owner, Epoch: rec.Epoch,
			Outputs: [][]byte{[]byte(`1`)}, RunpodID: "rp-1"}, time.Time{})
		require.NoError(t, err)
		_, err = b.st.RevealRunpodJob(b.ctx, Reveal{JobID: "w", Entry: rec.Entry, RunpodID: "rp-0"}, time.Time{})
		require.NoError(t, err)
		mid := b.get(t, "w")
		errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "w", Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch,
			State: "FAILED", Error: "x", DeadLetter: "test", InputHashKnown: true}}, FinalizeOpts{})
		require.NoError(t, err)
		require.NoError(t, errs[0])
		after, err := b.rdb.Time(b.ctx).Result()
		require.NoError(t, err)
		lo, hi := before.UnixMilli(), after.UnixMilli()
		end := b.get(t, "w")
		for name, ms := range map[string]int64{"updated_ms (before finalize)": mid.UpdatedMs,
			"updated_ms": end.UpdatedMs, "finished_ms": end.FinishedMs} {
			require.GreaterOrEqual(t, ms, lo, name)
			require.LessOrEqual(t, ms, hi, name)
		}
		evs := b.events(t)
		require.GreaterOrEqual(t, len(evs), 5, "submitted, queued, progress, revealed, failed")
		for _, e := range evs {
			require.GreaterOrEqual(t, e.TS, lo, "event %s", e.Type)
			require.LessOrEqual(t, e.TS, hi, "event %s", e.Type)
		}
		dead, err := b.rdb.XRange(b.ctx, b.keys.Dead(), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, dead, 1)
		ms, err := strconv.ParseInt(dead[0].Values["dead_ms"].(string), 10, 64)
		require.NoError(t, err)
		require.GreaterOrEqual(t, ms, lo, "dead_ms")
		require.LessOrEqual(t, ms, hi, "dead_ms")
	})
}
