package streams

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestEventsEveryType drives the store through every event type and checks
// each entry's flat routing fields and payload.
func TestEventsEveryType(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		for _, id := range []string{"ok", "fail", "late", "stop"} {
			_, err := b.st.Submit(b.ctx, sub(id), SubmitOpts{Now: b.now})
			require.NoError(t, err)
		}
		b.rawAdd(t, "job_id", "ok2", "input", `1`, "input_hash", "H")
		b.rawAdd(t, "job_id", "ok3", "input", `1`, "input_hash", "H")
		b.rawAdd(t, "input", `1`)
		_, res := b.readAdmit(t, "w1", 10, AdmitOpts{Dedupe: true})
		epochs := map[string]int64{}
		for _, r := range res {
			if r.Status == Admitted {
				epochs[r.Record.JobID] = r.Record.Epoch
			}
		}
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "ok", Owner: "w1", Epoch: epochs["ok"], State: "QUEUED",
			Event: &EventInput{Type: EventQueued}}, b.now))
		require.NoError(t, b.st.Checkpoint(b.ctx, Checkpoint{JobID: "ok", Owner: "w1", Epoch: epochs["ok"], State: "IN_PROGRESS",
			Event: &EventInput{Type: EventProgress, Payload: EventPayload{ExecMs: 5}}}, b.now))
		_, err := b.st.Cancel(b.ctx, "stop", CancelOpts{Now: b.now})
		require.NoError(t, err)
		var outs []Outcome
		for id, st := range map[string]string{"ok": "COMPLETED", "fail": "FAILED", "late": "TIMED_OUT", "stop": "CANCELED"} {
			outs = append(outs, Outcome{JobID: id, Owner: "w1", Epoch: epochs[id], State: st})
		}
		errs, err := b.st.Finalize(b.ctx, outs, FinalizeOpts{Now: b.now})
		require.NoError(t, err)
		for _, e := range errs {
			require.NoError(t, e)
		}

		types := map[string]int{}
		for _, e := range b.events(t) { // asserts the flat fields of each
			types[e.Type]++
			require.Equal(t, b.now.UnixMilli(), e.TS, "ts is the injected clock")
			if e.Type != EventRejected {
				require.NotEmpty(t, e.JobID, "%s event", e.Type)
			}
		}
		for _, typ := range []string{EventSubmitted, EventQueued, EventProgress, EventCompleted, EventFailed,
			EventTimedOut, EventCanceled, EventCancelRequested, EventDeduplicated, EventRejected} {
			require.Positive(t, types[typ], "no %s event", typ)
		}
	})
}

func TestReadEvents(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		for i := range 3 {
			_, err := b.st.Submit(b.ctx, sub(fmt.Sprint("j", i)), SubmitOpts{Now: b.now})
			require.NoError(t, err)
		}
		// A foreign, undecodable entry does not fail the batch.
		require.NoError(t, b.rdb.XAdd(b.ctx, &redis.XAddArgs{Stream: b.keys.Events(),
			Values: []any{"type", "submitted", "job_id", "x", "payload", "garbage"}}).Err())

		evs, err := b.st.ReadEvents(b.ctx, "0", 2, 0)
		require.NoError(t, err)
		require.Len(t, evs, 2)
		require.Equal(t, "j0", evs[0].JobID)
		rest, err := b.st.ReadEvents(b.ctx, evs[1].ID, 10, 0)
		require.NoError(t, err)
		require.Len(t, rest, 2)
		require.Equal(t, "j2", rest[0].JobID)
		require.Equal(t, EventSubmitted, rest[0].Type)
		require.Equal(t, "", rest[1].Type, "undecodable")
		require.Equal(t, "x", rest[1].JobID)

		none, err := b.st.ReadEvents(b.ctx, rest[1].ID, 10, 20*time.Millisecond)
		require.NoError(t, err)
		require.Empty(t, none)
	})
}

func TestTrimEvents(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		// Events with ids at 1..300 ms; "~" trims whole stream nodes (100
		// entries each by default), so fewer than all old entries may go,
		// but never a newer one.
		pipe := b.rdb.Pipeline()
		for ms := 1; ms <= 300; ms++ {
			pipe.XAdd(b.ctx, &redis.XAddArgs{Stream: b.keys.Events(), ID: fmt.Sprintf("%d-0", ms),
				Values: []any{"type", "progress"}})
		}
		_, err := pipe.Exec(b.ctx)
		require.NoError(t, err)

		n, err := b.st.TrimEvents(b.ctx, time.UnixMilli(250), 10_000)
		require.NoError(t, err)
		require.GreaterOrEqual(t, n, int64(100))
		require.LessOrEqual(t, n, int64(249))
		left, err := b.rdb.XRange(b.ctx, b.keys.Events(), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, left, 300-int(n))
		require.Equal(t, "300-0", left[len(left)-1].ID)
		first, err := b.rdb.XRange(b.ctx, b.keys.Events(), "250-0", "+").Result()
		require.NoError(t, err)
		require.Len(t, first, 51, "nothing at or after the cut is trimmed")
	})
}
