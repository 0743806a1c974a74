// Command bench measures runpod-orchestrator end to end on one Redis
// server: it submits --jobs jobs (through the client or by raw XADD), runs
// them with in-process workers against a Runpod stand-in or the HTTP
// simulator, waits for every outcome, and prints one JSON line with the
// rate, the exact Redis commands per job (INFO commandstats, inside Lua
// included), Redis and process CPU per job, round trips, allocations,
// latency percentiles and RSS. With --hold it keeps the jobs in flight and
// reports what keeping them alive costs per 1,000 jobs. Progress goes to
// stderr. See docs/performance.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/yourscope/runpod-orchestrator/internal/bench"
	"github.com/yourscope/runpod-orchestrator/internal/cmdutil"
	"github.com/yourscope/runpod-orchestrator/internal/redisconn"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if cmdutil.WantsVersion(args) {
		fmt.Fprintln(stdout, cmdutil.Line("bench"))
		return 0
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o           bench.Options
		maxInFlight = fs.Int("max-in-flight", 5000, "jobs each worker owns at once (worker MaxInFlight; 0 = the worker's default)")
		concurrency = fs.Int("concurrency", 0, "Runpod calls in flight per worker (0 = worker default)")
		pollInitial = fs.Duration("poll-initial", time.Millisecond, "first /status delay after /run before a turnaround is learned (worker Poll.Initial; 0 = the worker's default)")
		timeout     = fs.Duration("timeout", 10*time.Minute, "give up after this long")
		quiet       = fs.Bool("quiet", false, "no progress on stderr")
		cpuProfile  = fs.String("cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
		memProfile  = fs.String("memprofile", "", "write an allocation profile of the run to this file (go tool pprof -sample_index=alloc_space)")
	)
	// The default may come from REDIS_URL with a password: printed redacted.
	o.RedisURL = envOr("REDIS_URL", "redis://localhost:6379/0")
	fs.Var(redisconn.URLValue(&o.RedisURL), "redis-url", "the Redis server to measure (its namespace is cleared first) [REDIS_URL]")
	fs.StringVar(&o.Namespace, "namespace", "bench", "key namespace used and cleared by the run")
	fs.IntVar(&o.Jobs, "jobs", 10000, "jobs to run")
	fs.IntVar(&o.Workers, "workers", 1, "in-process workers")
	fs.IntVar(&o.Partitions, "partitions", 1, "the namespace's partition count (a Cluster spreads them over its masters)")
	fs.StringVar(&o.Runpod, "runpod", bench.RunpodStandin, "Runpod back end: standin (in-process) or sim (HTTP simulator on loopback)")
	fs.StringVar(&o.RunpodURL, "runpod-url", "", "with --runpod sim: the base URL of a simulator in another process (go run ./cmd/runpod-sim --endpoint-id bench --api-key bench-key --no-rate-limits --gpu-workers 10000 --mock-delay 1ms), so the process CPU excludes the server")
	fs.StringVar(&o.Submit, "submit", bench.SubmitClient, "submission path: client (client.Submit) or raw (XADD)")
	fs.BoolVar(&o.Prefill, "prefill", true, "submit every job before the workers start (measure a drain)")
	fs.Float64Var(&o.Rate, "rate", 0, "offer the jobs at this many per second (with --prefill=false) instead of as fast as possible")
	fs.BoolVar(&o.Hold, "hold", false, "keep every job in flight and measure the keep-alive cost (standin only)")
	fs.DurationVar(&o.HoldFor, "hold-for", 60*time.Second, "with --hold: how long to measure once all jobs are on Runpod")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: bench [flags]\n\nflags:")
		cmdutil.PrintDefaults(stderr, fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	o.Worker = worker.Config{MaxInFlight: *maxInFlight, Concurrency: *concurrency,
		Poll: workflow.PollPolicy{Initial: *pollInitial}}
	if o.Hold {
		// Keep-alive cost is about Redis: poll Runpod rarely.
		o.Worker.Poll = workflow.PollPolicy{Initial: time.Hour, Max: time.Hour}
	}
	if !*quiet {
		last := time.Time{}
		o.Progress = func(done, total int) {
			if time.Since(last) < time.Second && done < total {
				return
			}
			last = time.Now()
			fmt.Fprintf(stderr, "bench: %d/%d\n", done, total)
		}
	}
	conn, err := redisconn.Parse(redisconn.Options{URL: o.RedisURL})
	if err != nil {
		fmt.Fprintln(stderr, "bench: --redis-url:", err)
		return 2
	}
	o.NewClient = conn.Client
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "bench: --cpuprofile:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "bench: --cpuprofile:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		runtime.MemProfileRate = 64 << 10 // coarser than the default: the profile must not dominate allocs_per_job
		defer func() {
			f, err := os.Create(*memProfile)
			if err == nil {
				err = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
			if err != nil {
				fmt.Fprintln(stderr, "bench: --memprofile:", err)
			}
		}()
	}
	res, err := bench.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
