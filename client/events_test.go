package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// collect reads every event selected by opts up to the end of the stream.
func collect(t *testing.T, c *client.Client, opts client.EventsOptions) []client.Event {
	t.Helper()
	opts.StopAtEnd = true
	var evs []client.Event
	for ev, err := range c.Events(context.Background(), opts) {
		require.NoError(t, err)
		evs = append(evs, ev)
	}
	return evs
}

func TestEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("FromStartReplaysAJobsLife", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "j")
		recs := b.worker.admit(ctx, 1, streams.AdmitOpts{})
		b.worker.accept(ctx, recs["j"], "rp-1")
		b.worker.progress(ctx, recs["j"], workflow.StateInProgress)
		rec := recs["j"]
		rec.RunpodID = "rp-1"
		b.worker.finish(ctx, rec, workflow.StateCompleted, `{"n":1}`, "")

		evs := collect(t, b.client, client.EventsOptions{From: client.FromStart})
		require.Len(t, evs, 4)
		var types []client.EventType
		var states []workflow.State
		for _, ev := range evs {
			types = append(types, ev.Type)
			states = append(states, ev.State)
			require.Equal(t, "j", ev.JobID)
			require.NotEmpty(t, ev.ID)
			require.WithinDuration(t, time.Now(), ev.Time, time.Minute)
		}
		require.Equal(t, []client.EventType{client.EventSubmitted, client.EventQueued, client.EventProgress, client.EventCompleted}, types)
		require.Equal(t, []workflow.State{workflow.StateSubmitted, workflow.StateQueued, workflow.StateInProgress, workflow.StateCompleted}, states)
		require.Equal(t, "rp-1", evs[1].RunpodID)
		require.JSONEq(t, `{"n":1}`, string(evs[3].Output))

		// Resuming after an id delivers only what follows it.
		rest := collect(t, b.client, client.EventsOptions{From: evs[1].ID})
		require.Equal(t, evs[2:], rest)
	})

	t.Run("JobFilter", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		for i := range 5 {
			b.submit(t, fmt.Sprint("j", i))
		}
		_, err := b.client.Cancel(ctx, "j3")
		require.NoError(t, err)
		evs := collect(t, b.client, client.EventsOptions{From: client.FromStart, JobID: "j3"})
		require.Len(t, evs, 2)
		require.Equal(t, client.EventSubmitted, evs[0].Type)
		require.Equal(t, client.EventCancelRequested, evs[1].Type)
	})

	t.Run("FromNowSkipsThePast", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "old")
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		got := make(chan client.Event, 100)
		errc := make(chan error, 1)
		go func() {
			errc <- b.client.Subscribe(cctx, client.EventsOptions{}, func(ev client.Event) error {
				got <- ev
				return nil
			})
		}()
		// The subscription captures its position asynchronously: submit new
		// jobs until one shows up, then check the old one never did.
		var first client.Event
		deadline := time.After(10 * time.Second)
	loop:
		for i := 0; ; i++ {
			b.submit(t, fmt.Sprint("new", i))
			select {
			case first = <-got:
				break loop
			case <-time.After(20 * time.Millisecond):
			case <-deadline:
				t.Fatal("the subscription delivered nothing")
			}
		}
		require.Contains(t, first.JobID, "new")
		cancel()
		err := <-errc
		require.ErrorIs(t, err, context.Canceled)
	})

	t.Run("FollowDeliversNewEvents", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "a")
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		next, stop := iterPull(b.client.Events(cctx, client.EventsOptions{From: client.FromStart}))
		defer stop()
		ev, err := next()
		require.NoError(t, err)
		require.Equal(t, "a", ev.JobID)
		b.submit(t, "b")
		ev, err = next()
		require.NoError(t, err)
		require.Equal(t, "b", ev.JobID, "a later event arrives on the same subscription")
	})

	t.Run("HandlerErrorStopsSubscribe", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "a")
		b.submit(t, "b")
		boom := errors.New("boom")
		calls := 0
		err := b.client.Subscribe(ctx, client.EventsOptions{From: client.FromStart}, func(client.Event) error {
			calls++
			return boom
		})
		require.ErrorIs(t, err, boom)
		require.Equal(t, 1, calls)
	})

	t.Run("BadOptionsNameTheField", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		err := b.client.Subscribe(ctx, client.EventsOptions{From: "yesterday"}, func(client.Event) error { return nil })
		require.ErrorContains(t, err, "From")
		err = b.client.Subscribe(ctx, client.EventsOptions{JobID: "a b"}, func(client.Event) error { return nil })
		require.ErrorContains(t, err, "JobID")
	})

	t.Run("UndecodableEntryHasNoType", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "{" + b.ns + "}:events",
			Values: []any{"type", "completed", "job_id", "x", "payload", "not msgpack"}}).Err())
		b.submit(t, "after")
		evs := collect(t, b.client, client.EventsOptions{From: client.FromStart})
		require.Len(t, evs, 2, "one bad entry does not stop the stream")
		require.Empty(t, evs[0].Type)
		require.NotEmpty(t, evs[0].ID)
		require.Equal(t, client.EventSubmitted, evs[1].Type)
	})

	t.Run("JSONUsesMilliseconds", func(t *testing.T) {
		t.Parallel()
		ev := client.Event{ID: "1-0", Type: client.EventCompleted, JobID: "j", Delay: 1500 * time.Millisecond, Execution: 2 * time.Second}
		b, err := json.Marshal(ev)
		require.NoError(t, err)
		require.JSONEq(t, `{"id":"1-0","type":"completed","clientJobId":"j","delayMs":1500,"executionMs":2000}`, string(b))
	})
}
