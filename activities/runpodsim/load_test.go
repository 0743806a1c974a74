package runpodsim

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Thousands of jobs through 64 workers, as the worker's integration tests
// will push them: every job completes once, with its own output, and no
// more than GPUWorkers run at a time.
func TestManyJobs(t *testing.T) {
	t.Parallel()
	const n, workers = 1000, 64
	b := setup(t, func(c *Config) { c.GPUWorkers = workers })
	rng := rand.New(rand.NewSource(3))
	ids := make([]string, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		delay := rng.Intn(51)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := b.raw(t, "POST", b.base+"/run", map[string]any{"input": map[string]any{"n": i, "mock_delay": delay}}, http.Header{"Authorization": {testKey}})
			if r.code != 200 {
				errs <- fmt.Errorf("run %d: %d %s", i, r.code, r.body)
				return
			}
			var m map[string]string
			if err := json.Unmarshal(r.body, &m); err != nil {
				errs <- err
				return
			}
			ids[i] = m["id"]
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return b.sim.Stats().JobsCompleted == n }, waitMax, 5*time.Millisecond)

	st := b.sim.Stats()
	require.LessOrEqual(t, st.PeakRunning, workers, "never more executions than workers")
	require.EqualValues(t, n, st.JobsCreated)
	require.EqualValues(t, n, st.Executions, "each job ran exactly once")
	for i, id := range ids {
		m := b.status(t, id)
		require.Equal(t, "COMPLETED", m["status"])
		require.EqualValues(t, i, m["output"].(map[string]any)["n"])
	}
	jobs := b.sim.Jobs()
	require.Len(t, jobs, n)
	seen := map[string]bool{}
	for _, j := range jobs {
		require.False(t, seen[string(j.Input)], "input %s submitted twice", j.Input)
		seen[string(j.Input)] = true
	}

	// Jobs that never end fill exactly the workers; the rest wait.
	for i := range 100 {
		b.run(t, map[string]any{"forever": i, "mock_delay": 1e12})
	}
	st = b.sim.Stats()
	require.Equal(t, workers, st.Running)
	require.Equal(t, 36, st.Queued)
	require.Equal(t, workers, st.PeakRunning)
}
