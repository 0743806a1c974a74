package runpodsim_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
)

// Serve a simulator on loopback, submit a job whose input scripts its
// behaviour, and read the result back. A ManualClock makes the timings exact.
func Example() {
	clock := runpodsim.NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{
		EndpointID: "myendpoint0001", APIKey: "key", Clock: clock, Seed: 1,
	})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()

	call := func(method, path, body string) map[string]any {
		req, _ := http.NewRequest(method, srv.URL+"/myendpoint0001/"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer key")
		resp, err := hc.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return m
	}

	job := call("POST", "run", `{"input":{"mock_delay":1500,"mock_return":{"image":"done.png"}}}`)
	id := job["id"].(string)
	fmt.Println(call("GET", "status/"+id, "")["status"])
	clock.Advance(1500 * time.Millisecond)
	done := call("GET", "status/"+id, "")
	fmt.Println(done["status"], done["executionTime"], done["output"])
	fmt.Println("jobs created:", srv.Sim.Stats().JobsCreated)
	// Output:
	// IN_PROGRESS
	// COMPLETED 1500 map[image:done.png]
	// jobs created: 1
}
