package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestSubscriptionPositionFixedAtCreation: a FromNow subscription created
// before Submit delivers the job's submitted event, however late its reading
// starts. The position used to be taken at the first read, so a subscriber
// started in a goroutine missed the event most of the time.
func TestSubscriptionPositionFixedAtCreation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, client.Config{})
	b.submit(t, "before") // older than every subscription below

	for i := range 20 {
		id := fmt.Sprint("j", i)
		sub, err := b.client.NewSubscription(ctx, client.EventsOptions{From: client.FromNow, StopAtEnd: true})
		require.NoError(t, err)
		seq := b.client.Events(ctx, client.EventsOptions{From: client.FromNow, StopAtEnd: true})
		b.submit(t, id) // before either is read

		for name, events := range map[string]func() []client.Event{
			"NewSubscription": func() []client.Event { return drain(t, sub.Events(ctx)) },
			"Events":          func() []client.Event { return drain(t, seq) },
		} {
			evs := events()
			require.Len(t, evs, 1, "%s, try %d", name, i)
			require.Equal(t, id, evs[0].JobID, name)
			require.Equal(t, client.EventSubmitted, evs[0].Type, name)
		}
		require.NotEqual(t, "0-0", sub.Position(), "Position advances to the last event read")
	}
}

func drain(t *testing.T, seq func(func(client.Event, error) bool)) []client.Event {
	t.Helper()
	var evs []client.Event
	for ev, err := range seq {
		require.NoError(t, err)
		evs = append(evs, ev)
	}
	return evs
}

// TestClientPosition: Position then Submit, then a subscription From that
// position, sees exactly the job submitted after it.
func TestClientPosition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, client.Config{})
	b.submit(t, "old")
	pos, err := b.client.Position(ctx)
	require.NoError(t, err)
	b.submit(t, "new")
	evs := collect(t, b.client, client.EventsOptions{From: pos})
	require.Len(t, evs, 1)
	require.Equal(t, "new", evs[0].JobID)
}

// TestSubscriptionSurvivesRedisRestart: a live subscription keeps going
// through a Redis restart (SIGKILL, AOF always) and delivers every event
// exactly once, in order: before, across and after the outage.
func TestSubscriptionSurvivesRedisRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	srv, err := redistest.StartWith(redistest.Options{Dir: dir, AppendOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	c, err := client.New(rdb, client.Config{Namespace: "subrestart"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	sub, err := c.NewSubscription(ctx, client.EventsOptions{From: client.FromNow})
	require.NoError(t, err)
	got := make(chan client.Event, 100)
	done := make(chan error, 1)
	go func() {
		done <- sub.Run(ctx, func(ev client.Event) error {
			got <- ev
			return nil
		})
	}()
	submit := func(id string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := c.Submit(ctx, client.SubmitOptions{ClientJobID: id, Input: map[string]any{}})
			if err == nil {
				return
			}
			require.True(t, time.Now().Before(deadline), "submit %s: %v", id, err)
			time.Sleep(50 * time.Millisecond)
		}
	}
	next := func() client.Event {
		t.Helper()
		select {
		case ev := <-got:
			return ev
		case err := <-done:
			t.Fatalf("subscription ended: %v", err)
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return client.Event{}
	}

	submit("a")
	require.Equal(t, "a", next().JobID)

	srv.Kill()
	srv2, err := redistest.StartWith(redistest.Options{Port: srv.Port, Dir: dir, AppendOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { srv2.Stop() })

	submit("b")
	submit("c")
	require.Equal(t, "b", next().JobID)
	require.Equal(t, "c", next().JobID)
	select {
	case ev := <-got:
		t.Fatalf("unexpected extra event %+v", ev)
	default:
	}
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

// TestHandlers: the typed callbacks of the seed's on('...') see the events
// of their kind, terminal ones as Results.
func TestHandlers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, client.Config{})
	sub, err := b.client.NewSubscription(ctx, client.EventsOptions{From: client.FromNow, StopAtEnd: true})
	require.NoError(t, err)

	b.submit(t, "ok")
	b.submit(t, "bad")
	recs := b.worker.admit(ctx, 2, streams.AdmitOpts{})
	b.worker.accept(ctx, recs["ok"], "rp-ok")
	rec := recs["ok"]
	rec.RunpodID = "rp-ok"
	b.worker.finish(ctx, rec, workflow.StateCompleted, `{"n":1}`, "")
	b.worker.finish(ctx, recs["bad"], workflow.StateFailed, "", "boom")

	var submitted, queued []string
	var completed, failed []client.Result
	require.NoError(t, sub.Handle(ctx, client.Handlers{
		Submitted: func(ev client.Event) { submitted = append(submitted, ev.JobID) },
		Queued:    func(ev client.Event) { queued = append(queued, ev.RunpodID) },
		Completed: func(r client.Result) { completed = append(completed, r) },
		Failed:    func(r client.Result) { failed = append(failed, r) },
	}))
	require.Equal(t, []string{"ok", "bad"}, submitted)
	require.Equal(t, []string{"rp-ok"}, queued)
	require.Len(t, completed, 1)
	require.Equal(t, "ok", completed[0].ClientJobID)
	require.JSONEq(t, `{"n":1}`, string(completed[0].Output))
	require.Len(t, failed, 1)
	require.Equal(t, workflow.StateFailed, failed[0].Status)
	require.Equal(t, "boom", failed[0].Error)
}
