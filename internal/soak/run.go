package soak

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Names shared with the worker processes. The API key is the simulator's,
// not a secret; it still reaches the workers through the environment only.
const (
	namespace  = "soak"
	endpointID = "soak-endpoint"
	apiKey     = "soak-sim-key"
)

// maxListed bounds the violations printed in the summary (all are counted).
const maxListed = 100

// Summary is the soak's one-line JSON verdict.
type Summary struct {
	OK         bool           `json:"ok"`
	Seed       int64          `json:"seed"`
	Jobs       int            `json:"jobs"`
	Submitted  int            `json:"submitted"`
	Workers    int            `json:"workers"`
	Partitions int            `json:"partitions"`
	Seconds    float64        `json:"seconds"`
	Fsync      string         `json:"fsync"`
	AOFCutMs   int64          `json:"aof_cut_ms,omitempty"`
	Chaos      []string       `json:"chaos"`
	Kinds      []string       `json:"kinds"`
	ByKind     map[string]int `json:"by_kind"`
	CancelsNot int            `json:"cancels_unrecorded,omitempty"`
	Report
	// Faults counts chaos actions by kind, and FaultsInjected the
	// simulator's injected faults by kind ("500", "drop", "latency", ...).
	Faults         map[string]int   `json:"faults"`
	FaultsInjected map[string]int64 `json:"sim_faults_injected"`
	RedisRestarts  int              `json:"redis_restarts"`
	AOFBytesCut    int64            `json:"aof_bytes_cut,omitempty"`
	WorkerStarts   int              `json:"worker_starts"`
	ViolationCount int              `json:"violation_count"`
	Violations     []Violation      `json:"violations"`
	Dir            string           `json:"dir,omitempty"`
}

// soak is one run's state.
type soak struct {
	cfg   Config
	rng   *rand.Rand // the chaos schedule; only the chaos loop draws from it
	dir   string
	redis *redisProc
	sim   *runpodsim.Sim
	front *fronts
	pool  []*workerProc
	rdb   *redis.Client
	cli   *client.Client
	store *streams.Partitions

	mu          sync.Mutex
	facts       []JobFacts
	disruptions []Disruption
	faults      map[string]int
	live        []client.Event
	livePos     string // the live subscription's position (one id per partition)
	redisBusy   bool
	aofCut      int64
	workerRuns  int
	started     time.Time
	submitted   atomic.Int64
	terminal    atomic.Int64
}

func (s *soak) logf(format string, args ...any) {
	fmt.Fprintf(s.cfg.Progress, "soak %6.1fs: "+format+"\n", append([]any{time.Since(s.started).Seconds()}, args...)...)
}

func (s *soak) count(kind string) {
	s.mu.Lock()
	s.faults[kind]++
	s.mu.Unlock()
}

// Run runs one soak and returns its summary. The error is for a soak that
// could not run (a missing binary, a process that would not start);
// violations are in the summary.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	s := &soak{cfg: cfg, rng: newRand(cfg.Seed), faults: map[string]int{}, started: time.Now()}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "runpod-soak-")
		if err != nil {
			return Summary{}, err
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return Summary{}, err
	}
	s.dir = dir
	sum, err := s.run(ctx)
	sum.Dir = dir
	if err == nil && sum.OK && !cfg.Keep && cfg.Dir == "" {
		_ = os.RemoveAll(dir)
		sum.Dir = ""
	}
	return sum, err
}

func (s *soak) run(ctx context.Context) (Summary, error) {
	cfg := s.cfg
	var err error
	if s.redis, err = newRedis(cfg.RedisServer, s.dir, cfg.Fsync, cfg.AOFCut); err != nil {
		return Summary{}, err
	}
	if err := s.redis.start(ctx); err != nil {
		return Summary{}, err
	}
	defer s.redis.stop()
	s.logf("redis-server on %s (appendfsync %s), dir %s", s.redis.addr(), cfg.Fsync, s.dir)

	s.sim, err = runpodsim.New(runpodsim.Config{
		EndpointID: endpointID, APIKey: apiKey, GPUWorkers: 1024, DisableRateLimits: true,
		Seed: cfg.Seed, MockDelay: 50 * time.Millisecond,
	})
	if err != nil {
		return Summary{}, err
	}
	defer s.sim.Close()
	if s.front, err = newFronts(s.sim, cfg.Workers); err != nil {
		return Summary{}, err
	}
	defer s.front.close()

	s.rdb = redis.NewClient(&redis.Options{Addr: s.redis.addr(), DialTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second, MaxRetries: 2})
	defer s.rdb.Close()
	if s.cli, err = client.New(s.rdb, client.Config{Namespace: namespace, Partitions: cfg.Partitions}); err != nil {
		return Summary{}, err
	}
	defer s.cli.Close()
	if s.store, err = streams.NewPartitions(s.rdb, streams.Config{Namespace: namespace}, cfg.Partitions); err != nil {
		return Summary{}, err
	}

	env := append(os.Environ(), "RUNPOD_API_KEY="+apiKey)
	for slot := range cfg.Workers {
		w := &workerProc{slot: slot, bin: cfg.WorkerBin, env: env, logDir: s.dir, args: []string{
			"--redis-url", "redis://" + s.redis.addr() + "/0",
			"--namespace", namespace,
			"--partitions", strconv.Itoa(cfg.Partitions),
			"--runpod-endpoint-id", endpointID,
			"--runpod-base-url", s.front.urls[slot],
			"--max-in-flight", "300",
			"--concurrency", "32",
			"--min-idle", cfg.MinIdle.String(),
			"--heartbeat-interval", (cfg.MinIdle / 5).String(),
			"--claim-interval", "500ms",
			"--max-deliveries", "1000",
			"--job-timeout", "0",
			"--event-retention", "0",
			"--poll-initial", "50ms",
			"--poll-max", "500ms",
			"--runpod-request-timeout", "5s",
			"--shutdown-timeout", "2s",
			"--http-addr", "",
			"--log-level", "warn",
		}}
		s.pool = append(s.pool, w)
	}
	defer func() {
		for _, w := range s.pool {
			w.kill()
		}
	}()
	for _, w := range s.pool {
		if err := w.start(); err != nil {
			return Summary{}, err
		}
		s.workerRuns++
	}

	specs := makeMix(newRand(cfg.Seed), cfg.Jobs, cfg.Kinds)
	s.facts = make([]JobFacts, len(specs))
	for i, sp := range specs {
		s.facts[i].Spec = sp
	}

	liveCtx, stopLive := context.WithCancel(ctx)
	liveDone := make(chan struct{})
	go func() { defer close(liveDone); s.liveReader(liveCtx) }()

	// Phase 1: submit at the rate while the chaos runs; the chaos goes on
	// a little past the last submission so late jobs meet it too.
	phaseCtx, stopPhase := context.WithTimeout(ctx, cfg.Duration)
	defer stopPhase()
	chaosCtx, stopChaos := context.WithCancel(phaseCtx)
	var chaosWG sync.WaitGroup
	chaosWG.Add(1)
	go func() { defer chaosWG.Done(); s.chaos(chaosCtx, &chaosWG) }()
	progCtx, stopProg := context.WithCancel(ctx)
	go s.progress(progCtx)
	defer stopProg()

	var cancelWG sync.WaitGroup
	s.submitAll(phaseCtx, &cancelWG)
	s.logf("submitted %d of %d jobs", s.submitted.Load(), cfg.Jobs)
	tail := max(5*time.Second, 4*cfg.MinIdle)
	select {
	case <-time.After(tail):
	case <-phaseCtx.Done():
	}
	stopChaos()
	chaosWG.Wait()
	s.calm(ctx)
	s.logf("chaos stopped: %v", s.faultCounts())

	// Phase 2: drain, then let stray Runpod jobs of fast kinds finish so
	// only untracked long ones still run.
	cancelWG.Wait()
	s.drain(ctx)
	select {
	case <-time.After(4 * time.Second):
	case <-ctx.Done():
	}
	for _, w := range s.pool {
		if w.alive() {
			_ = w.signal(syscall.SIGTERM)
		}
	}
	for _, w := range s.pool {
		if !w.waitExit(20 * time.Second) {
			s.logf("worker %s did not stop within 20s of SIGTERM; killing it", w.instanceID())
			w.kill()
		}
	}

	// Phase 3: read the truth from Redis and the simulator, then stop the
	// live reader once it has caught up with the final stream.
	in, err := s.collect(ctx)
	if err != nil {
		stopLive()
		<-liveDone
		return Summary{}, err
	}
	s.waitLive(ctx, in.EndPosition)
	stopLive()
	<-liveDone
	s.mu.Lock()
	in.Live = append([]client.Event(nil), s.live...)
	s.mu.Unlock()
	rep := Check(in)

	sum := Summary{
		OK: rep.OK(), Seed: cfg.Seed, Jobs: cfg.Jobs, Submitted: int(s.submitted.Load()), Workers: cfg.Workers, Partitions: cfg.Partitions,
		Seconds: float64(time.Since(s.started).Milliseconds()) / 1000, Fsync: cfg.Fsync, AOFCutMs: cfg.AOFCut.Milliseconds(),
		Chaos: cfg.Chaos, Report: rep, Faults: s.faultCounts(), FaultsInjected: s.sim.Stats().FaultsInjected,
		RedisRestarts: s.faultCounts()[DisruptRedis], AOFBytesCut: s.aofCut, WorkerStarts: s.workerRuns,
		ViolationCount: len(rep.Violations), Violations: rep.Violations, ByKind: map[string]int{},
	}
	for _, k := range cfg.Kinds {
		sum.Kinds = append(sum.Kinds, string(k))
	}
	for _, f := range s.facts {
		sum.ByKind[string(f.Spec.Kind)]++
		if f.Spec.CancelAfter > 0 && !f.CancelRequested && f.Acked {
			sum.CancelsNot++
		}
	}
	if len(sum.Violations) > maxListed {
		sum.Violations = sum.Violations[:maxListed]
	}
	if sum.Violations == nil {
		sum.Violations = []Violation{}
	}
	return sum, nil
}

func (s *soak) faultCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.faults))
	for k, v := range s.faults {
		out[k] = v
	}
	return out
}

// submitAll submits every job at the configured rate, retrying each until
// Redis acknowledges it (a retry after a lost reply finds it Existing), and
// schedules the cancels of the kinds that are cancelled.
func (s *soak) submitAll(ctx context.Context, cancelWG *sync.WaitGroup) {
	interval := time.Duration(float64(time.Second) / s.cfg.Rate)
	next := time.Now()
	for i := range s.facts {
		if d := time.Until(next); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		}
		next = next.Add(interval)
		sp := s.facts[i].Spec
		for {
			if ctx.Err() != nil {
				return
			}
			_, err := s.cli.Submit(ctx, client.SubmitOptions{ClientJobID: sp.ID, Input: sp.Input, Timeout: sp.Timeout})
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		s.mu.Lock()
		s.facts[i].Acked = true
		s.mu.Unlock()
		s.submitted.Add(1)
		if sp.CancelAfter > 0 {
			cancelWG.Add(1)
			go func() {
				defer cancelWG.Done()
				s.cancelLater(ctx, i, sp)
			}()
		}
	}
}

// cancelLater cancels job i after its CancelAfter, retrying until Redis
// answers; a cancel is "requested" only if the job was not yet terminal.
func (s *soak) cancelLater(ctx context.Context, i int, sp JobSpec) {
	select {
	case <-time.After(sp.CancelAfter):
	case <-ctx.Done():
	}
	for {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := s.cli.Cancel(cctx, sp.ID)
		cancel()
		if err == nil {
			if !st.Terminal() {
				s.mu.Lock()
				s.facts[i].CancelRequested = true
				s.mu.Unlock()
			}
			return
		}
		if errors.Is(err, workflow.ErrJobNotFound) {
			return // a lost job: the checker reports it
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// liveReader follows the events streams from the start for the whole soak,
// resuming from the subscription's position (one id per partition: an
// event's id alone would apply to every partition) whenever Redis goes
// away.
func (s *soak) liveReader(ctx context.Context) {
	after := client.FromStart
	for ctx.Err() == nil {
		sub, err := s.cli.NewSubscription(ctx, client.EventsOptions{From: after})
		if err == nil {
			_ = sub.Run(ctx, func(ev client.Event) error {
				s.mu.Lock()
				s.live = append(s.live, ev)
				s.livePos = sub.Position()
				s.mu.Unlock()
				if ev.Type.Terminal() {
					s.terminal.Add(1)
				}
				return nil
			})
			after = sub.Position()
		}
		if ctx.Err() != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitLive waits (bounded) until the live reader's position is the final
// streams' end (final, from Client.Position once the workers stopped).
func (s *soak) waitLive(ctx context.Context, final string) {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		s.mu.Lock()
		caught := reached(s.livePos, final)
		s.mu.Unlock()
		if caught {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reached reports whether position pos (one stream id per partition,
// comma-separated) is at or past end in every partition.
func reached(pos, end string) bool {
	p, e := strings.Split(pos, ","), strings.Split(end, ",")
	if len(p) != len(e) {
		return false
	}
	for i := range p {
		if streamIDLess(p[i], e[i]) {
			return false
		}
	}
	return true
}

// streamIDLess orders stream ids ("ms-seq", "ms" or "0") numerically.
func streamIDLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	an, _ := strconv.ParseUint(am, 10, 64)
	bn, _ := strconv.ParseUint(bm, 10, 64)
	if an != bn {
		return an < bn
	}
	aq, _ := strconv.ParseUint(as, 10, 64)
	bq, _ := strconv.ParseUint(bs, 10, 64)
	return aq < bq
}

// progress prints a line every 10s.
func (s *soak) progress(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.mu.Lock()
			live := len(s.live)
			s.mu.Unlock()
			s.logf("submitted %d/%d, terminal %d, live events %d, chaos %v", s.submitted.Load(), s.cfg.Jobs, s.terminal.Load(), live, s.faultCounts())
		}
	}
}

// drain waits until every acknowledged job's record is terminal, or Drain.
func (s *soak) drain(ctx context.Context) {
	deadline := time.Now().Add(s.cfg.Drain)
	open := map[string]bool{}
	s.mu.Lock()
	for _, f := range s.facts {
		if f.Acked {
			open[f.Spec.ID] = true
		}
	}
	s.mu.Unlock()
	total := len(open)
	for len(open) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		for id := range open {
			rec, err := s.store.For(id).Get(ctx, id)
			if err == nil && workflow.State(rec.State).Terminal() {
				delete(open, id)
			}
		}
		if len(open) > 0 {
			time.Sleep(time.Second)
		}
	}
	s.logf("drain: %d of %d jobs terminal", total-len(open), total)
}

// collect reads the final records, events, pending count and the
// simulator's ledger.
func (s *soak) collect(ctx context.Context) (CheckInput, error) {
	in := CheckInput{Replies: s.front.snapshot(), CrashWindow: s.cfg.CrashWindow}
	s.mu.Lock()
	in.Disruptions = append([]Disruption(nil), s.disruptions...)
	facts := append([]JobFacts(nil), s.facts...)
	s.mu.Unlock()
	for i := range facts {
		if !facts[i].Acked {
			continue
		}
		rec, err := s.store.For(facts[i].Spec.ID).Get(ctx, facts[i].Spec.ID)
		switch {
		case err == nil:
			facts[i].Record = &rec
		case !errors.Is(err, streams.ErrNotFound):
			return in, fmt.Errorf("soak: read record %s: %w", facts[i].Spec.ID, err)
		}
	}
	in.Jobs = facts
	for ev, err := range s.cli.Events(ctx, client.EventsOptions{From: client.FromStart, StopAtEnd: true}) {
		if err != nil {
			return in, fmt.Errorf("soak: read the events stream: %w", err)
		}
		in.Events = append(in.Events, ev)
	}
	var err error
	if in.EndPosition, err = s.cli.Position(ctx); err != nil {
		return in, fmt.Errorf("soak: read the events streams' end: %w", err)
	}
	for _, st := range s.store.All() {
		p, err := st.Pending(ctx)
		if err != nil {
			return in, err
		}
		in.Pending += p
	}
	in.Sim = s.sim.Jobs()
	return in, nil
}
