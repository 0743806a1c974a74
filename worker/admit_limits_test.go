package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func (b *testBundle) rawAdd(t *testing.T, vals ...any) string {
	t.Helper()
	id, err := b.rdb.XAdd(context.Background(), &redis.XAddArgs{
		Stream: b.store.Keys().Submissions(), Values: vals}).Result()
	require.NoError(t, err)
	return id
}

// One raw entry of 5,000 fields among good ones: the good ones complete,
// the bad one is dead-lettered and its job FAILED, nothing stays pending.
// Before the fix the dead-letter copy failed the whole admit script, so no
// entry of the batch was ever admitted or acknowledged.
func TestWorkerHugeEntrySparesBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	good := jobIDs("good", 5)
	for i, id := range good[:3] {
		b.rawAdd(t, "job_id", id, "input", fmt.Sprintf(`{"mock_delay":10,"mock_return":%d}`, i))
	}
	huge := []any{"job_id", "huge"}
	for i := 1; i < 5000; i++ {
		huge = append(huge, fmt.Sprintf("f%05d", i), "x")
	}
	b.rawAdd(t, huge...)
	for i, id := range good[3:] {
		b.rawAdd(t, "job_id", id, "input", fmt.Sprintf(`{"mock_delay":10,"mock_return":%d}`, i+3))
	}

	r := b.start(t, b.config("w"))
	for _, id := range good {
		b.waitState(t, id, workflow.StateCompleted, 10*time.Second)
	}
	rec := b.waitState(t, "huge", workflow.StateFailed, 5*time.Second)
	require.Contains(t, rec.Error, "MaxSubmissionFields")
	dead, err := b.rdb.XRange(ctx, b.store.Keys().Dead(), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "huge", dead[0].Values["job_id"])
	require.Equal(t, "1", dead[0].Values["dead_truncated"])
	require.Eventually(t, func() bool {
		n, err := b.rdb.XLen(ctx, b.store.Keys().Submissions()).Result()
		return err == nil && n == 0
	}, 5*time.Second, 10*time.Millisecond, "every entry acknowledged and deleted")
	r.stop(t)
	require.EqualValues(t, 1, r.w.Stats().Poisoned)
}

// A raw submission cancelled before any worker admitted it ends CANCELED
// and is never sent. Before the fix Cancel answered not-found and the job
// then ran.
func TestWorkerCancelBeforeAdmit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	cl, err := client.New(b.rdb, client.Config{Namespace: b.ns})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })

	entry := b.rawAdd(t, "job_id", "raw-c", "input", `{"mock_delay":10}`)
	_, err = cl.Cancel(ctx, "raw-c")
	require.ErrorIs(t, err, client.ErrCancelPending)
	b.rawAdd(t, "job_id", "raw-ok", "input", `{"mock_delay":10}`)

	b.start(t, b.config("w"))
	b.waitState(t, "raw-ok", workflow.StateCompleted, 10*time.Second)
	rec := b.waitState(t, "raw-c", workflow.StateCanceled, 5*time.Second)
	require.Equal(t, workflow.ReasonCanceledUnsent, rec.Error)
	require.Equal(t, entry, rec.Entry)
	runs, _, _ := b.rp.counts()
	require.Equal(t, 1, runs, "only raw-ok was sent to runpod")
	cnt, _ := terminalEvents(b.events(t)["raw-c"])
	require.Equal(t, 1, cnt)
	rep, err := cl.Audit(ctx, client.AuditOptions{})
	require.NoError(t, err)
	require.True(t, rep.OK(), "audit: %v", rep.Violations)
}

// Deadlines are on Redis's clock, and the worker compares them through the
// offset it learns at admit, not with its own clock. A worker 2 h ahead of
// the producer (a producer 2 h behind) used to time a 1 h job out at once;
// a worker 2 h behind never timed out a short one.
func TestWorkerDeadlineOnRedisClock(t *testing.T) {
	t.Parallel()
	for _, skew := range []time.Duration{2 * time.Hour, -2 * time.Hour} {
		t.Run(fmt.Sprint("worker", skew), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			cfg := b.config("w")
			cfg.Now = func() time.Time { return time.Now().Add(skew) }
			b.start(t, cfg)

			b.submit(t, "hour", `{"mock_delay":50,"mock_return":1}`, time.Hour)
			rec := b.waitRecord(t, "hour", 10*time.Second, func(r streams.Record) bool {
				return workflow.State(r.State).Terminal()
			})
			require.Equal(t, string(workflow.StateCompleted), rec.State, "error %q", rec.Error)

			b.submit(t, "short", `{"mock_delay":600000}`, 300*time.Millisecond)
			rec = b.waitRecord(t, "short", 10*time.Second, func(r streams.Record) bool {
				return workflow.State(r.State).Terminal()
			})
			require.Equal(t, string(workflow.StateTimedOut), rec.State)
		})
	}
}

// A job already on Runpod is resumed by a worker whose input limit is now
// lower (a rolling upgrade), never failed as poison while its GPU job runs.
func TestWorkerResumesOnRunpodDespiteLowerLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old := b.start(t, b.config("old"))
	b.submit(t, "big", `{"mock_delay":1500,"mock_return":"done","pad":"0123456789"}`, 0)
	b.waitRecord(t, "big", 5*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	old.stop(t) // graceful: the lease is handed off

	cfg := b.config("new")
	cfg.MaxInputBytes = 16
	b.start(t, cfg)
	rec := b.waitRecord(t, "big", 10*time.Second, func(r streams.Record) bool {
		return workflow.State(r.State).Terminal()
	})
	require.Equal(t, string(workflow.StateCompleted), rec.State, "error %q", rec.Error)
	require.Equal(t, "new", rec.Owner)
	runs, _, _ := b.rp.counts()
	require.Equal(t, 1, runs)
	n, err := b.rdb.XLen(context.Background(), b.store.Keys().Dead()).Result()
	require.NoError(t, err)
	require.Zero(t, n, "nothing dead-lettered")
}

// TestRecordTimesOnRedisClock: a worker whose clock is two hours off writes
// the record's updated_ms and finished_ms, and its events' ts, on Redis's
// clock like every other timestamp: the dashboard bounds a finished job's
// event read by finished_ms against Redis's stream ids, and a record
// "updated" hours before it was created misleads everyone reading it.
func TestRecordTimesOnRedisClock(t *testing.T) {
	t.Parallel()
	for _, skew := range []time.Duration{2 * time.Hour, -2 * time.Hour} {
		t.Run(fmt.Sprint("worker", skew), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			cfg := b.config("w")
			cfg.Now = func() time.Time { return time.Now().Add(skew) }
			before, err := b.rdb.Time(ctx).Result()
			require.NoError(t, err)
			b.start(t, cfg)
			b.submit(t, "clk", `{"mock_delay":50,"mock_progress":{"p":1},"mock_return":1}`, time.Hour)
			rec := b.waitState(t, "clk", workflow.StateCompleted, 30*time.Second)
			after, err := b.rdb.Time(ctx).Result()
			require.NoError(t, err)
			lo, hi := before.UnixMilli(), after.UnixMilli()
			require.GreaterOrEqual(t, rec.FinishedMs, lo, "finished_ms")
			require.LessOrEqual(t, rec.FinishedMs, hi, "finished_ms")
			require.GreaterOrEqual(t, rec.UpdatedMs, rec.CreatedMs, "updated_ms")
			require.LessOrEqual(t, rec.UpdatedMs, hi, "updated_ms")
			evs := b.events(t)["clk"]
			require.NotEmpty(t, evs)
			for _, e := range evs {
				require.GreaterOrEqual(t, e.TS, lo, "event %s ts", e.Type)
				require.LessOrEqual(t, e.TS, hi, "event %s ts", e.Type)
			}
		})
	}
}
