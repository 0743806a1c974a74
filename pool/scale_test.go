package pool

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/internal/syncbuf"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// The pool at scale (issue 8, "Done when"): Runpod's proportions, real
// cmd/worker processes sharing one Redis.
const (
	scaleWorkers  = 4 // cmd/worker processes
	scaleProbe    = 10 * time.Second
	scaleOutage   = 30 * time.Second
	scaleEndpoint = "ep-scale"
	scaleKey      = "rpa_SCALE_SECRET_KEY"
)

// scaleRun is one size of the run.
type scaleRun struct {
	jobs, gpus, depth int
	outageFrom        int            // jobs completed on Runpod when the outage starts
	limit             map[string]int // the simulator's limit per 10 s, per budgeted operation
	within            time.Duration  // for every job to end
}

// scaleTenth is the run of `go test`: Runpod's limits cut tenfold, and
// 500 jobs: the /run limit alone paces them for 50 s (5 windows at the
// limit, the backlog in the stream all along), which proves what 1,000 did
// in half the time.
var scaleTenth = scaleRun{jobs: 500, gpus: 100, depth: 20, outageFrom: 150, within: 10 * time.Minute,
	limit: map[string]int{runpodsim.OpRun: 100, runpodsim.OpStatus: 200, runpodsim.OpCancel: 10}}

// scaleFull is Runpod's real limits (POOL_SCALE=full, docs/performance.md):
// twenty times the jobs, ten times the GPU workers and the depth.
var scaleFull = scaleRun{jobs: 20000, gpus: 1000, depth: 200, outageFrom: 6000, within: 40 * time.Minute,
	limit: map[string]int{runpodsim.OpRun: 1000, runpodsim.OpStatus: 2000, runpodsim.OpCancel: 100}}

// request is one request the simulator received, on its clock (the wall
// clock: the simulator runs unscaled, because the worker processes pace
// themselves on theirs).
type request struct {
	at    time.Time
	op    string
	runID string // Runpod job id for /status and /cancel
	code  int
}

// requestLog wraps the simulator and records every API request.
type requestLog struct {
	sim  http.Handler
	mu   sync.Mutex
	reqs []request
}

func (l *requestLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/v2/") {
		l.sim.ServeHTTP(w, r)
		return
	}
	at := time.Now()
	rec := &codeRecorder{ResponseWriter: w}
	l.sim.ServeHTTP(rec, r)
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v2/"), "/")
	req := request{at: at, code: rec.code}
	if len(parts) >= 2 {
		req.op = parts[1]
	}
	if len(parts) >= 3 {
		req.runID = parts[2]
	}
	l.mu.Lock()
	l.reqs = append(l.reqs, req)
	l.mu.Unlock()
}

func (l *requestLog) snapshot() []request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs)
}

type codeRecorder struct {
	http.ResponseWriter
	code int
}

func (c *codeRecorder) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *codeRecorder) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

// maxInWindow is the most requests of reqs (sorted by time) in any sliding
// window of length w.
func maxInWindow(ts []time.Time, w time.Duration) int {
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// buildWorker builds cmd/worker once for the test.
func buildWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "worker")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/yourscope/runpod-orchestrator/cmd/worker").CombinedOutput()
	require.NoError(t, err, "go build cmd/worker: %s", out)
	return bin
}

// TestPoolAtScale is the scaled run: the simulator enforces
// Runpod's limits cut tenfold (/run 100, /status 200, /cancel 10 per 10 s)
// with 100 GPU workers; four cmd/worker processes share one Redis with the
// pool budget and breaker and a pool-wide admission depth of 20; 500 jobs
// of 5–20 s are submitted at once. In the middle the simulator refuses every
// call for 30 s (503). From the simulator's own request log:
//
//   - every operation stays within its limit in every sliding 10 s window,
//     and no 429 is answered after the first window;
//   - every job completes (no result expired unseen, no /status 404) and
//     each is polled a bounded number of times;
//   - Runpod's queue peaks near the depth while the backlog waits in the
//     stream as SUBMITTED;
//   - during the outage, once the circuit is open, the pool sends one
//     probe per probe interval (not one per worker), and after it the
//     first probe succeeds and work resumes within one probe interval.
//
// No assertion depends on the machine's speed except the resume bound,
// measured on the simulator's clock with a generous margin.
//
// POOL_SCALE=full runs it at Runpod's real limits instead (20,000 jobs,
// 1,000 GPU workers, depth 200): the figures of docs/performance.md.
func TestPoolAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("a few minutes with four worker processes")
	}
	run := scaleTenth
	if os.Getenv("POOL_SCALE") == "full" {
		run = scaleFull
	}
	bin := buildWorker(t)
	rdb, ns := redistest.New(t)
	store, err := streams.New(rdb, streams.Config{Namespace: ns})
	require.NoError(t, err)

	sim, err := runpodsim.New(runpodsim.Config{
		EndpointID: scaleEndpoint, APIKey: scaleKey, GPUWorkers: run.gpus,
		RateLimits: run.limit, RateLimitRetryAfter: "auto", Seed: 8,
	})
	require.NoError(t, err)
	t.Cleanup(sim.Close)
	rlog := &requestLog{sim: sim}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: rlog, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	simURL := "http://" + ln.Addr().String() + "/v2"

	// The jobs go in first: the backlog is there before any worker reads.
	c, err := client.New(rdb, client.Config{Namespace: ns})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	rnd := rand.New(rand.NewPCG(8, 8))
	ids := make([]string, run.jobs)
	ctx := context.Background()
	for i := range ids {
		ids[i] = fmt.Sprintf("scale-%04d", i)
		delay := 5000 + rnd.IntN(15001)
		_, err := c.Submit(ctx, client.SubmitOptions{ClientJobID: ids[i],
			Input: map[string]any{"mock_delay": delay, "mock_return": map[string]any{"i": i}}})
		require.NoError(t, err)
	}

	logs := make([]*syncbuf.Buffer, scaleWorkers)
	procs := make([]*exec.Cmd, scaleWorkers)
	for i := range scaleWorkers {
		logs[i] = &syncbuf.Buffer{}
		cmd := exec.Command(bin,
			"--redis-url", "redis://"+rdb.Options().Addr+"/0",
			"--namespace", ns,
			"--instance-id", fmt.Sprintf("scale-w%d", i),
			"--runpod-endpoint-id", scaleEndpoint,
			"--runpod-base-url", simURL,
			"--runpod-limit-run", fmt.Sprint(run.limit[runpodsim.OpRun]),
			"--runpod-limit-status", fmt.Sprint(run.limit[runpodsim.OpStatus]),
			"--runpod-limit-cancel", fmt.Sprint(run.limit[runpodsim.OpCancel]),
			"--runpod-breaker-open-timeout", scaleProbe.String(),
			"--admission-depth", fmt.Sprint(run.depth),
			"--concurrency", "16",
			"--job-timeout", "0",
			"--http-addr", "",
			"--log-level", "warn",
		)
		cmd.Env = append(os.Environ(), "RUNPOD_API_KEY="+scaleKey)
		cmd.Stdout, cmd.Stderr = logs[i], logs[i]
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		require.NoError(t, cmd.Start())
		procs[i] = cmd
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		})
	}
	dumpLogs := func() {
		for i, l := range logs {
			t.Logf("worker %d log (tail):\n%s", i, tail(l.String(), 3000))
		}
	}

	// Sample the stream's backlog and Runpod's queue until every job ended.
	type sample struct {
		at              time.Time
		backlog, queued int
	}
	var samples []sample
	var outageStart, outageEnd time.Time
	lastBacklogged := ids[len(ids)-1]
	var heldRecord streams.Record
	// A job's entry is deleted when its outcome is written: an empty
	// stream means every job ended.
	deadline := time.Now().Add(run.within)
	for {
		q, err := store.QueueInfo(ctx)
		require.NoError(t, err)
		if q.Length == 0 {
			break
		}
		if time.Now().After(deadline) {
			dumpLogs()
			t.Fatalf("%d of %d jobs not ended within %s; sim %+v", q.Length, run.jobs, run.within, sim.Stats())
		}
		st := sim.Stats()
		samples = append(samples, sample{at: time.Now(), backlog: int(q.Backlog), queued: st.Queued})
		if heldRecord.JobID == "" && q.Backlog > int64(run.jobs/2) {
			r, err := store.Get(ctx, lastBacklogged)
			require.NoError(t, err)
			if r.RunpodID == "" {
				heldRecord = r
			}
		}
		switch {
		case outageStart.IsZero() && st.JobsCompleted >= int64(run.outageFrom):
			outageStart = time.Now()
			require.NoError(t, sim.SetFaults(runpodsim.AllOps, runpodsim.Faults{Status: map[int]float64{503: 1}}))
			t.Logf("outage starts: %d jobs completed on Runpod", st.JobsCompleted)
		case !outageStart.IsZero() && outageEnd.IsZero() && time.Since(outageStart) >= scaleOutage:
			sim.ClearFaults()
			outageEnd = time.Now()
			t.Log("outage ends")
		}
		time.Sleep(500 * time.Millisecond)
	}
	for i, p := range procs {
		_ = p.Process.Signal(syscall.SIGTERM)
		if err := p.Wait(); err != nil {
			dumpLogs()
			t.Fatalf("worker %d: %v", i, err)
		}
	}
	reqs := rlog.snapshot()
	st := sim.Stats()
	require.False(t, outageEnd.IsZero(), "the outage ran")

	// Every job completed with its output: no result expired unseen.
	for i, id := range ids {
		r, err := store.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, string(workflow.StateCompleted), r.State, "job %s: %+v", id, r)
		require.Contains(t, string(r.Output), fmt.Sprintf(`"i":%d`, i), "job %s", id)
	}
	require.EqualValues(t, run.jobs, st.JobsCreated, "one Runpod job per job")
	require.Zero(t, st.JobsRemoved, "no result removed by retention before it was read")

	// Limits, from the simulator's log.
	first := reqs[0].at
	byOp := map[string][]time.Time{}
	polls := map[string]int{}
	late429, total429, notFound := 0, 0, 0
	for _, r := range reqs {
		switch {
		case r.code == http.StatusTooManyRequests:
			total429++
			if r.at.Sub(first) >= runpodsim.RateLimitWindow {
				late429++
			}
			continue // refused by the simulator: not counted in its window
		case r.code == http.StatusNotFound:
			notFound++
		}
		byOp[r.op] = append(byOp[r.op], r.at)
		if r.op == runpodsim.OpStatus {
			polls[r.runID]++
		}
	}
	for op, limit := range run.limit {
		peak := maxInWindow(byOp[op], runpodsim.RateLimitWindow)
		t.Logf("%s: %d requests, at most %d in any 10 s window (limit %d)", op, len(byOp[op]), peak, limit)
		require.LessOrEqual(t, peak, limit, "%s within its limit in every sliding 10 s window", op)
	}
	t.Logf("429s: %d in all, %d after the first window; /health: %d requests", total429, late429, len(byOp[runpodsim.OpHealth]))
	require.Zero(t, late429, "no 429 after the first window")
	require.Zero(t, notFound, "no 404: no result expired unseen")

	// Polls per job.
	var counts []int
	sum := 0
	for _, n := range polls {
		counts = append(counts, n)
		sum += n
	}
	sort.Ints(counts)
	require.Len(t, counts, run.jobs, "every job was polled")
	p99 := counts[len(counts)*99/100]
	t.Logf("polls per job: mean %.2f, median %d, p99 %d, max %d", float64(sum)/float64(len(counts)),
		counts[len(counts)/2], p99, counts[len(counts)-1])
	require.LessOrEqual(t, counts[len(counts)-1], 30, "each job is polled a bounded number of times")

	// The backlog waited in our stream; Runpod's queue stayed near the depth.
	maxBacklog := 0
	for _, s := range samples {
		maxBacklog = max(maxBacklog, s.backlog)
	}
	t.Logf("Runpod's queue peaked at %d (depth %d, %d GPU workers); the stream's backlog at %d", st.PeakQueued, run.depth, run.gpus, maxBacklog)
	require.LessOrEqual(t, st.PeakQueued, 2*run.depth, "Runpod's queue stays at the pool's depth (plus the grants in transit)")
	require.Greater(t, maxBacklog, run.jobs/2, "the backlog was held in the stream")
	require.Equal(t, string(workflow.StateSubmitted), heldRecord.State, "a job of the backlog is SUBMITTED, not on Runpod")
	require.Empty(t, heldRecord.Owner, "a job of the backlog has no owner: it waits in the stream")

	// The outage, from the simulator's log: the calls in its steady part
	// (the circuit open, the tokens held when it opened spent: 2 s) are
	// the probes, one per probe interval for the whole pool.
	steadyFrom := outageStart.Add(2 * time.Second)
	var during, steady, afterFailed int
	var resumed time.Time
	for _, r := range reqs {
		switch {
		case !r.at.Before(outageStart) && r.at.Before(outageEnd):
			during++
			if !r.at.Before(steadyFrom) {
				steady++
			}
		case !r.at.Before(outageEnd) && resumed.IsZero():
			if r.code == http.StatusOK {
				resumed = r.at
			} else {
				afterFailed++
			}
		}
	}
	probes := int(outageEnd.Sub(steadyFrom)/scaleProbe) + 2
	t.Logf("outage of %s: %d calls in all, %d once the circuit was open (at most %d probes allowed); first success %s after it ended, %d failed calls before",
		scaleOutage, during, steady, probes, resumed.Sub(outageEnd).Round(time.Millisecond), afterFailed)
	require.LessOrEqual(t, steady, probes, "one probe per probe interval for the whole pool, not one per worker")
	// Before it opened: the failures that open it (5), and at most a batch
	// of tokens per worker already granted.
	require.LessOrEqual(t, during, 5+scaleWorkers*BatchDefault+probes, "calls during the outage are bounded")
	require.False(t, resumed.IsZero())
	require.Zero(t, afterFailed, "the first call after the outage succeeds")
	require.LessOrEqual(t, resumed.Sub(outageEnd), scaleProbe+5*time.Second, "work resumes within one probe interval (sim clock, with a margin)")
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
