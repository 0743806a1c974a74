// Package bench measures the orchestrator end to end on one Redis server:
// jobs submitted (through the client or by raw XADD), run by in-process
// workers against a Runpod stand-in or the HTTP simulator, until every
// outcome event is seen. It reports exact server-side counts (Redis
// commands from INFO commandstats, Lua's included) next to rates, so runs on
// different machines are compared by ratios and counts, never by timing
// assertions. cmd/bench is its command line.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Runpod back ends.
const (
	RunpodStandin = "standin" // in-process, completes a job at its first /status
	RunpodSim     = "sim"     // the HTTP simulator on loopback, limits off
)

// Submission paths.
const (
	SubmitClient = "client" // client.Submit (submit.lua)
	SubmitRaw    = "raw"    // plain XADD, as a producer in another language
)

// Options configures a run.
type Options struct {
	// RedisURL is the server to measure. Its data in Namespace is deleted
	// before and after the run.
	RedisURL string
	// NewClient, when set, opens the bench's Redis clients instead of
	// RedisURL (cmd/bench passes the --redis-url forms of
	// internal/redisconn: one server, Cluster, Sentinel). On a Cluster the
	// server figures are summed over the masters.
	NewClient func() redis.UniversalClient
	// Partitions is the namespace's partition count (default 1).
	Partitions int
	// Namespace defaults to "bench".
	Namespace string
	// Jobs to run. Required.
	Jobs int
	// Workers is the number of in-process workers (each its own Redis
	// client and consumer). Defaults to 1.
	Workers int
	// Runpod is RunpodStandin (default) or RunpodSim.
	Runpod string
	// RunpodURL, with RunpodSim, is the base URL of a simulator running in
	// another process (cmd/runpod-sim --endpoint-id bench --api-key
	// bench-key --no-rate-limits), so this process's CPU is the
	// orchestrator's and its HTTP client's alone. Empty: one in process.
	RunpodURL string
	// Submit is SubmitClient (default) or SubmitRaw.
	Submit string
	// Prefill submits every job before the workers start (a drain), so the
	// rate and costs are the workers' alone. Otherwise jobs are submitted
	// while the workers run.
	Prefill bool
	// Rate, when positive, offers the jobs at this many per second (job i
	// is due i/Rate seconds after the first) instead of as fast as
	// possible: the load of a steady producer, not a backlog. Needs
	// Prefill off.
	Rate float64
	// Hold keeps every job in flight (the stand-in never completes one) and
	// measures the keep-alive cost for HoldFor once all are on Runpod.
	Hold    bool
	HoldFor time.Duration
	// Worker overrides worker settings (zero fields keep the defaults).
	// Runpod, InstanceID and Namespace are set by the bench.
	Worker worker.Config
	// Progress, when set, is called with outcomes seen so far (at most a
	// few times a second).
	Progress func(done, total int)
	// Mark, when set, is called as a phase starts: "submit" before the
	// submissions of a Prefill, "drain" just before the workers start, and
	// "" once the last outcome is read. A profiler of the server
	// (bench/peers --callgrind) dumps its counters there.
	Mark func(phase string) error
}

// Percentiles of a latency in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Result is one run's figures. Per-job figures divide by Jobs.
type Result struct {
	Jobs       int `json:"jobs"`
	Workers    int `json:"workers"`
	Partitions int `json:"partitions"`
	// Masters is the number of Redis masters measured (1 but on a Cluster).
	Masters  int     `json:"masters"`
	Runpod   string  `json:"runpod"`
	Submit   string  `json:"submit"`
	Prefill  bool    `json:"prefill"`
	Seconds  float64 `json:"seconds"`
	JobsPerS float64 `json:"jobs_per_sec"`
	// RedisCmdsPerJob counts every command the server executed (INFO
	// commandstats, commands inside Lua included) while the workers ran:
	// the submissions too unless Prefill.
	RedisCmdsPerJob  float64 `json:"redis_cmds_per_job"`
	RedisCPUUsPerJob float64 `json:"redis_cpu_us_per_job"`
	// With Prefill, what the submissions cost the server before the
	// workers started; the happy path (submit to outcome) is the sum.
	SubmitRedisCmdsPerJob  float64 `json:"submit_redis_cmds_per_job,omitempty"`
	SubmitRedisCPUUsPerJob float64 `json:"submit_redis_cpu_us_per_job,omitempty"`
	// RoundTripsPerJob counts what the bench's clients sent: one per
	// command, one per pipeline.
	RoundTripsPerJob float64 `json:"round_trips_per_job"`
	// ProcessCPUUsPerJob is this process's CPU (workers, stand-in or HTTP
	// client, the outcome reader; submitters too unless Prefill).
	ProcessCPUUsPerJob float64 `json:"process_cpu_us_per_job"`
	AllocsPerJob       float64 `json:"allocs_per_job"`
	// OfferedRate is Options.Rate; SubmitLateMs says how late the
	// submissions returned after their due times (the rate held if small).
	OfferedRate  float64      `json:"offered_rate,omitempty"`
	SubmitLateMs *Percentiles `json:"submit_late_ms,omitempty"`
	// SubmitToRunMs: submit returned → first /run (stand-in only).
	SubmitToRunMs *Percentiles `json:"submit_to_run_ms,omitempty"`
	// CompletionToOutcomeMs: the stand-in reported COMPLETED → the outcome
	// event was read (stand-in only).
	CompletionToOutcomeMs *Percentiles   `json:"completion_to_outcome_ms,omitempty"`
	RSSMiB                float64        `json:"rss_mib"`
	Outcomes              map[string]int `json:"outcomes"`
	RunpodRuns            int64          `json:"runpod_runs,omitempty"`
	// RunpodRequestsPerJob: the HTTP requests the simulator served per
	// job, by operation (sim only).
	RunpodRequestsPerJob map[string]float64 `json:"runpod_requests_per_job,omitempty"`
	// TopCommands are the five commands the server ran most, per job.
	TopCommands map[string]float64 `json:"top_commands_per_job"`
	// Commands is every command the server ran while the workers ran,
	// per job (where the commands go).
	Commands map[string]float64 `json:"commands_per_job,omitempty"`
	// Keep-alive (Hold): Redis commands per second per 1,000 jobs in
	// flight, and the server's CPU share, measured over HoldFor.
	KeepAliveCmdsPerSecPer1000 float64 `json:"keepalive_cmds_per_sec_per_1000,omitempty"`
	KeepAliveRedisCPUPct       float64 `json:"keepalive_redis_cpu_pct,omitempty"`
	KeepAliveSeconds           float64 `json:"keepalive_seconds,omitempty"`
}

func (o Options) withDefaults() (Options, error) {
	if o.Namespace == "" {
		o.Namespace = "bench"
	}
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.Partitions <= 0 {
		o.Partitions = 1
	}
	if o.Runpod == "" {
		o.Runpod = RunpodStandin
	}
	if o.Submit == "" {
		o.Submit = SubmitClient
	}
	if o.Hold && o.HoldFor <= 0 {
		o.HoldFor = 30 * time.Second
	}
	switch {
	case o.Jobs <= 0:
		return o, errors.New("bench: --jobs must be at least 1")
	case o.Runpod != RunpodStandin && o.Runpod != RunpodSim:
		return o, fmt.Errorf("bench: --runpod %q: want %s or %s", o.Runpod, RunpodStandin, RunpodSim)
	case o.Submit != SubmitClient && o.Submit != SubmitRaw:
		return o, fmt.Errorf("bench: --submit %q: want %s or %s", o.Submit, SubmitClient, SubmitRaw)
	case o.Rate < 0 || (o.Rate > 0 && (o.Prefill || o.Hold)):
		return o, errors.New("bench: --rate: want a positive rate with --prefill=false and without --hold")
	case o.RunpodURL != "" && o.Runpod != RunpodSim:
		return o, errors.New("bench: --runpod-url needs --runpod sim")
	case o.Hold && o.Runpod != RunpodStandin:
		return o, errors.New("bench: --hold needs --runpod standin")
	}
	return o, nil
}

// Run runs one measurement.
func Run(ctx context.Context, o Options) (Result, error) {
	o, err := o.withDefaults()
	if err != nil {
		return Result{}, err
	}
	open := o.NewClient
	if open == nil {
		ropts, err := redis.ParseURL(o.RedisURL)
		if err != nil {
			return Result{}, fmt.Errorf("bench: --redis-url: %w", err)
		}
		open = func() redis.UniversalClient { return redis.NewClient(ropts) }
	}
	rt := &roundTrips{}
	newRDB := func() redis.UniversalClient {
		c := open()
		c.AddHook(rt)
		return c
	}
	admin := open()
	defer admin.Close()
	parts, err := streams.NewPartitions(admin, streams.Config{Namespace: o.Namespace}, o.Partitions)
	if err != nil {
		return Result{}, fmt.Errorf("bench: --namespace, --partitions: %w", err)
	}
	if err := clearNamespace(ctx, admin, o.Namespace); err != nil {
		return Result{}, err
	}
	defer clearNamespace(context.WithoutCancel(ctx), admin, o.Namespace) //nolint:errcheck // best effort

	rp, sim, stopRunpod, err := runpodBackend(o)
	if err != nil {
		return Result{}, err
	}
	defer stopRunpod()

	subRDB := newRDB()
	defer subRDB.Close()
	cl, err := client.New(subRDB, client.Config{Namespace: o.Namespace, Partitions: o.Partitions, MaxInputBytes: 1 << 20})
	if err != nil {
		return Result{}, err
	}
	defer cl.Close()
	// The group must exist before raw XADDs are read from the start.
	for _, st := range parts.All() {
		if err := st.EnsureGroup(ctx); err != nil {
			return Result{}, err
		}
	}

	ids := make([]string, o.Jobs)
	for i := range ids {
		ids[i] = "bench-" + strconv.Itoa(i)
	}
	outcomes := newOutcomeReader()
	sub, err := cl.NewSubscription(ctx, client.EventsOptions{From: client.FromNow})
	if err != nil {
		return Result{}, err
	}
	readCtx, stopRead := context.WithCancel(ctx)
	defer stopRead()
	go outcomes.read(readCtx, sub)

	submitted := make(map[string]time.Time, o.Jobs)
	var submitMu sync.Mutex
	submitOne := func(ctx context.Context, id string) error {
		input := `{"job":"` + id + `"}`
		var err error
		if o.Submit == SubmitRaw {
			err = subRDB.XAdd(ctx, &redis.XAddArgs{Stream: parts.For(id).Keys().Submissions(), Values: []string{"job_id", id, "input", input}}).Err()
		} else {
			_, err = cl.Submit(ctx, client.SubmitOptions{ClientJobID: id, Input: json.RawMessage(input)})
		}
		if err != nil {
			return fmt.Errorf("bench: submit %s: %w", id, err)
		}
		submitMu.Lock()
		submitted[id] = time.Now()
		submitMu.Unlock()
		return nil
	}
	var lateMs []float64 // Rate: how late each submission returned after its due time
	submitAll := func(ctx context.Context) error {
		if o.Rate > 0 {
			var err error
			lateMs, err = submitAtRate(ctx, ids, o.Rate, submitOne)
			return err
		}
		for _, id := range ids {
			if err := submitOne(ctx, id); err != nil {
				return err
			}
		}
		return nil
	}

	mark := o.Mark
	if mark == nil {
		mark = func(string) error { return nil }
	}
	var submitCost serverStats
	if o.Prefill {
		before, err := readServerStats(ctx, admin)
		if err != nil {
			return Result{}, err
		}
		if err := mark("submit"); err != nil {
			return Result{}, err
		}
		if err := submitAll(ctx); err != nil {
			return Result{}, err
		}
		after, err := readServerStats(ctx, admin)
		if err != nil {
			return Result{}, err
		}
		submitCost = after.sub(before)
	}

	before, err := readServerStats(ctx, admin)
	if err != nil {
		return Result{}, err
	}
	if err := mark("drain"); err != nil {
		return Result{}, err
	}
	rt0 := rt.n.Load()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := processCPU()
	start := time.Now()

	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	werrs := make(chan error, o.Workers)
	for i := range o.Workers {
		cfg := o.Worker
		cfg.Runpod = rp
		cfg.Namespace = o.Namespace
		cfg.Partitions = o.Partitions
		cfg.InstanceID = fmt.Sprintf("bench-worker-%d", i)
		if cfg.Logger == nil {
			cfg.Logger = hclog.NewNullLogger()
		}
		wrdb := newRDB()
		defer wrdb.Close()
		w, err := worker.New(wrdb, cfg)
		if err != nil {
			stopWorkers()
			return Result{}, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(wctx); err != nil && !errors.Is(err, context.Canceled) {
				werrs <- err
			}
		}()
	}
	defer func() { stopWorkers(); wg.Wait() }()

	if !o.Prefill {
		if err := submitAll(ctx); err != nil {
			return Result{}, err
		}
	}

	res := Result{Jobs: o.Jobs, Workers: o.Workers, Partitions: o.Partitions, Masters: before.masters,
		Runpod: o.Runpod, Submit: o.Submit, Prefill: o.Prefill}
	if o.Hold {
		return holdRun(ctx, o, admin, rp.(*standin), res, werrs)
	}
	if err := outcomes.wait(ctx, o.Jobs, o.Progress, werrs); err != nil {
		return Result{}, err
	}
	elapsed := time.Since(start)
	cpu1 := processCPU()
	if err := mark(""); err != nil {
		return Result{}, err
	}
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	after, err := readServerStats(ctx, admin)
	if err != nil {
		return Result{}, err
	}
	d := after.sub(before)
	n := float64(o.Jobs)
	res.Seconds = elapsed.Seconds()
	res.JobsPerS = n / elapsed.Seconds()
	res.RedisCmdsPerJob = float64(d.total()) / n
	res.RedisCPUUsPerJob = d.cpuSec * 1e6 / n
	res.RoundTripsPerJob = float64(rt.n.Load()-rt0) / n
	res.ProcessCPUUsPerJob = float64((cpu1 - cpu0).Microseconds()) / n
	res.AllocsPerJob = float64(ms1.Mallocs-ms0.Mallocs) / n
	res.RSSMiB = peakRSSMiB()
	res.Outcomes = outcomes.counts()
	res.TopCommands = top(d.calls, 5, n)
	res.Commands = top(d.calls, len(d.calls), n)
	if o.Prefill {
		res.SubmitRedisCmdsPerJob = float64(submitCost.total()) / n
		res.SubmitRedisCPUUsPerJob = submitCost.cpuSec * 1e6 / n
	}
	if sim != nil {
		res.RunpodRequestsPerJob = map[string]float64{}
		for op, k := range sim.Stats().Requests {
			res.RunpodRequestsPerJob[op] = float64(k) / n
		}
	}
	if o.Rate > 0 {
		res.OfferedRate = o.Rate
		res.SubmitLateMs = percentiles(lateMs)
	}
	if s, ok := rp.(*standin); ok {
		res.RunpodRuns = s.runs.Load()
		ran, done := s.times()
		submitMu.Lock()
		res.SubmitToRunMs = latency(submitted, ran)
		submitMu.Unlock()
		res.CompletionToOutcomeMs = latency(done, outcomes.seenAt())
	}
	return res, nil
}

// holdRun waits until every job is on Runpod, then measures what keeping
// them in flight costs Redis over o.HoldFor.
func holdRun(ctx context.Context, o Options, admin redis.UniversalClient, s *standin, res Result, werrs <-chan error) (Result, error) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for s.runs.Load() < int64(o.Jobs) {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case err := <-werrs:
			return res, err
		case <-t.C:
			if o.Progress != nil {
				o.Progress(int(s.runs.Load()), o.Jobs)
			}
		}
	}
	before, err := readServerStats(ctx, admin)
	if err != nil {
		return res, err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case err := <-werrs:
		return res, err
	case <-time.After(o.HoldFor):
	}
	after, err := readServerStats(ctx, admin)
	if err != nil {
		return res, err
	}
	secs := time.Since(start).Seconds()
	d := after.sub(before)
	res.KeepAliveSeconds = secs
	res.KeepAliveCmdsPerSecPer1000 = float64(d.total()) / secs / (float64(o.Jobs) / 1000)
	res.KeepAliveRedisCPUPct = d.cpuSec / secs * 100
	res.TopCommands = top(d.calls, 5, float64(o.Jobs))
	res.RSSMiB = peakRSSMiB()
	res.RunpodRuns = s.runs.Load()
	return res, nil
}

func runpodBackend(o Options) (workflow.Runpod, *runpodsim.Sim, func(), error) {
	if o.Runpod == RunpodStandin {
		return newStandin(o.Hold), nil, func() {}, nil
	}
	const key, endpoint = "bench-key", "bench"
	if o.RunpodURL != "" {
		rp, err := activities.New(activities.Config{APIKey: key, EndpointID: endpoint, BaseURL: o.RunpodURL,
			Limiter: activities.NewLocalLimiter(map[string]activities.RateLimit{})})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("bench: --runpod-url: %w", err)
		}
		return rp, nil, rp.CloseIdleConnections, nil
	}
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{
		EndpointID: endpoint, APIKey: key, GPUWorkers: 10000, MockDelay: time.Millisecond,
		DisableRateLimits: true, Logger: hclog.NewNullLogger(),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	rp, err := activities.New(activities.Config{APIKey: key, EndpointID: endpoint, BaseURL: srv.URL,
		Limiter: activities.NewLocalLimiter(map[string]activities.RateLimit{})})
	if err != nil {
		srv.Close()
		return nil, nil, nil, err
	}
	return rp, srv.Sim, func() { rp.CloseIdleConnections(); srv.Close() }, nil
}

// clearNamespace deletes every key of the namespace and of its partitions
// (SCAN, not KEYS), on every master of a Cluster.
func clearNamespace(ctx context.Context, rdb redis.UniversalClient, ns string) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return clearNode(ctx, c, ns) })
	}
	return clearNode(ctx, rdb, ns)
}

func clearNode(ctx context.Context, rdb redis.UniversalClient, ns string) error {
	for _, pattern := range []string{"{" + ns + "}:*", "{" + ns + ":[0-9]*}:*"} {
		iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
		var batch []string
		flush := func() error {
			// One UNLINK per key: a node of a Cluster refuses one command
			// over several slots.
			_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range batch {
					p.Unlink(ctx, k)
				}
				return nil
			})
			batch = batch[:0]
			return err
		}
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == 1000 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("bench: clear namespace: %w", err)
		}
		if len(batch) > 0 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// submitAtRate submits ids at rate per second: id i is due i/rate after
// the start. Several submitters share the schedule, so one slow Submit
// delays only its own job; it returns how late (ms) each submission
// returned after its due time.
func submitAtRate(ctx context.Context, ids []string, rate float64, submit func(context.Context, string) error) ([]float64, error) {
	const submitters = 16
	late := make([]float64, len(ids))
	var next atomic.Int64
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(ids) {
					return
				}
				due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					t := time.NewTimer(d)
					select {
					case <-ctx.Done():
						t.Stop()
						return
					case <-t.C:
					}
				}
				if err := submit(ctx, ids[i]); err != nil {
					cancel(err)
					return
				}
				late[i] = float64(time.Since(due).Microseconds()) / 1000
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return late, nil
}

func latency(from, to map[string]time.Time) *Percentiles {
	var ms []float64
	for id, t0 := range from {
		if t1, ok := to[id]; ok {
			ms = append(ms, float64(t1.Sub(t0).Microseconds())/1000)
		}
	}
	return percentiles(ms)
}

// percentiles of ms (sorted in place); nil when empty.
func percentiles(ms []float64) *Percentiles {
	if len(ms) == 0 {
		return nil
	}
	slices.Sort(ms)
	at := func(q float64) float64 { return ms[min(len(ms)-1, int(q*float64(len(ms))))] }
	return &Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms[len(ms)-1]}
}

func top(calls map[string]int64, k int, perJob float64) map[string]float64 {
	names := make([]string, 0, len(calls))
	for n := range calls {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return int(calls[b] - calls[a]) })
	out := map[string]float64{}
	for _, n := range names[:min(k, len(names))] {
		out[n] = float64(calls[n]) / perJob
	}
	return out
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSSMiB reads VmHWM (Linux); 0 elsewhere.
func peakRSSMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}
