package activities_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Submit a job, poll it to completion and see how an expired job is
// reported, against the simulator on loopback (a manual clock makes it
// exact). Against Runpod, leave BaseURL empty.
func Example() {
	clock := runpodsim.NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{
		EndpointID: "myendpoint0001", APIKey: "rpa_example", Clock: clock, Seed: 1,
	})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	rp, err := activities.New(activities.Config{
		APIKey:     "rpa_example",
		EndpointID: "myendpoint0001",
		BaseURL:    srv.URL,
		OnBreakerStateChange: func(endpoint, from, to string) {
			fmt.Println("breaker", endpoint, from, "->", to)
		},
	})
	if err != nil {
		panic(err)
	}
	defer rp.CloseIdleConnections()
	ctx := context.Background()

	job, err := rp.Run(ctx, workflow.RunRequest{Input: json.RawMessage(`{"mock_delay":1500,"mock_return":"done"}`)})
	if err != nil {
		panic(err)
	}
	clock.Advance(1500 * time.Millisecond)
	st, err := rp.Status(ctx, job.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println(st.Status, st.ExecutionTime, string(st.Output), st.Status.Terminal())

	clock.Advance(31 * time.Minute) // Runpod keeps results 30 minutes
	_, err = rp.Status(ctx, job.ID)
	fmt.Println(errors.Is(err, workflow.ErrRunpodJobNotFound), workflow.IsTransient(err))
	fmt.Println(rp.BreakerState())
	// Output:
	// COMPLETED 1500 "done" true
	// true false
	// closed
}
