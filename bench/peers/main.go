// Command peers compares runpod-orchestrator with asynq on one machine in
// one run: it starts a redis-server (no persistence) per round, and on it
// drains a pre-filled queue of --jobs no-op tasks with asynq (concurrency
// 50) and --jobs jobs with our bench (internal/bench in-process, the Runpod
// stand-in), alternating which goes first, for --rounds rounds. It prints
// the median of each figure for both and their ratio as one JSON line on
// stdout, then a readable table; progress goes to stderr.
//
// It is its own Go module (bench/peers/go.mod) so the library never
// depends on asynq; the main module's `go test ./...` does not build it.
// Compare ratios only: absolute rates move with the machine.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/internal/bench"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	jobs, rounds, concurrency, maxInFlight int
	pollInitial                            time.Duration
	redisServer                            string
	quiet                                  bool
	// callgrind, when set, is the directory of a --callgrind run's dumps.
	callgrind    string
	profileBatch int
	scriptsOnly  bool
}

// figures is one side's measurement of one round. Drain figures cover the
// workers from start to the last outcome; submit figures the pre-fill.
type figures struct {
	JobsPerSec          float64            `json:"jobs_per_sec"`
	RedisCmdsPerJob     float64            `json:"redis_cmds_per_job"`
	RedisCPUUsPerJob    float64            `json:"redis_cpu_us_per_job"`
	SubmitCmdsPerJob    float64            `json:"submit_redis_cmds_per_job"`
	SubmitCPUUsPerJob   float64            `json:"submit_redis_cpu_us_per_job"`
	HappyPathCmdsPerJob float64            `json:"happy_path_redis_cmds_per_job"`
	ProcessCPUUsPerJob  float64            `json:"process_cpu_us_per_job"`
	Commands            map[string]float64 `json:"commands_per_job,omitempty"`
}

type report struct {
	Jobs        int                `json:"jobs"`
	Rounds      int                `json:"rounds"`
	Concurrency int                `json:"asynq_concurrency"`
	MaxInFlight int                `json:"ours_max_in_flight"`
	Redis       string             `json:"redis"`
	CPUs        int                `json:"cpus"`
	Ours        figures            `json:"ours"`
	Asynq       figures            `json:"asynq"`
	Ratio       map[string]float64 `json:"ratio_ours_to_asynq"`
	RoundsOurs  []figures          `json:"rounds_ours"`
	RoundsAsynq []figures          `json:"rounds_asynq"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.jobs, "jobs", 20000, "jobs (tasks) per side and round")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each figure is the median over them")
	fs.IntVar(&o.concurrency, "concurrency", 50, "asynq's Concurrency")
	fs.IntVar(&o.maxInFlight, "max-in-flight", 5000, "our worker's MaxInFlight")
	fs.DurationVar(&o.pollInitial, "poll-initial", time.Millisecond, "our worker's first /status delay")
	fs.StringVar(&o.redisServer, "redis-server", "redis-server", "the redis-server binary to start")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress on stderr")
	fs.StringVar(&o.callgrind, "callgrind", "", "count the server's instructions instead of timing it: one round with redis-server under\n"+
		"valgrind --tool=callgrind, its dumps in this directory; prints instructions per job for each phase and each script")
	fs.IntVar(&o.profileBatch, "profile-batch", bench.ProfileBatchDefault, "--callgrind: batch size of the per-script phases")
	fs.BoolVar(&o.scriptsOnly, "scripts-only", false, "--callgrind: only our per-script phases (quicker, to compare script changes)")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.jobs <= 0 || o.rounds <= 0 || o.concurrency <= 0 {
		fmt.Fprintln(stderr, "peers: --jobs, --rounds and --concurrency must be at least 1")
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if o.callgrind != "" {
		rep, err := countInstructions(ctx, o, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "peers:", err)
			return 1
		}
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			fmt.Fprintln(stderr, "peers:", err)
			return 1
		}
		printInstructions(stdout, rep)
		return 0
	}
	rep, err := compare(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "peers:", err)
		return 1
	}
	if err := json.NewEncoder(stdout).Encode(rep); err != nil {
		fmt.Fprintln(stderr, "peers:", err)
		return 1
	}
	printTable(stdout, rep)
	return 0
}

func compare(ctx context.Context, o options, stderr io.Writer) (report, error) {
	progress := func(format string, a ...any) {
		if !o.quiet {
			fmt.Fprintf(stderr, "peers: "+format+"\n", a...)
		}
	}
	rep := report{Jobs: o.jobs, Rounds: o.rounds, Concurrency: o.concurrency, MaxInFlight: o.maxInFlight, CPUs: runtime.NumCPU()}
	for r := range o.rounds {
		srv, err := startRedis(ctx, o.redisServer, "")
		if err != nil {
			return rep, err
		}
		rep.Redis = srv.version
		sides := []string{"asynq", "ours"}
		if r%2 == 1 {
			sides = []string{"ours", "asynq"}
		}
		for _, side := range sides {
			if err := srv.rdb.FlushAll(ctx).Err(); err != nil {
				srv.stop()
				return rep, err
			}
			runtime.GC()
			progress("round %d/%d: %s, %d jobs", r+1, o.rounds, side, o.jobs)
			var f figures
			if side == "asynq" {
				f, err = runAsynq(ctx, o, srv, progress, nil)
				rep.RoundsAsynq = append(rep.RoundsAsynq, f)
			} else {
				f, err = runOurs(ctx, o, srv, progress, nil)
				rep.RoundsOurs = append(rep.RoundsOurs, f)
			}
			if err != nil {
				srv.stop()
				return rep, fmt.Errorf("round %d, %s: %w", r+1, side, err)
			}
			progress("round %d/%d: %s: %.0f jobs/s, %.1f Redis cmds/job (+%.1f submit), %.0f µs Redis CPU/job",
				r+1, o.rounds, side, f.JobsPerSec, f.RedisCmdsPerJob, f.SubmitCmdsPerJob, f.RedisCPUUsPerJob)
		}
		srv.stop()
	}
	rep.Ours, rep.Asynq = median(rep.RoundsOurs), median(rep.RoundsAsynq)
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return round(a/b, 2)
	}
	rep.Ratio = map[string]float64{
		"jobs_per_sec":                  ratio(rep.Ours.JobsPerSec, rep.Asynq.JobsPerSec),
		"redis_cmds_per_job":            ratio(rep.Ours.RedisCmdsPerJob, rep.Asynq.RedisCmdsPerJob),
		"happy_path_redis_cmds_per_job": ratio(rep.Ours.HappyPathCmdsPerJob, rep.Asynq.HappyPathCmdsPerJob),
		"redis_cpu_us_per_job":          ratio(rep.Ours.RedisCPUUsPerJob, rep.Asynq.RedisCPUUsPerJob),
		"process_cpu_us_per_job":        ratio(rep.Ours.ProcessCPUUsPerJob, rep.Asynq.ProcessCPUUsPerJob),
	}
	return rep, nil
}

func runOurs(ctx context.Context, o options, srv *redisServer, progress func(string, ...any),
	mark func(string) error) (figures, error) {
	last := time.Now()
	res, err := bench.Run(ctx, bench.Options{
		RedisURL: srv.url(), Namespace: "peers", Jobs: o.jobs, Prefill: true, Mark: mark,
		Runpod: bench.RunpodStandin, Submit: bench.SubmitClient,
		Worker: ourWorker(o),
		Progress: func(done, total int) {
			if time.Since(last) >= 2*time.Second {
				last = time.Now()
				progress("  ours %d/%d", done, total)
			}
		},
	})
	if err != nil {
		return figures{}, err
	}
	if res.Outcomes["COMPLETED"] != o.jobs {
		return figures{}, fmt.Errorf("outcomes %v, want %d COMPLETED", res.Outcomes, o.jobs)
	}
	return figures{
		JobsPerSec: res.JobsPerS, RedisCmdsPerJob: res.RedisCmdsPerJob, RedisCPUUsPerJob: res.RedisCPUUsPerJob,
		SubmitCmdsPerJob: res.SubmitRedisCmdsPerJob, SubmitCPUUsPerJob: res.SubmitRedisCPUUsPerJob,
		HappyPathCmdsPerJob: res.SubmitRedisCmdsPerJob + res.RedisCmdsPerJob,
		ProcessCPUUsPerJob:  res.ProcessCPUUsPerJob, Commands: res.Commands,
	}, nil
}

// ourWorker is the worker configuration of our side. Under --callgrind
// the server runs tens of times slower, so a drain lasts minutes instead
// of seconds: the lease timers (heartbeats, claim passes, which at full
// speed do not fire during a drain) are pushed past its end, so the count
// is of the work per job and not of the wall-clock time valgrind adds.
func ourWorker(o options) worker.Config {
	cfg := worker.Config{MaxInFlight: o.maxInFlight, Poll: workflow.PollPolicy{Initial: o.pollInitial}}
	if o.callgrind != "" {
		cfg.MinIdle, cfg.HeartbeatInterval, cfg.ClaimInterval = 3*time.Hour, time.Hour, time.Hour
	}
	return cfg
}

// runAsynq enqueues o.jobs tasks, then starts an asynq server with a no-op
// handler and measures until every task is processed and its completion
// written (the active list empty).
func runAsynq(ctx context.Context, o options, srv *redisServer, progress func(string, ...any),
	mark func(string) error) (figures, error) {
	if mark == nil {
		mark = func(string) error { return nil }
	}
	ropt := asynq.RedisClientOpt{Addr: srv.addr, ReadTimeout: srv.timeout, WriteTimeout: srv.timeout}
	cl := asynq.NewClient(ropt)
	defer cl.Close()
	s0, err := stats(ctx, srv.rdb)
	if err != nil {
		return figures{}, err
	}
	if err := mark("enqueue"); err != nil {
		return figures{}, err
	}
	for i := range o.jobs {
		// The same payload as our bench's jobs.
		t := asynq.NewTask("noop", []byte(`{"job":"bench-`+strconv.Itoa(i)+`"}`))
		if _, err := cl.EnqueueContext(ctx, t); err != nil {
			return figures{}, fmt.Errorf("enqueue: %w", err)
		}
	}
	s1, err := stats(ctx, srv.rdb)
	if err != nil {
		return figures{}, err
	}

	var done atomic.Int64
	all := make(chan struct{})
	n := int64(o.jobs)
	server := asynq.NewServer(ropt, asynq.Config{
		Concurrency: o.concurrency,
		Logger:      nopLogger{},
		LogLevel:    asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("noop", func(context.Context, *asynq.Task) error {
		if done.Add(1) == n {
			close(all)
		}
		return nil
	})
	if err := mark("drain"); err != nil {
		return figures{}, err
	}
	cpu0 := processCPU()
	start := time.Now()
	if err := server.Start(mux); err != nil {
		return figures{}, err
	}
	defer server.Shutdown()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			return figures{}, ctx.Err()
		case <-all:
			break wait
		case <-tick.C:
			progress("  asynq %d/%d", done.Load(), n)
		}
	}
	// The last handlers returned; their completions are written once the
	// active list is empty.
	for {
		active, err := srv.rdb.LLen(ctx, "asynq:{default}:active").Result()
		if err != nil {
			return figures{}, err
		}
		if active == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu1 := processCPU()
	if err := mark(""); err != nil {
		return figures{}, err
	}
	s2, err := stats(ctx, srv.rdb)
	if err != nil {
		return figures{}, err
	}
	if pending, _ := srv.rdb.LLen(ctx, "asynq:{default}:pending").Result(); pending != 0 {
		return figures{}, fmt.Errorf("%d tasks still pending", pending)
	}
	jf := float64(o.jobs)
	drain, submit := s2.sub(s1), s1.sub(s0)
	f := figures{
		JobsPerSec:         jf / elapsed.Seconds(),
		RedisCmdsPerJob:    float64(drain.total()) / jf,
		RedisCPUUsPerJob:   drain.cpuSec * 1e6 / jf,
		SubmitCmdsPerJob:   float64(submit.total()) / jf,
		SubmitCPUUsPerJob:  submit.cpuSec * 1e6 / jf,
		ProcessCPUUsPerJob: float64((cpu1 - cpu0).Microseconds()) / jf,
		Commands:           map[string]float64{},
	}
	f.HappyPathCmdsPerJob = f.SubmitCmdsPerJob + f.RedisCmdsPerJob
	for k, v := range drain.calls {
		f.Commands[k] = float64(v) / jf
	}
	return f, nil
}

// serverStats: INFO commandstats calls (Lua's inner commands included) and
// used_cpu_sys + used_cpu_user.
type serverStats struct {
	calls  map[string]int64
	cpuSec float64
}

func stats(ctx context.Context, rdb *redis.Client) (serverStats, error) {
	st := serverStats{calls: map[string]int64{}}
	info, err := rdb.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		return st, fmt.Errorf("INFO: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(name, "cmdstat_"):
			for _, kv := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(kv, "calls="); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					st.calls[strings.TrimPrefix(name, "cmdstat_")] = n
				}
			}
		case name == "used_cpu_sys" || name == "used_cpu_user":
			f, _ := strconv.ParseFloat(rest, 64)
			st.cpuSec += f
		}
	}
	return st, nil
}

// sub is what ran between two readings, less the later reading's INFO.
func (a serverStats) sub(b serverStats) serverStats {
	d := serverStats{calls: map[string]int64{}, cpuSec: a.cpuSec - b.cpuSec}
	for k, v := range a.calls {
		if n := v - b.calls[k]; n > 0 {
			d.calls[k] = n
		}
	}
	if d.calls["info"] > 0 {
		d.calls["info"]--
	}
	return d
}

func (a serverStats) total() int64 {
	var n int64
	for _, v := range a.calls {
		n += v
	}
	return n
}

type redisServer struct {
	cmd     *exec.Cmd
	addr    string
	version string
	rdb     *redis.Client
	// timeout is the clients' read and write timeout: 0 (go-redis's
	// default) but under valgrind, where the server runs tens of times
	// slower and a large admit batch takes seconds.
	timeout time.Duration
}

// url is the server's address for internal/bench, with the timeout.
func (s *redisServer) url() string {
	if s.timeout == 0 {
		return "redis://" + s.addr
	}
	return fmt.Sprintf("redis://%s?read_timeout=%s&write_timeout=%s", s.addr, s.timeout, s.timeout)
}

// startRedis starts a redis-server without persistence on a free loopback
// port and waits until it answers; with callgrindOut, under valgrind's
// callgrind writing its counts there.
func startRedis(ctx context.Context, bin, callgrindOut string) (*redisServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	args := []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--logfile", ""}
	var timeout time.Duration
	tries := 200
	if callgrindOut != "" {
		args = append([]string{"valgrind", "--tool=callgrind", "--callgrind-out-file=" + callgrindOut}, args...)
		timeout, tries = 2*time.Minute, 2400
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	s := &redisServer{cmd: cmd, addr: "127.0.0.1:" + strconv.Itoa(port), timeout: timeout}
	s.rdb = redis.NewClient(&redis.Options{Addr: s.addr, ReadTimeout: timeout, WriteTimeout: timeout})
	for i := 0; ; i++ {
		info, err := s.rdb.Info(ctx, "server").Result()
		if err == nil {
			for _, line := range strings.Split(info, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
					s.version = v
				}
			}
			return s, nil
		}
		if i == tries {
			s.stop()
			return nil, fmt.Errorf("redis-server on %s: %w", s.addr, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (s *redisServer) stop() {
	s.rdb.Close()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	_ = s.cmd.Wait()
}

// median takes each figure's median over the rounds independently.
func median(rs []figures) figures {
	pick := func(get func(figures) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		slices.Sort(v)
		if len(v) == 0 {
			return 0
		}
		m := v[len(v)/2]
		if len(v)%2 == 0 {
			m = (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		return round(m, 2)
	}
	return figures{
		JobsPerSec:          pick(func(f figures) float64 { return f.JobsPerSec }),
		RedisCmdsPerJob:     pick(func(f figures) float64 { return f.RedisCmdsPerJob }),
		RedisCPUUsPerJob:    pick(func(f figures) float64 { return f.RedisCPUUsPerJob }),
		SubmitCmdsPerJob:    pick(func(f figures) float64 { return f.SubmitCmdsPerJob }),
		SubmitCPUUsPerJob:   pick(func(f figures) float64 { return f.SubmitCPUUsPerJob }),
		HappyPathCmdsPerJob: pick(func(f figures) float64 { return f.HappyPathCmdsPerJob }),
		ProcessCPUUsPerJob:  pick(func(f figures) float64 { return f.ProcessCPUUsPerJob }),
	}
}

func round(f float64, digits int) float64 {
	p, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', digits, 64), 64)
	return p
}

func printTable(w io.Writer, r report) {
	fmt.Fprintf(w, "\n%d jobs, %d rounds (median), redis %s, %d CPUs; asynq concurrency %d, ours MaxInFlight %d with the stand-in\n\n",
		r.Jobs, r.Rounds, r.Redis, r.CPUs, r.Concurrency, r.MaxInFlight)
	fmt.Fprintf(w, "%-44s %12s %12s %8s\n", "", "ours", "asynq", "ratio")
	row := func(name string, a, b float64, key string) {
		fmt.Fprintf(w, "%-44s %12.1f %12.1f %7.2fx\n", name, a, b, r.Ratio[key])
	}
	row("drain, jobs/s", r.Ours.JobsPerSec, r.Asynq.JobsPerSec, "jobs_per_sec")
	row("Redis commands per job, drain", r.Ours.RedisCmdsPerJob, r.Asynq.RedisCmdsPerJob, "redis_cmds_per_job")
	row("Redis commands per job, submit + drain", r.Ours.HappyPathCmdsPerJob, r.Asynq.HappyPathCmdsPerJob, "happy_path_redis_cmds_per_job")
	row("Redis CPU µs per job, drain", r.Ours.RedisCPUUsPerJob, r.Asynq.RedisCPUUsPerJob, "redis_cpu_us_per_job")
	row("process CPU µs per job, drain", r.Ours.ProcessCPUUsPerJob, r.Asynq.ProcessCPUUsPerJob, "process_cpu_us_per_job")
	fmt.Fprintf(w, "%-44s %12.1f %12.1f\n", "Redis CPU µs per job, submit", r.Ours.SubmitCPUUsPerJob, r.Asynq.SubmitCPUUsPerJob)
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// nopLogger silences asynq.
type nopLogger struct{}

func (nopLogger) Debug(...any) {}
func (nopLogger) Info(...any)  {}
func (nopLogger) Warn(...any)  {}
func (nopLogger) Error(...any) {}
func (nopLogger) Fatal(...any) {}
