package soak

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Chaos kinds: what the chaos loop may do while the jobs run.
const (
	ChaosKill     = "kill"      // SIGKILL a worker, restart it
	ChaosStop     = "stop"      // SIGSTOP a worker past its lease, then SIGCONT
	ChaosTerm     = "term"      // SIGTERM a worker (graceful handoff), restart it
	ChaosRedis    = "redis"     // kill -9 redis-server, restart it from its AOF
	Chaos5xx      = "5xx"       // the simulator answers 500/502/503/504 before acting
	Chaos429      = "429"       // the simulator answers 429 (with Retry-After)
	ChaosLatency  = "latency"   // the simulator adds latency and jitter
	ChaosDrop     = "drop"      // the simulator drops connections before acting
	ChaosRunAfter = "run-after" // /run creates the job, then the answer fails (5xx, drop, hang, truncated)
)

// AllChaos lists every chaos kind.
var AllChaos = []string{ChaosKill, ChaosStop, ChaosTerm, ChaosRedis, Chaos5xx, Chaos429, ChaosLatency, ChaosDrop, ChaosRunAfter}

// ParseChaos parses --chaos: "on"/"all", "off"/"none", or a comma-separated
// list of kinds.
func ParseChaos(s string) ([]string, error) {
	switch s {
	case "on", "all", "":
		return slices.Clone(AllChaos), nil
	case "off", "none":
		return []string{}, nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(AllChaos, p) {
			return nil, fmt.Errorf("unknown chaos kind %q (want on, off, or a comma-separated list of %s)", p, strings.Join(AllChaos, ","))
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Config configures one soak run.
type Config struct {
	// Jobs is how many jobs are submitted. Defaults to 1000.
	Jobs int
	// Workers is how many worker processes run at once. Defaults to 4.
	Workers int
	// Partitions is the namespace's partition count (the workers'
	// --partitions; every worker serves every partition, and the checker
	// reads every partition). Defaults to 1.
	Partitions int
	// Seed fixes the job mix and the chaos schedule (not the interleavings
	// of real processes). Defaults to 1.
	Seed int64
	// Duration caps the submit-and-chaos phase; jobs not yet submitted by
	// then are not submitted. Defaults to 30m.
	Duration time.Duration
	// Drain caps the wait for every job to end once the chaos stopped.
	// Defaults to 3m.
	Drain time.Duration
	// Rate is submissions per second. Defaults to 25.
	Rate float64
	// Fsync is redis-server's appendfsync: always, everysec or no.
	// Defaults to always.
	Fsync string
	// AOFCut simulates an OS crash at each redis-server kill: the newest
	// AOF file is cut back to its size AOFCut earlier. 0 (the default)
	// kills the process only, which loses nothing that reached the page
	// cache.
	AOFCut time.Duration
	// Chaos lists the chaos kinds (AllChaos by default; empty slice: none).
	Chaos []string
	// ChaosInterval is the mean time between chaos actions. Defaults to 1.5s.
	ChaosInterval time.Duration
	// Kinds lists the job kinds of the mix. Defaults to AllKinds.
	Kinds []Kind
	// MinIdle is the workers' lease. Defaults to 2s.
	MinIdle time.Duration
	// CrashWindow: see CheckInput.CrashWindow. Defaults to 3s.
	CrashWindow time.Duration
	// WorkerBin is the cmd/worker binary to exec. Required.
	WorkerBin string
	// RedisServer is the redis-server binary. Defaults to "redis-server".
	RedisServer string
	// Dir holds redis-server's files and every process's log. Defaults to
	// a new temporary directory, removed after a passing run.
	Dir string
	// Keep keeps Dir after a passing run.
	Keep bool
	// Progress receives progress lines. Defaults to io.Discard.
	Progress io.Writer
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.Jobs == 0 {
		c.Jobs = 1000
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.Partitions == 0 {
		c.Partitions = 1
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Duration == 0 {
		c.Duration = 30 * time.Minute
	}
	if c.Drain == 0 {
		c.Drain = 3 * time.Minute
	}
	if c.Rate == 0 {
		c.Rate = 25
	}
	if c.Fsync == "" {
		c.Fsync = "always"
	}
	if c.Chaos == nil {
		c.Chaos = slices.Clone(AllChaos)
	}
	if c.ChaosInterval == 0 {
		c.ChaosInterval = 1500 * time.Millisecond
	}
	if c.Kinds == nil {
		c.Kinds = slices.Clone(AllKinds)
	}
	if c.MinIdle == 0 {
		c.MinIdle = 2 * time.Second
	}
	if c.CrashWindow == 0 {
		c.CrashWindow = 3 * time.Second
	}
	if c.RedisServer == "" {
		c.RedisServer = "redis-server"
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Jobs < 1:
		return fmt.Errorf("soak: jobs must be at least 1")
	case c.Workers < 1 || c.Workers > 64:
		return fmt.Errorf("soak: workers must be 1..64")
	case c.Partitions < 1 || c.Partitions > 64:
		return fmt.Errorf("soak: partitions must be 1..64")
	case c.Rate <= 0:
		return fmt.Errorf("soak: rate must be positive")
	case !slices.Contains([]string{"always", "everysec", "no"}, c.Fsync):
		return fmt.Errorf("soak: fsync %q: want always, everysec or no", c.Fsync)
	case c.MinIdle < time.Second:
		return fmt.Errorf("soak: min-idle must be at least 1s (the worker's minimum)")
	case c.WorkerBin == "":
		return fmt.Errorf("soak: the worker binary is required")
	case len(c.Kinds) == 0:
		return fmt.Errorf("soak: no job kind")
	}
	return nil
}
