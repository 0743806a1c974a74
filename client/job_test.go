package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func TestGet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		_, err := b.client.Get(ctx, "nope")
		require.ErrorIs(t, err, workflow.ErrJobNotFound)
		require.ErrorContains(t, err, `"nope"`)
	})

	t.Run("FollowsTheJobThroughItsLife", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "j")
		recs := b.worker.admit(ctx, 1, streams.AdmitOpts{})
		job, err := b.client.Get(ctx, "j")
		require.NoError(t, err)
		require.Equal(t, workflow.StateSubmitted, job.State)
		require.EqualValues(t, 1, job.Epoch)
		require.Equal(t, 1, job.Deliveries)
		require.Equal(t, "fake-worker", job.Owner)

		b.worker.accept(ctx, recs["j"], "rp-7")
		job, err = b.client.Get(ctx, "j")
		require.NoError(t, err)
		require.Equal(t, workflow.StateQueued, job.State)
		require.Equal(t, "rp-7", job.RunpodID)
		require.Equal(t, workflow.StepPoll, job.Step)

		rec := recs["j"]
		rec.RunpodID = "rp-7"
		b.worker.finish(ctx, rec, workflow.StateCompleted, `{"images":["x.png"]}`, "")
		job, err = b.client.Get(ctx, "j")
		require.NoError(t, err)
		require.Equal(t, workflow.StateCompleted, job.State)
		require.JSONEq(t, `{"images":["x.png"]}`, string(job.Output))
		require.False(t, job.FinishedAt.IsZero())
		r, ok := job.Result()
		require.True(t, ok)
		require.Equal(t, client.Result{ClientJobID: "j", Status: workflow.StateCompleted, RunpodID: "rp-7", Output: job.Output}, r)
	})
}

func TestCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("NotFoundWithoutPendingCancels", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{PendingCancelTTL: -1})
		_, err := b.client.Cancel(ctx, "nope")
		require.ErrorIs(t, err, workflow.ErrJobNotFound)
	})

	// An unknown id is kept as a pending cancel (a raw submission may still
	// be waiting in the stream): Cancel says so, Get still says not found,
	// the stub expires, and a Submit of the id arriving meanwhile is
	// cancelled before it is ever sent.
	t.Run("UnknownIDIsPending", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{PendingCancelTTL: time.Hour})
		st, err := b.client.Cancel(ctx, "later")
		require.ErrorIs(t, err, client.ErrCancelPending)
		require.Empty(t, st)
		_, err = b.client.Get(ctx, "later")
		require.ErrorIs(t, err, workflow.ErrJobNotFound)
		ttl, err := b.rdb.PTTL(ctx, "{"+b.ns+"}:job:later").Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 59*time.Minute)
		require.LessOrEqual(t, ttl, time.Hour)

		res, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "later", Input: map[string]any{"a": 1}})
		require.NoError(t, err)
		require.Equal(t, workflow.StateSubmitted, res.State)
		job, err := b.client.Get(ctx, "later")
		require.NoError(t, err)
		require.True(t, job.CancelRequested, "the pending cancel carries over to the job")
		ttl, err = b.rdb.PTTL(ctx, "{"+b.ns+"}:job:later").Result()
		require.NoError(t, err)
		require.Equal(t, time.Duration(-1), ttl, "a live job's record does not expire")
	})

	t.Run("LiveJobIsFlagged", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "j")
		st, err := b.client.Cancel(ctx, "j")
		require.NoError(t, err)
		require.Equal(t, workflow.StateSubmitted, st)
		job, err := b.client.Get(ctx, "j")
		require.NoError(t, err)
		require.True(t, job.CancelRequested)

		var types []client.EventType
		for ev, err := range b.client.Events(ctx, client.EventsOptions{From: client.FromStart, StopAtEnd: true}) {
			require.NoError(t, err)
			types = append(types, ev.Type)
		}
		require.Equal(t, []client.EventType{client.EventSubmitted, client.EventCancelRequested}, types)
	})

	t.Run("TerminalJobIsUnchanged", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "j")
		recs := b.worker.admit(ctx, 1, streams.AdmitOpts{})
		b.worker.finish(ctx, recs["j"], workflow.StateFailed, "", "boom")
		st, err := b.client.Cancel(ctx, "j")
		require.NoError(t, err)
		require.Equal(t, workflow.StateFailed, st)
		job, err := b.client.Get(ctx, "j")
		require.NoError(t, err)
		require.False(t, job.CancelRequested)
	})

	t.Run("AliasIsNotFollowed", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{Dedupe: true})
		_, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "holder", Input: 1, InputHash: "h"})
		require.NoError(t, err)
		require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "{" + b.ns + "}:submissions",
			Values: []any{"job_id", "raw", "input", "1", "input_hash", "h"}}).Err())
		b.worker.admit(ctx, 2, streams.AdmitOpts{Dedupe: true})
		st, err := b.client.Cancel(ctx, "raw")
		require.NoError(t, err)
		require.Empty(t, st)
		holder, err := b.client.Get(ctx, "holder")
		require.NoError(t, err)
		require.False(t, holder.CancelRequested, "the alias's target is not cancelled")
	})
}
