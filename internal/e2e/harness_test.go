package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/internal/syncbuf"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// env is one test's world: a Redis namespace, a simulator on loopback, a
// producer client and a store for reading records.
type env struct {
	t     *testing.T
	rdb   *redis.Client
	addr  string // Redis host:port, for subprocesses
	ns    string
	store *streams.Store
	cli   *client.Client
	srv   *runpodsim.Server
}

// simDefaults fills the simulator settings every test wants: a fast queue
// with many GPU workers and no rate limits (tests of limits set their own).
func simDefaults(c runpodsim.Config) runpodsim.Config {
	c.EndpointID, c.APIKey = testEndpointID, testAPIKey
	if c.GPUWorkers == 0 {
		c.GPUWorkers = 128
	}
	if c.MockDelay == 0 {
		c.MockDelay = 10 * time.Millisecond
	}
	if c.RateLimits == nil && c.ConcurrencyLimits == nil {
		c.DisableRateLimits = true
	}
	return c
}

// newEnv gives t a namespace on the shared redis-server and its own simulator.
func newEnv(t *testing.T, sim runpodsim.Config) *env {
	t.Helper()
	rdb, ns := redistest.New(t)
	return newEnvOn(t, rdb, redistest.Addr(), ns, sim)
}

// newEnvOn builds an env on a given Redis (a test's own server).
func newEnvOn(t *testing.T, rdb *redis.Client, addr, ns string, sim runpodsim.Config) *env {
	t.Helper()
	srv, err := runpodsim.Serve("127.0.0.1:0", simDefaults(sim))
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	st, err := streams.New(rdb, streams.Config{Namespace: ns})
	require.NoError(t, err)
	cli, err := client.New(rdb, client.Config{Namespace: ns, Dedupe: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	return &env{t: t, rdb: rdb, addr: addr, ns: ns, store: st, cli: cli, srv: srv}
}

// runpod returns a real activities client for the env's simulator, with
// fast retries. Its idle connections are closed when t ends (after the
// workers using it, since cleanups run last-in first-out).
func (e *env) runpod(mod ...func(*activities.Config)) *activities.Client {
	e.t.Helper()
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	cfg := activities.Config{
		APIKey: testAPIKey, EndpointID: testEndpointID, BaseURL: e.srv.URL,
		HTTPClient:          &http.Client{Transport: transport},
		RequestTimeout:      5 * time.Second,
		RetryInitialBackoff: 10 * time.Millisecond, RetryMaxBackoff: 200 * time.Millisecond,
		BreakerOpenTimeout: 300 * time.Millisecond,
		Limiter:            noLimit{},
	}
	for _, m := range mod {
		m(&cfg)
	}
	rp, err := activities.New(cfg)
	require.NoError(e.t, err)
	e.t.Cleanup(transport.CloseIdleConnections)
	return rp
}

// testLogger logs to stderr when E2E_LOG names a level.
func testLogger(name string) hclog.Logger {
	lvl := os.Getenv(envLogLevel)
	if lvl == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.LevelFromString(lvl), Output: os.Stderr})
}

// workerConfig is a fast in-process worker: a one-second lease, quick
// heartbeats, claims and polls.
func (e *env) workerConfig(id string, rp workflow.Runpod) worker.Config {
	return worker.Config{
		Runpod:            rp,
		InstanceID:        id,
		Namespace:         e.ns,
		Concurrency:       16,
		MinIdle:           time.Second,
		HeartbeatInterval: 300 * time.Millisecond,
		ClaimInterval:     300 * time.Millisecond,
		Poll:              workflow.PollPolicy{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond},
		Retry:             workflow.RetryPolicy{Initial: 20 * time.Millisecond, Max: 300 * time.Millisecond},
		ShutdownTimeout:   2 * time.Second,
		Logger:            testLogger(id),
	}
}

// inproc is a worker running in a goroutine of the test.
type inproc struct {
	w      *worker.Worker
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startWorker runs cfg in a goroutine until stop or the end of the test.
// Survivors may be in-process; crashing workers are always subprocesses.
func (e *env) startWorker(cfg worker.Config) *inproc {
	e.t.Helper()
	return startWorkerOn(e.t, e.rdb, cfg)
}

func startWorkerOn(t *testing.T, rdb redis.UniversalClient, cfg worker.Config) *inproc {
	t.Helper()
	w, err := worker.New(rdb, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	p := &inproc{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- w.Run(ctx) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop shuts the worker down gracefully and waits, bounded, for Run.
func (p *inproc) stop(t *testing.T) {
	t.Helper()
	p.once.Do(func() {
		p.cancel()
		select {
		case err := <-p.done:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Errorf("worker %s: Run did not return within 20s of cancel", p.w.InstanceID())
		}
	})
}

// childOpts configure a worker subprocess.
type childOpts struct {
	ID          string
	MinIdle     time.Duration // default 1s
	Heartbeat   time.Duration // default 300ms
	Claim       time.Duration // default 300ms
	PollInitial time.Duration // default 50ms
	PollMax     time.Duration // default 200ms
	Concurrency int           // default 16
	Uncertain   workflow.SubmitUncertainPolicy
	HookPoint   string // worker.Point*; empty: no hook
	HookAfter   int    // act at the N-th occurrence of HookPoint
	HookAction  string // "kill" or "stop"
	SimURL      string // default: the env's simulator (e.g. a proxy in front of it)
}

// child is a worker subprocess: this test binary re-executed with
// E2E_WORKER=1.
type child struct {
	id     string
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	exited chan struct{}
	state  *os.ProcessState
}

// startChild starts a worker subprocess. Its stderr is shown if the test
// fails; a survivor is killed when the test ends.
func (e *env) startChild(o childOpts) *child {
	e.t.Helper()
	set := func(env []string, k string, v any) []string {
		s := fmt.Sprint(v)
		if d, ok := v.(time.Duration); ok {
			if d == 0 {
				return env
			}
			s = d.String()
		}
		if n, ok := v.(int); ok && n == 0 {
			return env
		}
		if s == "" {
			return env
		}
		return append(env, k+"="+s)
	}
	vars := append(os.Environ(), "E2E_WORKER=1")
	vars = set(vars, envRedis, e.addr)
	vars = set(vars, envNamespace, e.ns)
	simURL := e.srv.URL
	if o.SimURL != "" {
		simURL = o.SimURL
	}
	vars = set(vars, envSimURL, simURL)
	vars = set(vars, envInstance, o.ID)
	vars = set(vars, envMinIdle, o.MinIdle)
	vars = set(vars, envHeartbeat, o.Heartbeat)
	vars = set(vars, envClaim, o.Claim)
	vars = set(vars, envPollInitial, o.PollInitial)
	vars = set(vars, envPollMax, o.PollMax)
	vars = set(vars, envConcurrency, o.Concurrency)
	vars = set(vars, envUncertain, string(o.Uncertain))
	vars = set(vars, envHookPoint, o.HookPoint)
	vars = set(vars, envHookAfter, o.HookAfter)
	vars = set(vars, envHookAction, o.HookAction)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = vars
	c := &child{id: o.ID, cmd: cmd, stderr: &syncbuf.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	require.NoError(e.t, cmd.Start())
	go func() {
		_ = cmd.Wait()
		c.state = cmd.ProcessState
		close(c.exited)
	}()
	e.t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT) // a stopped child cannot die of SIGTERM
			_ = cmd.Process.Kill()
			<-c.exited
		}
		if e.t.Failed() || os.Getenv(envLogLevel) != "" {
			e.t.Logf("worker subprocess %s stderr:\n%s", c.id, c.stderr.String())
		}
		// A data race in a child is a failure of the test even if the child
		// was killed before it could exit with the race detector's status.
		if strings.Contains(c.stderr.String(), "WARNING: DATA RACE") {
			e.t.Errorf("worker subprocess %s reported a data race:\n%s", c.id, c.stderr.String())
		}
	})
	return c
}

// wait waits (bounded) for the child to exit.
func (c *child) wait(t *testing.T, within time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-c.exited:
		return c.state
	case <-time.After(within):
		t.Fatalf("worker subprocess %s did not exit within %s; stderr:\n%s", c.id, within, c.stderr.String())
		return nil
	}
}

// signal sends sig to the child.
func (c *child) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(sig), "signal %s to %s", sig, c.id)
}

// killedBy reports whether the child died of sig.
func (c *child) killedBy(sig syscall.Signal) bool {
	ws, ok := c.state.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// hookJob returns the job the child's StepHook acted on ("" if none yet).
func (c *child) hookJob() string {
	sc := bufio.NewScanner(strings.NewReader(c.stderr.String()))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), hookLinePrefix); ok {
			if _, job, ok := strings.Cut(rest, " "); ok {
				return job
			}
		}
	}
	return ""
}

// stats returns the worker Stats the child printed at a graceful exit.
func (c *child) stats(t *testing.T) worker.Stats {
	t.Helper()
	for _, line := range strings.Split(c.stderr.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, statsLinePrefix); ok {
			var s worker.Stats
			require.NoError(t, json.Unmarshal([]byte(rest), &s))
			return s
		}
	}
	t.Fatalf("worker subprocess %s printed no stats; stderr:\n%s", c.id, c.stderr.String())
	return worker.Stats{}
}

// stopped reports whether the child is stopped (SIGSTOP): state "T" in
// /proc/<pid>/stat.
func (c *child) stopped() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces, so cut after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] == 'T'
}

// stoppedCond is stopped as an eventually condition.
func (c *child) stoppedCond() (bool, string) {
	return c.stopped(), "worker subprocess " + c.id + " not stopped"
}

// eventually polls cond every 20ms until it holds or timeout passes; on
// timeout it fails with cond's last description of the state.
func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s; last state: %s", timeout, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// jobInput is the input of a test job: "job" names it, so the simulator's
// job list can be mapped back to our jobs.
func jobInput(id string, extra map[string]any) json.RawMessage {
	m := map[string]any{"job": id}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// submit submits a job with the client and requires it to be new.
func (e *env) submit(id string, input json.RawMessage, timeout time.Duration) {
	e.t.Helper()
	res, err := e.cli.Submit(context.Background(), client.SubmitOptions{ClientJobID: id, Input: input, Timeout: timeout})
	require.NoError(e.t, err)
	require.False(e.t, res.Existing, "job %s already existed", id)
	require.Equal(e.t, id, res.ClientJobID)
}

// record loads a job record (zero Record if absent).
func (e *env) record(id string) (streams.Record, error) {
	return e.store.Get(context.Background(), id)
}

// waitTerminal waits until every job in ids is terminal and returns their
// records.
func (e *env) waitTerminal(ids []string, within time.Duration) map[string]streams.Record {
	e.t.Helper()
	recs := make(map[string]streams.Record, len(ids))
	eventually(e.t, within, func() (bool, string) {
		var open []string
		for _, id := range ids {
			if r, ok := recs[id]; ok && workflow.State(r.State).Terminal() {
				continue
			}
			r, err := e.record(id)
			if err != nil || !workflow.State(r.State).Terminal() {
				if len(open) < 5 {
					open = append(open, fmt.Sprintf("%s:%s/%s(owner %s, epoch %d, err %v)", id, r.State, r.Step, r.Owner, r.Epoch, err))
				}
				if len(open) == 5 {
					open = append(open, "...")
				}
				continue
			}
			recs[id] = r
		}
		return len(recs) == len(ids), fmt.Sprintf("%d of %d terminal; open: %v", len(recs), len(ids), open)
	})
	return recs
}

// events returns the whole events stream in order, and by job.
func (e *env) events() ([]streams.Event, map[string][]streams.Event) {
	e.t.Helper()
	var all []streams.Event
	by := make(map[string][]streams.Event)
	after := "0"
	for {
		evs, err := e.store.ReadEvents(context.Background(), after, 1000, 0)
		require.NoError(e.t, err)
		if len(evs) == 0 {
			return all, by
		}
		for _, ev := range evs {
			all = append(all, ev)
			by[ev.JobID] = append(by[ev.JobID], ev)
			after = ev.ID
		}
	}
}

var terminalTypes = map[string]workflow.State{
	streams.EventCompleted: workflow.StateCompleted, streams.EventFailed: workflow.StateFailed,
	streams.EventTimedOut: workflow.StateTimedOut, streams.EventCanceled: workflow.StateCanceled,
}

// workerEvent reports whether an event type is written by a worker under
// its epoch (as opposed to producers: submitted, cancel_requested, ...).
func workerEvent(typ string) bool {
	_, terminal := terminalTypes[typ]
	return terminal || typ == streams.EventQueued || typ == streams.EventProgress
}

// audit checks the events stream as an auditor would, and more:
//   - client.Audit: no violation (exactly one terminal event per job, legal
//     transitions, nothing after terminal, submitted first) and no job left
//     in flight;
//   - every job in ids has exactly one terminal event, it is its last event,
//     and its state is the record's;
//   - fencing: a job's worker-written events never go back to an older
//     epoch (a stale owner's write after a takeover would);
//   - the record agrees: terminal in the same state, under the epoch of the
//     terminal event, with its finished time set;
//   - no submission is left pending in the consumer group.
//
// It returns the events by job.
func (e *env) audit(ids []string) map[string][]streams.Event {
	e.t.Helper()
	rep, err := e.cli.Audit(context.Background(), client.AuditOptions{})
	require.NoError(e.t, err)
	require.True(e.t, rep.OK(), "audit violations: %v", rep.Violations)
	require.Empty(e.t, rep.InFlight, "jobs without a terminal event")
	require.Zero(e.t, rep.Undecodable, "undecodable events")

	_, by := e.events()
	for _, id := range ids {
		evs := by[id]
		require.NotEmpty(e.t, evs, "job %s has no events", id)
		n, last := 0, evs[len(evs)-1]
		var maxEpoch int64
		for _, ev := range evs {
			if _, ok := terminalTypes[ev.Type]; ok {
				n++
			}
			if workerEvent(ev.Type) {
				require.GreaterOrEqual(e.t, ev.Epoch, maxEpoch,
					"job %s: event %s (%s) written under epoch %d after epoch %d: a fenced-out owner wrote", id, ev.ID, ev.Type, ev.Epoch, maxEpoch)
				maxEpoch = ev.Epoch
			}
		}
		require.Equal(e.t, 1, n, "job %s: terminal events in %v", id, summarize(evs))
		st, ok := terminalTypes[last.Type]
		require.True(e.t, ok, "job %s: last event %s is not terminal: %v", id, last.Type, summarize(evs))
		rec, err := e.record(id)
		require.NoError(e.t, err, "job %s", id)
		require.Equal(e.t, string(st), rec.State, "job %s: record state vs terminal event", id)
		require.Equal(e.t, rec.Epoch, last.Epoch, "job %s: terminal event written under the record's epoch", id)
		require.NotZero(e.t, rec.FinishedMs, "job %s: finished time", id)
	}
	pending, err := e.store.Pending(context.Background())
	require.NoError(e.t, err)
	require.Zero(e.t, pending, "submissions still pending after every job is terminal")
	return by
}

func summarize(evs []streams.Event) string {
	parts := make([]string, len(evs))
	for i, ev := range evs {
		parts[i] = fmt.Sprintf("%s/%s@%d", ev.Type, ev.State, ev.Epoch)
	}
	return strings.Join(parts, " ")
}

// simJobs maps our job ids to the simulator jobs created for them (by the
// "job" field of the input), in creation order.
func (e *env) simJobs() map[string][]runpodsim.JobInfo {
	by := make(map[string][]runpodsim.JobInfo)
	for _, j := range e.srv.Sim.Jobs() {
		var in struct {
			Job string `json:"job"`
		}
		_ = json.Unmarshal(j.Input, &in)
		by[in.Job] = append(by[in.Job], j)
	}
	return by
}

// checkRunpodSide asserts, for each job, the Runpod-side half of
// "re-attach, never re-run": the recorded Runpod id is one the simulator
// created for this job; and a job has more than one Runpod job only if its
// record shows more than one /run attempt (the documented /run window), never
// more Runpod jobs than attempts, and every extra one that is not the
// recorded one was either cancelled (a fenced worker's orphan) or belongs to
// that window. strictOne lists jobs that must have exactly one Runpod job.
func (e *env) checkRunpodSide(recs map[string]streams.Record, strictOne bool) {
	e.t.Helper()
	sims := e.simJobs()
	for id, rec := range recs {
		js := sims[id]
		if rec.RunpodID == "" {
			// Never recorded on Runpod (canceled unsent, poison, uncertain
			// with policy fail): any Runpod job is from an unrecorded /run.
			require.LessOrEqual(e.t, len(js), rec.Attempts, "job %s: %d runpod jobs for %d attempts", id, len(js), rec.Attempts)
			continue
		}
		ids := make([]string, len(js))
		found := false
		for i, j := range js {
			ids[i] = j.ID
			found = found || j.ID == rec.RunpodID
		}
		require.True(e.t, found, "job %s: recorded runpod id %s is not among the simulator's jobs for it %v", id, rec.RunpodID, ids)
		if strictOne {
			require.Len(e.t, js, 1, "job %s (attempts %d): runpod jobs %v", id, rec.Attempts, ids)
			continue
		}
		require.LessOrEqual(e.t, len(js), rec.Attempts, "job %s: %d runpod jobs for %d /run attempts: a /run outside the recorded window", id, len(js), rec.Attempts)
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// jobIDs returns n job ids with a prefix.
func jobIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return ids
}

func procStat(c *child) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	return string(b)
}
