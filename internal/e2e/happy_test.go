package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestHappyPath1000Jobs: 1,000 jobs through 3 workers all end COMPLETED with
// one terminal event each and their outputs intact, byte for byte.
//
// It fails if a job is lost (waitTerminal times out), ends otherwise than
// COMPLETED, gets a second terminal event or a second Runpod job (audit,
// checkRunpodSide strict), or if an output is altered anywhere on its way
// (simulator → activities client → workflow → finalize script → record and
// event): half the jobs return a per-job mock_return object, the other half
// echo their own per-job input, and both are compared with bytes.Equal.
func TestHappyPath1000Jobs(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := newEnv(t, runpodsim.Config{GPUWorkers: 128})
	const n = 1000
	ids := jobIDs("happy", n)
	want := make(map[string][]byte, n)
	for i, id := range ids {
		var salt [8]byte
		_, _ = rand.Read(salt[:])
		s := hex.EncodeToString(salt[:])
		var in json.RawMessage
		if i%2 == 0 {
			ret := json.RawMessage(fmt.Sprintf(`{"id":%q,"n":%d,"salt":%q,"nested":{"a":[1,2.5,"\u00e9"]}}`, id, i, s))
			in = jobInput(id, map[string]any{"mock_delay": i % 20, "mock_return": ret})
			want[id] = ret
		} else {
			// No mock_return: the simulator echoes the input itself.
			in = jobInput(id, map[string]any{"mock_delay": i % 20, "salt": s})
			want[id] = in
		}
		e.submit(id, in, 0)
	}
	t.Logf("submitted %d jobs in %s", n, time.Since(start))

	rp := e.runpod()
	ws := make([]*inproc, 3)
	for i := range ws {
		cfg := e.workerConfig(fmt.Sprintf("happy-w%d", i), rp)
		cfg.Concurrency = 64
		cfg.MaxInFlight = 200 // so the work is spread over the three
		// Nothing crashes here, and the test counts /run attempts exactly:
		// a lease short enough to lapse on a loaded machine would let a
		// peer take a job inside its /run window and resubmit it.
		cfg.MinIdle, cfg.HeartbeatInterval = 30*time.Second, time.Second
		ws[i] = e.startWorker(cfg)
	}
	recs := e.waitTerminal(ids, 90*time.Second)
	t.Logf("%d jobs terminal after %s", n, time.Since(start))

	by := e.audit(ids)
	for _, id := range ids {
		rec := recs[id]
		require.Equal(t, string(workflow.StateCompleted), rec.State, "job %s: %s", id, rec.Error)
		require.True(t, bytes.Equal(want[id], rec.Output), "job %s: output\n got %s\nwant %s", id, rec.Output, want[id])
		evs := by[id]
		last := evs[len(evs)-1]
		require.Equal(t, streams.EventCompleted, last.Type)
		require.True(t, bytes.Equal(want[id], last.Payload.Output), "job %s: terminal event output %s", id, last.Payload.Output)
		require.Equal(t, 1, rec.Attempts, "job %s: /run attempts", id)
	}
	e.checkRunpodSide(recs, true)
	require.Len(t, e.srv.Sim.Jobs(), n, "one Runpod job per job")

	var total uint64
	busy := 0
	for _, w := range ws {
		w.stop(t)
		s := w.w.Stats()
		require.Zero(t, s.InFlight)
		total += s.Finalized[workflow.StateCompleted]
		if s.Finalized[workflow.StateCompleted] > 0 {
			busy++
		}
	}
	require.Equal(t, uint64(n), total, "outcomes written across the workers")
	require.Equal(t, 3, busy, "every worker finished jobs")
	t.Logf("happy path: %d jobs in %s", n, time.Since(start))
}
