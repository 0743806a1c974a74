package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/worker"
)

// exampleDeployment stands in for a real deployment in the example: the
// tests' Redis server, a fresh namespace, and the Runpod simulator in place
// of a Runpod endpoint.
func exampleDeployment() (redisAddr, ns, apiKey, endpointID, runpodBaseURL string, stop func()) {
	sim, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{EndpointID: "my-endpoint", APIKey: "my-key"})
	if err != nil {
		panic(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	ns = "example_" + hex.EncodeToString(b[:])
	return redistest.Addr(), ns, "my-key", "my-endpoint", sim.URL, func() {
		rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
		redistest.DeleteNamespace(rdb, ns)
		_ = rdb.Close()
		_ = sim.Close()
	}
}

// A producer and a worker in one program. The lines between the README
// markers are the README's "Go example" (TestReadmeExample keeps them equal).
func Example_clientAndWorker() {
	redisAddr, ns, apiKey, endpointID, runpodBaseURL, stop := exampleDeployment()
	defer stop()

	// README-BEGIN
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close() // the caller owns the Redis client; the libraries never close it

	// A worker: the Runpod client (retries, circuit breaker, rate limits) and the worker loop.
	runpod, err := activities.New(activities.Config{APIKey: apiKey, EndpointID: endpointID, BaseURL: runpodBaseURL})
	if err != nil {
		panic(err)
	}
	w, err := worker.New(rdb, worker.Config{Runpod: runpod, Namespace: ns})
	if err != nil {
		panic(err)
	}
	workerCtx, stopWorker := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(workerCtx) }()

	// A producer: submit a job (idempotent by its id) and wait for its one outcome.
	c, err := client.New(rdb, client.Config{Namespace: ns})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if _, err := c.Submit(ctx, client.SubmitOptions{
		ClientJobID: "cat-1",
		Input:       map[string]any{"prompt": "a cat in space"},
	}); err != nil {
		panic(err)
	}
	res, err := c.AwaitResult(ctx, "cat-1")
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Status, string(res.Output))

	stopWorker() // graceful: unfinished jobs are handed to other workers
	if err := <-stopped; err != nil {
		panic(err)
	}
	// README-END

	// Output:
	// COMPLETED {"prompt":"a cat in space"}
}
