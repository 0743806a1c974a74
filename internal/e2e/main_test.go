package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/worker"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestMain is either the test run or, with E2E_WORKER=1, a worker process
// started by a test (the same binary re-executed).
func TestMain(m *testing.M) {
	if os.Getenv("E2E_WORKER") == "1" {
		os.Exit(runChildWorker())
	}
	// go-redis logs every failed dial; TestRedisRestart makes hundreds.
	redis.SetLogger(quietLogger{})
	redistest.Main(m)
}

// quietLogger drops go-redis's internal log lines (set once, before any test
// runs, because the logger is a package global).
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// Environment of a child worker. Durations are Go duration strings.
const (
	envRedis         = "E2E_REDIS"          // host:port
	envNamespace     = "E2E_NS"             // key namespace
	envSimURL        = "E2E_SIM_URL"        // simulator base URL (…/v2)
	envInstance      = "E2E_ID"             // consumer name
	envMinIdle       = "E2E_MIN_IDLE"       // worker.Config.MinIdle
	envHeartbeat     = "E2E_HEARTBEAT"      // worker.Config.HeartbeatInterval
	envClaim         = "E2E_CLAIM"          // worker.Config.ClaimInterval
	envPollInitial   = "E2E_POLL_INITIAL"   // worker.Config.Poll.Initial
	envPollMax       = "E2E_POLL_MAX"       // worker.Config.Poll.Max
	envConcurrency   = "E2E_CONCURRENCY"    // worker.Config.Concurrency
	envUncertain     = "E2E_UNCERTAIN"      // worker.Config.SubmitUncertain
	envShutdown      = "E2E_SHUTDOWN"       // worker.Config.ShutdownTimeout
	envHookPoint     = "E2E_HOOK_POINT"     // StepHook point to act at
	envHookAfter     = "E2E_HOOK_AFTER"     // act at the N-th occurrence (1 = first)
	envHookAction    = "E2E_HOOK_ACTION"    // "kill" (SIGKILL self) or "stop" (SIGSTOP self)
	envLogLevel      = "E2E_LOG"            // hclog level of the child's logs (stderr)
	hookLinePrefix   = "E2E_HOOK "          // stderr line written just before the hook acts
	statsLinePrefix  = "E2E_STATS "         // stderr line with the worker's Stats at exit
	testAPIKey       = "rpa_E2E_SECRET_KEY" // the simulator's key
	testEndpointID   = "ep-e2e"
	childExitBadConf = 3
)

// runChildWorker runs one worker against the parent's Redis and simulator
// until SIGTERM or SIGINT, then shuts down gracefully and returns 0. Its
// StepHook can kill or stop the whole process at an exact point.
func runChildWorker() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "e2e child: "+format+"\n", args...)
		return childExitBadConf
	}
	dur := func(name string, def time.Duration) time.Duration {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			panic(fmt.Sprintf("%s: %v", name, err))
		}
		return d
	}
	num := func(name string, def int) int {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			panic(fmt.Sprintf("%s: %v", name, err))
		}
		return n
	}
	level := os.Getenv(envLogLevel)
	if level == "" {
		level = "info"
	}
	log := hclog.New(&hclog.LoggerOptions{Name: os.Getenv(envInstance), Level: hclog.LevelFromString(level), Output: os.Stderr})

	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(envRedis)})
	defer rdb.Close()
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	rp, err := activities.New(activities.Config{
		APIKey: testAPIKey, EndpointID: testEndpointID, BaseURL: os.Getenv(envSimURL),
		HTTPClient: &http.Client{Transport: transport},
		// Long enough that a /run in flight when the process is paused
		// (SIGSTOP) still reads its answer on resume, so the fencing test
		// sees the orphan it can cancel rather than an uncertain /run.
		RequestTimeout:      30 * time.Second,
		RetryInitialBackoff: 10 * time.Millisecond, RetryMaxBackoff: 200 * time.Millisecond,
		BreakerOpenTimeout: 300 * time.Millisecond,
		Limiter:            noLimit{},
		Logger:             log.Named("activities"),
	})
	if err != nil {
		return fail("activities: %v", err)
	}

	point, action := os.Getenv(envHookPoint), os.Getenv(envHookAction)
	after := int64(num(envHookAfter, 1))
	var seen atomic.Int64
	// kill(getpid(), SIGSTOP) returns before the whole process is stopped:
	// the kernel starts the group stop from whichever thread it picks. The
	// hook therefore waits for the SIGCONT that resumes it, so the step
	// cannot go on before the pause.
	resumed := make(chan os.Signal, 1)
	signal.Notify(resumed, syscall.SIGCONT)
	defer signal.Stop(resumed)
	hook := func(jobID, p string) {
		if p != point || seen.Add(1) != after {
			return
		}
		// One write(2) before acting, so the parent learns which job the
		// crash hit even though nothing runs after the signal.
		fmt.Fprintf(os.Stderr, "%s%s %s\n", hookLinePrefix, p, jobID)
		switch action {
		case "kill":
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never reached: SIGKILL cannot be caught
		case "stop":
			_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
			<-resumed // the step goes on with its stale epoch
		}
	}

	cfg := worker.Config{
		Runpod:            rp,
		InstanceID:        os.Getenv(envInstance),
		Namespace:         os.Getenv(envNamespace),
		Concurrency:       num(envConcurrency, 16),
		MinIdle:           dur(envMinIdle, time.Second),
		HeartbeatInterval: dur(envHeartbeat, 300*time.Millisecond),
		ClaimInterval:     dur(envClaim, 300*time.Millisecond),
		Poll: workflow.PollPolicy{Initial: dur(envPollInitial, 50*time.Millisecond),
			Max: dur(envPollMax, 200*time.Millisecond)},
		Retry:           workflow.RetryPolicy{Initial: 20 * time.Millisecond, Max: 300 * time.Millisecond},
		SubmitUncertain: workflow.SubmitUncertainPolicy(os.Getenv(envUncertain)),
		ShutdownTimeout: dur(envShutdown, 2*time.Second),
		Logger:          log,
	}
	if point != "" {
		cfg.StepHook = hook
	}
	w, err := worker.New(rdb, cfg)
	if err != nil {
		return fail("worker: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := w.Run(ctx); err != nil {
		return fail("run: %v", err)
	}
	transport.CloseIdleConnections()
	st, _ := json.Marshal(w.Stats())
	fmt.Fprintf(os.Stderr, "%s%s\n", statsLinePrefix, st)
	return 0
}

// noLimit is an activities.Limiter that never waits: the simulator's rate
// limits are off in these tests, and the local token bucket sized for
// Runpod's limits would make a thousand-job test last tens of seconds.
type noLimit struct{}

func (noLimit) Wait(ctx context.Context, _ string) error      { return ctx.Err() }
func (noLimit) Reserve(context.Context, string) time.Duration { return 0 }
