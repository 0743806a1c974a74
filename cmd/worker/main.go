package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	okrun "github.com/oklog/run"
	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/activities"
	"github.com/yourscope/runpod-orchestrator/internal/cmdutil"
	"github.com/yourscope/runpod-orchestrator/internal/redisconn"
	"github.com/yourscope/runpod-orchestrator/pool"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/worker"
)

func main() {
	redis.SetLogger(redisLogger{})
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for configuration mistakes, 1 for everything else.
func exitCode(err error) int {
	var fe *flagError
	var ue *usageError
	if errors.As(err, &fe) || errors.As(err, &ue) {
		return cmdutil.ExitUsage
	}
	return 1
}

// usageError marks a command-line mistake that is not about one flag's
// value (an unknown flag, a stray argument); its text is the wrapped error's.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// httpShutdownTimeout bounds the metrics server's graceful stop.
const httpShutdownTimeout = 5 * time.Second

// run is the whole command: parse args and the environment, start the
// worker, the HTTP server and (with --dev) the embedded services, and stop
// them all when ctx ends or SIGINT/SIGTERM arrives. It returns nil on such a
// stop, and an error when start-up fails or a component stops on its own.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runEnv(ctx, args, os.LookupEnv, stdout, stderr)
}

// runEnv is run with the environment given as lookupEnv, for tests.
func runEnv(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	if cmdutil.WantsVersion(args) {
		fmt.Fprintln(stdout, cmdutil.Line("worker"))
		return nil
	}
	o := defaultOptions()
	table := newFlagTable(o)
	sources, err := table.parse(args, lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		table.usage(stdout, lookupEnv)
		return nil
	}
	if err != nil {
		var fe *flagError
		if !errors.As(err, &fe) {
			err = &usageError{err: err}
		}
		return err
	}
	if err := o.check(sources); err != nil {
		return err
	}
	log := hclog.New(&hclog.LoggerOptions{
		Name:       "runpod-orchestrator",
		Level:      hclog.LevelFromString(o.logLevel),
		Output:     stderr,
		Mutex:      &sync.Mutex{},
		JSONFormat: o.logFormat == "json",
	})
	redisLog := log.Named("redis")
	redisLogTarget.Store(&redisLog)
	m := newMetrics()

	// Validate the worker's configuration before anything is started, so a
	// bad value is reported under its flag and nothing needs undoing.
	if err := o.workerConfig(placeholderRunpod{}, log, worker.Hooks{}).WithDefaults().Validate(); err != nil {
		return flagErrorFrom(err)
	}

	// Where Redis and Runpod are: the flags, or the dev services.
	redisURL, apiKey, endpointID, baseURL := o.redisURL, o.apiKey, o.endpointID, o.baseURL
	var dev *devServices
	if o.dev {
		for _, name := range devConnFlags {
			if src := sources[name]; src != "" {
				log.Info("dev mode: ignoring the environment variable", "env", src)
			}
		}
		if dev, err = startDev(o, log); err != nil {
			return err
		}
		defer dev.Close()
		redisURL, apiKey, endpointID, baseURL = dev.redisURL, devAPIKey, devEndpointID, dev.sim.URL
	}

	if o.dev {
		// The embedded Redis speaks plain TCP; TLS settings from the
		// environment were ignored above.
		o.redisTLSCAFile, o.redisTLSCertFile, o.redisTLSKeyFile, o.redisTLSServerName = "", "", "", ""
	}
	conn, err := o.redisConn(redisURL)
	if err != nil {
		return err
	}
	rdb := conn.Client()
	defer rdb.Close()

	// The pool budget, the breaker and the worker reports live under the
	// base namespace {ns}, shared by every partition.
	store, err := streams.New(rdb, streams.Config{Namespace: o.namespace})
	if err != nil {
		return flagErrorFrom(fmt.Errorf("worker: Namespace: %w", err))
	}
	parts, err := streams.NewPartitions(rdb, streams.Config{Namespace: o.namespace}, o.partitions)
	if err != nil {
		return flagErrorFrom(fmt.Errorf("worker: Partitions: %w", err))
	}
	// The pool budget names the holder of a breaker probe: the worker's id,
	// or one like it (each worker the supervisor starts picks its own).
	holder := o.instanceID
	if holder == "" {
		holder = worker.Config{}.WithDefaults().InstanceID
	}
	acfg := o.activitiesConfig(apiKey, endpointID, baseURL, conn.Secrets(), log, m)
	var budget *pool.Limiter
	if o.runpodBudget == budgetPool {
		if budget, err = pool.New(o.poolConfig(store, endpointID, holder, log, m)); err != nil {
			return err
		}
		acfg.Limiter = budget
	}
	rp, err := activities.New(acfg)
	if err != nil {
		return flagErrorFrom(err)
	}
	defer rp.CloseIdleConnections()

	hookLn, hookURL, err := o.webhookListener()
	if err != nil {
		return err
	}
	if hookLn != nil {
		defer hookLn.Close()
	}
	newWorker := func() (*worker.Worker, error) {
		cfg := o.workerConfig(rp, log, m.hooks())
		cfg.EndpointID = endpointID
		o.poolWorkerConfig(&cfg, hookURL)
		cfg.Admission.Endpoint = endpointID // one gate per endpoint for the pool
		return worker.New(rdb, cfg)
	}
	w, err := newWorker()
	if err != nil {
		return flagErrorFrom(err)
	}
	// Credentials and endpoint are checked before the worker takes a job
	// (supervisor.run): a refused key or an unknown endpoint stops the
	// process under its flag.
	sup := &supervisor{cur: w, newWorker: newWorker, check: rp.CheckEndpoint, log: log,
		startCheck: func(ctx context.Context) error { return checkRunpod(ctx, rp, log) }}
	m.observe(sup.stats, rp.BreakerState, parts.QueueInfo, log)
	m.observeFault(sup.faulted)
	m.observePool(sup.webhookStats)
	m.observeAdmission(sup.stats)
	if budget != nil {
		m.observeBudget(budget.Factor)
	}

	var g okrun.Group
	g.Add(okrun.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	// runErr is the worker's own verdict on its stop: a stop asked for by a
	// signal still fails the command when the worker could not stop cleanly
	// (outcomes unwritten, leases not handed off, never started).
	var runErr error
	{
		wctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			if err := sup.run(wctx); err != nil {
				runErr = err
				return runErr
			}
			return nil
		}, func(error) { cancel() })
	}
	{
		rctx, cancel := context.WithCancel(ctx)
		rep := &reporter{store: store, sup: sup, m: m, instance: w.InstanceID(), started: time.Now(), log: log}
		g.Add(func() error { return rep.run(rctx) }, func(error) { cancel() })
	}
	httpAddr := ""
	if o.dashboard && o.httpAddr == "" {
		return &flagError{Flag: "dashboard", Msg: "needs --http-addr (the dashboard is served by the worker's HTTP server)"}
	}
	if o.httpAddr != "" {
		ln, err := listenHTTP(o.httpAddr, sources["http-addr"] != "", log)
		if err != nil {
			return err
		}
		httpAddr = ln.Addr().String()
		mux := newMux(m.reg, readiness{
			ping:    func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
			breaker: rp.BreakerState,
			fault:   sup.faulted,
			started: sup.started,
		}, log.Named("http"))
		if o.dashboard {
			if err := serveDashboard(ctx, &g, mux, rdb, o, ln.Addr(), log); err != nil {
				_ = ln.Close()
				return err
			}
		}
		srv := &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
		}
		g.Add(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http server on %s: %w", httpAddr, err)
			}
			return nil
		}, func(error) {
			sctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
			defer cancel()
			_ = srv.Shutdown(sctx)
		})
	}
	serveWebhooks(&g, hookLn, sup.webhookHandler(), log)
	if dev != nil {
		cctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return dev.runClock(cctx) }, func(error) { cancel() })
		dev.banner(stdout, o.namespace, httpAddr)
	}
	log.Info("starting", "redis", conn.Redacted(), "redis_mode", conn.Mode(), "namespace", o.namespace,
		"runpod_base_url", redisconn.Redact(baseURL), "runpod_endpoint_id", endpointID,
		"instance_id", w.InstanceID(), "http_addr", cmp.Or(httpAddr, "(none)"), "dev", o.dev)

	err = g.Run()
	switch {
	case runErr != nil:
		// g.Run has returned, so every actor has: runErr is settled.
		return runErr
	case errors.Is(err, okrun.ErrSignal):
		log.Info("stopped by signal", "signal", err.Error())
		return nil
	case err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return nil
	}
	return err
}
