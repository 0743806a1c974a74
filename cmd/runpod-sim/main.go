// Command runpod-sim serves a simulated Runpod Serverless endpoint on
// loopback (package activities/runpodsim) until interrupted.
//
//	go run ./cmd/runpod-sim --addr 127.0.0.1:8089 --endpoint-id ID --api-key KEY
//
// It prints "runpod-sim: serving endpoint <id> at <baseURL>"; point a client's
// base URL (the https://api.runpod.ai/v2 equivalent) at <baseURL>. Faults can
// be set with --fault at start and changed at run time with POST /_sim/faults;
// counters are at GET /_sim/stats and every job at GET /_sim/jobs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/internal/cmdutil"
)

// addrDefault is the listen address when --addr is not given.
const addrDefault = "127.0.0.1:8089"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "runpod-sim:", err)
		var ue *usageError
		if errors.As(err, &ue) {
			os.Exit(cmdutil.ExitUsage)
		}
		os.Exit(1)
	}
}

// usageError is a command-line mistake: exit status 2, as in every command.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// run parses args, serves the simulator and returns when ctx is done. A
// request for help (-h) returns nil.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if cmdutil.WantsVersion(args) {
		fmt.Fprintln(stdout, cmdutil.Line("runpod-sim"))
		return nil
	}
	fs := flag.NewFlagSet("runpod-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg        runpodsim.Config
		addr       = fs.String("addr", addrDefault, "listen address (host:port; port 0 picks a free one)")
		faults     multiFlag
		rateLimits multiFlag
		logLevel   = fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	)
	fs.StringVar(&cfg.EndpointID, "endpoint-id", os.Getenv("RUNPOD_ENDPOINT_ID"), "endpoint id to serve (env RUNPOD_ENDPOINT_ID); required")
	fs.StringVar(&cfg.APIKey, "api-key", "", "accepted API key (default: env RUNPOD_API_KEY); required")
	fs.IntVar(&cfg.GPUWorkers, "gpu-workers", runpodsim.GPUWorkersDefault, "concurrent executions; later jobs wait IN_QUEUE")
	fs.DurationVar(&cfg.Retention, "retention", runpodsim.RetentionDefault, "how long a /run job is kept after it ends (simulated time)")
	fs.DurationVar(&cfg.SyncRetention, "sync-retention", runpodsim.SyncRetentionDefault, "how long a /runsync job is kept after it ends")
	fs.DurationVar(&cfg.MockDelay, "mock-delay", runpodsim.MockDelayDefault, "execution time of jobs without mock_delay")
	fs.DurationVar(&cfg.ColdStart, "cold-start", 0, "worker initialisation time before its first job (shows in delayTime)")
	fs.Float64Var(&cfg.TimeScale, "time-scale", 1, "speed of simulated time (10 = ten times faster than wall time)")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed for ids and fault draws (0 = random)")
	fs.StringVar(&cfg.ExecutionTimeoutOutcome, "exec-timeout-outcome", runpodsim.OutcomeTimedOut, "status of a job over its executionTimeout: TIMED_OUT or FAILED")
	fs.StringVar(&cfg.RateLimitRetryAfter, "retry-after", "", `Retry-After on rate-limit 429s: "" none, "auto" seconds left in the window, or a literal value`)
	fs.BoolVar(&cfg.DisableRateLimits, "no-rate-limits", false, "disable every rate and concurrency limit")
	fs.Var(&rateLimits, "rate-limit", "OP=N: requests per 10 s window for OP (0 = unlimited); repeatable")
	fs.Var(&faults, "fault", "OP:SETTING[,SETTING...]: inject faults into OP (or * for all); repeatable. Settings:\n"+
		"  CODE=P          answer HTTP CODE (429, 500, 502, 503, 504, ...) with probability P\n"+
		"  hang=P          hold the request until the client gives up\n"+
		"  drop=P          close the connection without answering\n"+
		"  invalid-json=P  answer 200 with a truncated body\n"+
		"  latency=D       add D (e.g. 50ms) to every request; jitter=D adds up to D more\n"+
		"  retry-after=V   Retry-After header on injected 429s (sent verbatim)\n"+
		"  script=A/B/...  scripted sequence of CODE, pass, hang, drop, invalid-json\n"+
		"  after           status/hang/drop happen after the operation took effect\n"+
		"e.g. --fault run:502=0.1,after --fault status:script=500/pass/429,retry-after=2")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: runpod-sim [flags]\n\nServes a simulated Runpod Serverless endpoint. Operations: %s.\nIntrospection: GET /_sim/stats, GET /_sim/jobs, GET /_sim/webhooks, GET|POST|DELETE /_sim/faults.\n\nFlags:\n",
			strings.Join(runpodsim.Ops, ", "))
		cmdutil.PrintDefaults(stderr, fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &usageError{err: fmt.Errorf("parse flags: %w", err)}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %q", fs.Args())
	}
	if cfg.APIKey == "" {
		cfg.APIKey = os.Getenv("RUNPOD_API_KEY")
	}
	if cfg.EndpointID == "" || cfg.APIKey == "" {
		return usagef("--endpoint-id and --api-key (or RUNPOD_API_KEY) are required")
	}
	for _, rl := range rateLimits {
		op, n, ok := strings.Cut(rl, "=")
		limit, err := strconv.Atoi(n)
		if !ok || err != nil {
			return usagef("--rate-limit %q: want OP=N", rl)
		}
		if cfg.RateLimits == nil {
			cfg.RateLimits = map[string]int{}
		}
		cfg.RateLimits[op] = limit
	}
	type opFaults struct {
		op string
		f  runpodsim.Faults
	}
	var parsed []opFaults
	for _, spec := range faults {
		op, f, err := runpodsim.ParseFaultSpec(spec)
		if err != nil {
			return &usageError{err: fmt.Errorf("--fault: %w", err)}
		}
		parsed = append(parsed, opFaults{op, f})
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "runpod-sim", Output: stderr, Level: hclog.LevelFromString(*logLevel)})

	// A bad value (say --gpu-workers -1) is a usage error, told apart from a
	// listen failure by validating the configuration on its own first.
	check, err := runpodsim.New(cfg)
	if err != nil {
		return &usageError{err: err}
	}
	check.Close()
	srv, err := runpodsim.Serve(*addr, cfg)
	if err != nil {
		return err
	}
	for _, p := range parsed {
		if err := srv.Sim.SetFaults(p.op, p.f); err != nil {
			return errors.Join(err, srv.Close())
		}
	}
	fmt.Fprintf(stdout, "runpod-sim: serving endpoint %s at %s\n", cfg.EndpointID, srv.URL)
	<-ctx.Done()
	st := srv.Sim.Stats()
	cfg.Logger.Info("stopping", "jobs_created", st.JobsCreated, "jobs_completed", st.JobsCompleted)
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		return err
	case <-closeCtx.Done():
		return fmt.Errorf("close: %w", closeCtx.Err())
	}
}
