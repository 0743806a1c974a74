package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func TestSubmit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("CreatesRecordSubmissionAndEvent", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{PersistInput: true})
		before, err := b.rdb.Time(ctx).Result()
		require.NoError(t, err)
		res, err := b.client.Submit(ctx, client.SubmitOptions{
			ClientJobID: "job-1", Input: map[string]any{"prompt": "a cat"}, InputHash: "sha256:abc", Timeout: time.Minute,
		})
		require.NoError(t, err)
		require.Equal(t, client.SubmitResult{ClientJobID: "job-1", State: workflow.StateSubmitted}, res)

		job, err := b.client.Get(ctx, "job-1")
		require.NoError(t, err)
		require.Equal(t, workflow.StateSubmitted, job.State)
		require.Equal(t, "sha256:abc", job.InputHash)
		require.JSONEq(t, `{"prompt":"a cat"}`, string(job.Input))
		after, err := b.rdb.Time(ctx).Result()
		require.NoError(t, err)
		// Stamped by Redis's clock, not the client's.
		require.False(t, job.CreatedAt.Before(before.Truncate(time.Millisecond)), "created %s before %s", job.CreatedAt, before)
		require.False(t, job.CreatedAt.After(after), "created %s after %s", job.CreatedAt, after)
		require.Equal(t, job.CreatedAt.Add(time.Minute), job.Deadline)

		n, err := b.rdb.XLen(ctx, "{"+b.ns+"}:submissions").Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, n, "one submission entry for the workers")

		rep, err := b.client.Audit(ctx, client.AuditOptions{})
		require.NoError(t, err)
		require.Equal(t, 1, rep.Events)
		require.Equal(t, []string{"job-1"}, rep.InFlight)
	})

	t.Run("SameIDIsIdempotent", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "job-1")
		res, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "job-1", Input: json.RawMessage(`{"other":1}`)})
		require.NoError(t, err)
		require.Equal(t, client.SubmitResult{ClientJobID: "job-1", State: workflow.StateSubmitted, Existing: true}, res)
		n, err := b.rdb.XLen(ctx, "{"+b.ns+"}:submissions").Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, n, "no second submission entry")
	})

	t.Run("ExistingJobReportsRunpodID", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "job-1")
		recs := b.worker.admit(ctx, 1, streams.AdmitOpts{})
		b.worker.accept(ctx, recs["job-1"], "rp-1")
		res := b.submit(t, "job-1")
		require.Equal(t, client.SubmitResult{ClientJobID: "job-1", RunpodJobID: "rp-1", State: workflow.StateQueued, Existing: true}, res)
	})

	t.Run("DedupeAnswersWithTheHolder", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{Dedupe: true})
		_, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "first", Input: 1, InputHash: "h1"})
		require.NoError(t, err)
		res, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "second", Input: 1, InputHash: "h1"})
		require.NoError(t, err)
		require.Equal(t, client.SubmitResult{ClientJobID: "first", State: workflow.StateSubmitted, Deduplicated: true}, res)
		_, err = b.client.Get(ctx, "second")
		require.ErrorIs(t, err, workflow.ErrJobNotFound, "no job created for the duplicate")
	})

	t.Run("DedupeOffCreatesBoth", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		_, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "first", Input: 1, InputHash: "h1"})
		require.NoError(t, err)
		res, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "second", Input: 1, InputHash: "h1"})
		require.NoError(t, err)
		require.Equal(t, "second", res.ClientJobID)
		require.False(t, res.Deduplicated)
	})

	t.Run("RawMessageIsUsedAsIs", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{PersistInput: true})
		raw := json.RawMessage(`{"b":2,  "a":1}`)
		_, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "j", Input: raw})
		require.NoError(t, err)
		job, err := b.client.Get(ctx, "j")
		require.NoError(t, err)
		require.Equal(t, string(raw), string(job.Input), "byte for byte")
	})

	t.Run("RefusesBadOptionsNamingTheField", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{MaxInputBytes: 64})
		for _, tc := range []struct {
			name  string
			opts  client.SubmitOptions
			field string
		}{
			{"EmptyID", client.SubmitOptions{Input: 1}, "ClientJobID: required"},
			{"SpaceInID", client.SubmitOptions{ClientJobID: "a b", Input: 1}, "ClientJobID"},
			{"TabInID", client.SubmitOptions{ClientJobID: "a\tb", Input: 1}, "ClientJobID"},
			{"LongID", client.SubmitOptions{ClientJobID: strings.Repeat("x", 257), Input: 1}, "ClientJobID: 257 bytes"},
			{"BadUTF8ID", client.SubmitOptions{ClientJobID: "a\xffb", Input: 1}, "ClientJobID"},
			{"SpaceInHash", client.SubmitOptions{ClientJobID: "j", Input: 1, InputHash: "a b"}, "InputHash"},
			{"NilInput", client.SubmitOptions{ClientJobID: "j"}, "Input: required"},
			{"NullInput", client.SubmitOptions{ClientJobID: "j", Input: json.RawMessage(" null ")}, "Input: must not be JSON null"},
			{"InvalidRaw", client.SubmitOptions{ClientJobID: "j", Input: json.RawMessage(`{"a":`)}, "Input: not valid JSON"},
			{"Unmarshalable", client.SubmitOptions{ClientJobID: "j", Input: make(chan int)}, "Input"},
			{"TooLarge", client.SubmitOptions{ClientJobID: "j", Input: strings.Repeat("x", 100)}, "MaxInputBytes"},
			{"NegativeTimeout", client.SubmitOptions{ClientJobID: "j", Input: 1, Timeout: -time.Second}, "Timeout"},
		} {
			// Sequential: the check below needs every case done.
			t.Run(tc.name, func(t *testing.T) {
				_, err := b.client.Submit(ctx, tc.opts)
				require.ErrorContains(t, err, tc.field)
			})
		}
		// The fake worker's group creation made the (empty) submissions stream.
		n, err := b.rdb.XLen(ctx, "{"+b.ns+"}:submissions").Result()
		require.NoError(t, err)
		require.Zero(t, n, "no submission written for refused options")
		n, err = b.rdb.Exists(ctx, "{"+b.ns+"}:events").Result()
		require.NoError(t, err)
		require.Zero(t, n, "no event written for refused options")
	})

	t.Run("ExactlyMaxClientJobIDBytesIsAccepted", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		id := strings.Repeat("é", client.MaxClientJobIDBytes/2)
		require.Len(t, id, 256)
		res := b.submit(t, id)
		require.Equal(t, id, res.ClientJobID)
	})
}

func TestSubmitWaitAccepted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("ReturnsRunpodID", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		type result struct {
			res client.SubmitResult
			err error
		}
		done := make(chan result, 1)
		go func() {
			res, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "j", Input: 1, WaitAccepted: true})
			done <- result{res, err}
		}()
		recs := b.worker.admit(ctx, 1, streams.AdmitOpts{})
		b.worker.accept(ctx, recs["j"], "rp-42")
		select {
		case r := <-done:
			require.NoError(t, r.err)
			require.Equal(t, client.SubmitResult{ClientJobID: "j", RunpodJobID: "rp-42", State: workflow.StateQueued}, r.res)
		case <-time.After(10 * time.Second):
			t.Fatal("Submit with WaitAccepted did not return after the queued event")
		}
	})

	t.Run("AlreadyAcceptedReturnsAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "j")
		recs := b.worker.admit(ctx, 1, streams.AdmitOpts{})
		b.worker.accept(ctx, recs["j"], "rp-1")
		res, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "j", Input: 1, WaitAccepted: true})
		require.NoError(t, err)
		require.Equal(t, "rp-1", res.RunpodJobID)
		require.True(t, res.Existing)
	})

	t.Run("EndedBeforeAcceptance", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		done := make(chan error, 1)
		var res client.SubmitResult
		go func() {
			var err error
			res, err = b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "j", Input: 1, WaitAccepted: true})
			done <- err
		}()
		recs := b.worker.admit(ctx, 1, streams.AdmitOpts{})
		b.worker.finish(ctx, recs["j"], workflow.StateCanceled, "", "canceled before it was sent")
		select {
		case err := <-done:
			require.ErrorIs(t, err, client.ErrNotAccepted)
			require.Equal(t, workflow.StateCanceled, res.State)
			require.Empty(t, res.RunpodJobID)
		case <-time.After(10 * time.Second):
			t.Fatal("Submit with WaitAccepted did not return after the job ended")
		}
	})

	t.Run("ContextEndsTheWait", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := b.client.Submit(cctx, client.SubmitOptions{ClientJobID: "j", Input: 1, WaitAccepted: true})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		job, gerr := b.client.Get(ctx, "j")
		require.NoError(t, gerr)
		require.Equal(t, workflow.StateSubmitted, job.State, "the job was still submitted")
		require.False(t, errors.Is(err, client.ErrNotAccepted))
	})
}
