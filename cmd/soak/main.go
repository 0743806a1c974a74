// Command soak proves the orchestrator's guarantees under compound faults:
// it starts a real redis-server with AOF, the Runpod simulator on loopback
// and N real worker processes (the cmd/worker binary), submits a mix of
// jobs, and meanwhile SIGKILLs, pauses past the lease and SIGTERMs workers,
// kill -9s redis-server and changes the simulator's faults. Then it checks
// the final history from Redis and the simulator's ledger, prints one JSON
// summary line on stdout, and exits 1 on any violation.
//
//	go run ./cmd/soak --jobs 1000 --seed 1
//	go run ./cmd/soak --jobs 20000 --workers 6 --seed 7 --rate 40
//	go run ./cmd/soak --jobs 300 --partitions 3
//
// See docs/reliability.md for what it checks and how to read the summary.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/internal/cmdutil"
	"github.com/yourscope/runpod-orchestrator/internal/soak"
)

const workerPkg = "github.com/yourscope/runpod-orchestrator/cmd/worker"

func main() {
	// go-redis logs every failed dial; the soak kills redis-server on purpose.
	redis.SetLogger(quietLogger{})
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the command; it returns the exit status: 0 clean, 1 a violation,
// 2 a usage error, 3 a soak that could not run.
func run(args []string, stdout, stderr io.Writer) int {
	if cmdutil.WantsVersion(args) {
		fmt.Fprintln(stdout, cmdutil.Line("soak"))
		return 0
	}
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: soak [flags]

Starts redis-server (AOF), the Runpod simulator and worker processes on
loopback, submits a mix of jobs under chaos, checks the final history from
Redis and the simulator's ledger, and prints one JSON summary line. Exit
status: 0 clean, 1 a violation, 2 a usage error, 3 the soak could not run.
See docs/reliability.md.

`)
		cmdutil.PrintDefaults(stderr, fs)
	}
	var (
		cfg                 soak.Config
		chaos, kinds        string
		quiet               bool
		duration, drain     time.Duration
		interval, minIdle   time.Duration
		crashWindow, aofCut time.Duration
	)
	fs.IntVar(&cfg.Jobs, "jobs", 1000, "jobs to submit")
	fs.IntVar(&cfg.Workers, "workers", 4, "worker processes running at once (1..64)")
	fs.IntVar(&cfg.Partitions, "partitions", 1, "the namespace's partition count (1..64): every worker runs with --partitions N and serves them all; the checker reads every partition")
	fs.Int64Var(&cfg.Seed, "seed", 1, "fixes the job mix and the chaos schedule (not the processes' interleavings)")
	fs.DurationVar(&duration, "duration", 30*time.Minute, "cap of the submit-and-chaos phase; jobs not submitted by then are skipped")
	fs.DurationVar(&drain, "drain", 3*time.Minute, "cap of the wait for every job to end once the chaos stopped")
	fs.Float64Var(&cfg.Rate, "rate", 25, "submissions per second")
	fs.StringVar(&cfg.Fsync, "fsync", "always", "redis-server appendfsync: always, everysec or no")
	fs.DurationVar(&aofCut, "aof-cut", 0, "simulate an OS crash at each redis-server kill: cut the AOF back to its size this long before (e.g. 1s with --fsync everysec); 0 kills the process only")
	fs.StringVar(&chaos, "chaos", "on", "chaos kinds: on, off, or a comma-separated list of kill,stop,term,redis,5xx,429,latency,drop,run-after")
	fs.DurationVar(&interval, "chaos-interval", 1500*time.Millisecond, "mean time between chaos actions")
	fs.StringVar(&kinds, "kinds", "all", "job kinds: all, or a comma-separated list of fast,slow,progress,fail,crash_once,crash_always,cancel,timeout,cancel_race")
	fs.DurationVar(&minIdle, "min-idle", 2*time.Second, "the workers' lease (--min-idle of cmd/worker); pauses last longer than this")
	fs.DurationVar(&crashWindow, "crash-window", 3*time.Second, "how long after a /run answer a disruption of its worker or of Redis explains an extra Runpod job")
	fs.StringVar(&cfg.WorkerBin, "worker-bin", "", "cmd/worker binary to run (default: go build it from this module)")
	fs.StringVar(&cfg.RedisServer, "redis-server", "redis-server", "redis-server binary")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for redis-server's files and the logs (default: a temporary one, removed after a clean run)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the directory after a clean run")
	fs.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return cmdutil.ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "soak: unexpected argument %q\n", fs.Arg(0))
		return cmdutil.ExitUsage
	}
	if cfg.Partitions < 1 { // 0 would mean the default in soak.Config
		fmt.Fprintln(stderr, "soak: --partitions must be 1..64")
		return cmdutil.ExitUsage
	}
	var err error
	if cfg.Chaos, err = soak.ParseChaos(chaos); err != nil {
		fmt.Fprintln(stderr, "soak: --chaos:", err)
		return cmdutil.ExitUsage
	}
	if cfg.Kinds, err = soak.ParseKinds(kinds); err != nil {
		fmt.Fprintln(stderr, "soak: --kinds:", err)
		return cmdutil.ExitUsage
	}
	cfg.Duration, cfg.Drain, cfg.ChaosInterval, cfg.MinIdle, cfg.CrashWindow, cfg.AOFCut = duration, drain, interval, minIdle, crashWindow, aofCut
	if !quiet {
		cfg.Progress = stderr
	}
	check := cfg.WithDefaults()
	if check.WorkerBin == "" {
		check.WorkerBin = "(built below)"
	}
	if err := check.Validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return cmdutil.ExitUsage
	}

	if cfg.WorkerBin == "" {
		dir, err := os.MkdirTemp("", "runpod-soak-bin-")
		if err != nil {
			fmt.Fprintln(stderr, "soak:", err)
			return 3
		}
		defer os.RemoveAll(dir)
		cfg.WorkerBin = filepath.Join(dir, "worker")
		build := exec.Command("go", "build", "-o", cfg.WorkerBin, workerPkg)
		build.Stdout, build.Stderr = stderr, stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(stderr, "soak: go build %s: %v (run from the module, or pass --worker-bin)\n", workerPkg, err)
			return 3
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := soak.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 3
	}
	line, err := json.Marshal(sum)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 3
	}
	fmt.Fprintln(stdout, string(line))
	if !sum.OK {
		for _, v := range sum.Violations {
			fmt.Fprintf(stderr, "soak: violation %s job %s: %s\n", v.Kind, v.JobID, v.Detail)
		}
		if sum.Dir != "" {
			fmt.Fprintf(stderr, "soak: logs and redis-server files kept in %s\n", sum.Dir)
		}
		return 1
	}
	return 0
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
