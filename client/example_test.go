package client_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Submit a job and wait for its outcome. A stand-in worker (echoWorker,
// below) completes every job with its input as output; in production the
// worker pool of cmd/worker runs the jobs on Runpod.
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
	defer rdb.Close()
	const ns = "example_submit"
	defer redistest.DeleteNamespace(rdb, ns)
	defer echoWorker(rdb, ns)()

	c, err := client.New(rdb, client.Config{Namespace: ns})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	res, err := c.Submit(ctx, client.SubmitOptions{
		ClientJobID: "job-1",
		Input:       map[string]string{"prompt": "a cat in space"},
	})
	if err != nil {
		panic(err)
	}
	out, err := c.AwaitResult(ctx, res.ClientJobID)
	if err != nil {
		panic(err)
	}
	fmt.Println(out.Status, string(out.Output))

	// Submitting the same id again is idempotent.
	again, err := c.Submit(ctx, client.SubmitOptions{ClientJobID: "job-1", Input: "ignored"})
	if err != nil {
		panic(err)
	}
	fmt.Println(again.Existing, again.State)
	// Output:
	// COMPLETED {"prompt":"a cat in space"}
	// true COMPLETED
}

// Audit the events stream: every job's history is checked.
func ExampleClient_Audit() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
	defer rdb.Close()
	const ns = "example_audit"
	defer redistest.DeleteNamespace(rdb, ns)
	stop := echoWorker(rdb, ns)

	c, err := client.New(rdb, client.Config{Namespace: ns})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := c.Submit(ctx, client.SubmitOptions{ClientJobID: id, Input: id}); err != nil {
			panic(err)
		}
		if _, err := c.AwaitResult(ctx, id); err != nil {
			panic(err)
		}
	}
	stop()

	rep, err := c.Audit(ctx, client.AuditOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Printf("events %d, jobs %d, completed %d, in flight %d, violations %d\n",
		rep.Events, rep.Jobs, rep.ByState[workflow.StateCompleted], len(rep.InFlight), len(rep.Violations))
	// Output:
	// events 6, jobs 3, completed 3, in flight 0, violations 0
}

// echoWorker stands in for a worker pool: it admits every submission of
// namespace ns and completes it with its input as output, through package
// streams as a worker does. The returned function stops it.
func echoWorker(rdb redis.UniversalClient, ns string) (stop func()) {
	store, err := streams.New(rdb, streams.Config{Namespace: ns})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := store.EnsureGroup(ctx); err != nil {
		panic(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			msgs, err := store.Read(ctx, "echo", 100, 50*time.Millisecond)
			if err != nil || len(msgs) == 0 {
				continue
			}
			reqs := make([]streams.AdmitRequest, len(msgs))
			for i, m := range msgs {
				reqs[i] = streams.NewAdmitRequest(m, 0)
			}
			res, err := store.Admit(ctx, reqs, streams.AdmitOpts{Consumer: "echo"})
			if err != nil {
				continue
			}
			var outs []streams.Outcome
			for i, r := range res {
				if r.Status == streams.Admitted {
					outs = append(outs, streams.Outcome{JobID: r.Record.JobID, Entry: r.Record.Entry,
						Owner: r.Record.Owner, Epoch: r.Record.Epoch, State: string(workflow.StateCompleted), Output: reqs[i].Sub.Input})
				}
			}
			_, _ = store.Finalize(ctx, outs, streams.FinalizeOpts{ResultTTL: time.Hour})
		}
	}()
	return func() { cancel(); wg.Wait() }
}
