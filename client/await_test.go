package client_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// awaitAsync runs AwaitResult in a goroutine and returns its outcome channel.
func awaitAsync(ctx context.Context, c *client.Client, id string) <-chan awaited {
	ch := make(chan awaited, 1)
	go func() {
		r, err := c.AwaitResult(ctx, id)
		ch <- awaited{r, err}
	}()
	return ch
}

type awaited struct {
	r   client.Result
	err error
}

func receive(t *testing.T, ch <-chan awaited) awaited {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("AwaitResult did not return")
		return awaited{}
	}
}

// waitWaiters waits until c's reader serves n waiters.
func waitWaiters(t *testing.T, c *client.Client, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return client.Waiters(c) == n }, 10*time.Second, time.Millisecond,
		"want %d waiters registered", n)
}

func TestAwaitResult(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("AlreadyTerminalReturnsAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "j")
		recs := b.worker.admit(ctx, 1, streams.AdmitOpts{})
		b.worker.finish(ctx, recs["j"], workflow.StateFailed, "", "handler raised ValueError")
		r, err := b.client.AwaitResult(ctx, "j")
		require.NoError(t, err)
		require.Equal(t, client.Result{ClientJobID: "j", Status: workflow.StateFailed, Error: "handler raised ValueError"}, r)
		require.Zero(t, client.Waiters(b.client))
	})

	t.Run("WaitsForTheTerminalEvent", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "j")
		ch := awaitAsync(ctx, b.client, "j")
		waitWaiters(t, b.client, 1)

		recs := b.worker.admit(ctx, 1, streams.AdmitOpts{})
		rec := recs["j"]
		b.worker.accept(ctx, rec, "rp-1")
		b.worker.progress(ctx, rec, workflow.StateInProgress)
		select {
		case a := <-ch:
			t.Fatalf("AwaitResult returned before the job ended: %+v", a)
		default:
		}
		rec.RunpodID = "rp-1"
		b.worker.finish(ctx, rec, workflow.StateCompleted, `{"ok":true}`, "")

		a := receive(t, ch)
		require.NoError(t, a.err)
		require.Equal(t, workflow.StateCompleted, a.r.Status)
		require.Equal(t, "rp-1", a.r.RunpodID)
		require.JSONEq(t, `{"ok":true}`, string(a.r.Output))
		require.Eventually(t, func() bool { return client.Waiters(b.client) == 0 }, 5*time.Second, time.Millisecond)
	})

	t.Run("EveryTerminalState", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		states := []workflow.State{workflow.StateCompleted, workflow.StateFailed, workflow.StateTimedOut, workflow.StateCanceled}
		chans := map[workflow.State]<-chan awaited{}
		for _, st := range states {
			b.submit(t, string(st))
			chans[st] = awaitAsync(ctx, b.client, string(st))
		}
		waitWaiters(t, b.client, len(states))
		recs := b.worker.admit(ctx, len(states), streams.AdmitOpts{})
		for _, st := range states {
			b.worker.finish(ctx, recs[string(st)], st, `"out"`, "why "+string(st))
		}
		for _, st := range states {
			a := receive(t, chans[st])
			require.NoError(t, a.err)
			require.Equal(t, st, a.r.Status)
			require.Equal(t, "why "+string(st), a.r.Error)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		_, err := b.client.AwaitResult(ctx, "nope")
		require.ErrorIs(t, err, workflow.ErrJobNotFound)
		require.Zero(t, client.Waiters(b.client), "the waiter is dropped")
	})

	t.Run("ContextEndsTheWait", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{})
		b.submit(t, "j")
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := b.client.AwaitResult(cctx, "j")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, `"j"`)
		require.Zero(t, client.Waiters(b.client))
	})

	t.Run("CloseEndsWaits", func(t *testing.T) {
		t.Parallel()
		rdb, ns := redistest.New(t)
		c, err := client.New(rdb, client.Config{Namespace: ns})
		require.NoError(t, err)
		_, err = c.Submit(ctx, client.SubmitOptions{ClientJobID: "j", Input: 1})
		require.NoError(t, err)
		ch := awaitAsync(ctx, c, "j")
		waitWaiters(t, c, 1)
		require.NoError(t, c.Close())
		a := receive(t, ch)
		require.ErrorIs(t, a.err, client.ErrClosed)
		_, err = c.AwaitResult(ctx, "j")
		require.ErrorIs(t, err, client.ErrClosed)
	})

	t.Run("FollowsAnAlias", func(t *testing.T) {
		t.Parallel()
		b := setup(t, client.Config{Dedupe: true})
		_, err := b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "holder", Input: 1, InputHash: "h"})
		require.NoError(t, err)
		// A raw producer's submission with the same input hash.
		err = b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "{" + b.ns + "}:submissions",
			Values: []any{"job_id", "raw", "input", "1", "input_hash", "h"}}).Err()
		require.NoError(t, err)
		recs := b.worker.admit(ctx, 2, streams.AdmitOpts{Dedupe: true})

		job, err := b.client.Get(ctx, "raw")
		require.NoError(t, err)
		require.Equal(t, "holder", job.AliasOf, "Get exposes the alias")

		ch := awaitAsync(ctx, b.client, "raw")
		waitWaiters(t, b.client, 1)
		b.worker.finish(ctx, recs["holder"], workflow.StateCompleted, `42`, "")
		a := receive(t, ch)
		require.NoError(t, a.err)
		require.Equal(t, client.Result{ClientJobID: "holder", Status: workflow.StateCompleted, Output: []byte(`42`)}, a.r)
	})

	t.Run("OutcomeRacingTheRegistration", func(t *testing.T) {
		t.Parallel()
		// Finish each job at the same moment its waiter registers and reads
		// the record: whichever wins, the waiter must see the outcome.
		b := setup(t, client.Config{})
		const n = 200
		for i := range n {
			b.submit(t, fmt.Sprint("j", i))
		}
		recs := b.worker.admit(ctx, n, streams.AdmitOpts{})
		var wg sync.WaitGroup
		results := make([]awaited, n)
		for i := range n {
			id := fmt.Sprint("j", i)
			start := make(chan struct{})
			wg.Add(2)
			go func() {
				defer wg.Done()
				<-start
				r, err := b.client.AwaitResult(ctx, id)
				results[i] = awaited{r, err}
			}()
			go func() {
				defer wg.Done()
				<-start
				b.worker.finish(ctx, recs[id], workflow.StateCompleted, fmt.Sprint(i), "")
			}()
			close(start)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("some AwaitResult missed its outcome")
		}
		for i, a := range results {
			require.NoError(t, a.err)
			require.Equal(t, workflow.StateCompleted, a.r.Status)
			require.Equal(t, fmt.Sprint(i), string(a.r.Output))
		}
	})
}

// TestAwaitResultManyWaitersOneReader: ten thousand concurrent waiters are
// served by one reader goroutine.
func TestAwaitResultManyWaitersOneReader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, client.Config{})
	const jobs, perJob = 1000, 10
	for i := range jobs {
		b.submit(t, fmt.Sprint("j", i))
	}
	recs := b.worker.admit(ctx, jobs, streams.AdmitOpts{})

	results := make([]awaited, jobs*perJob)
	var wg sync.WaitGroup
	for i := range jobs * perJob {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := b.client.AwaitResult(ctx, fmt.Sprint("j", i/perJob))
			results[i] = awaited{r, err}
		}()
	}
	waitWaiters(t, b.client, jobs*perJob)

	batch := make([]streams.Record, 0, 100)
	for i := range jobs {
		batch = append(batch, recs[fmt.Sprint("j", i)])
		if len(batch) == cap(batch) {
			b.worker.finishMany(ctx, batch, workflow.StateCompleted, `"done"`, "")
			batch = batch[:0]
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("waiters left: %d", client.Waiters(b.client))
	}
	for i, a := range results {
		require.NoError(t, a.err, "waiter %d", i)
		require.Equal(t, fmt.Sprint("j", i/perJob), a.r.ClientJobID)
		require.Equal(t, workflow.StateCompleted, a.r.Status)
		require.Equal(t, `"done"`, string(a.r.Output))
	}
	require.EqualValues(t, 1, client.ReaderStarts(b.client), "one shared reader served every waiter")
}
