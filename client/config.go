package client

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// MaxPartitions is the largest partition count (Config.Partitions).
const MaxPartitions = streams.MaxPartitions

// MaxInputBytesDefault is the default cap on a job's input, in bytes (10 MiB).
const MaxInputBytesDefault = 10 << 20

// PendingCancelTTLDefault is how long a cancel of an id with no job yet is
// kept (Config.PendingCancelTTL): 7 days, the workers' default result TTL.
const PendingCancelTTLDefault = 7 * 24 * time.Hour

// Config configures a Client. The zero value is usable: every field has a
// default.
type Config struct {
	// Namespace selects the orchestrator deployment: every key lives under
	// the hash tag {Namespace}. It must match the workers'. Defaults to
	// streams.NamespaceDefault ("runpod").
	Namespace string
	// Partitions is the namespace's partition count P; it must match the
	// workers' (CheckPartitions verifies it against the count the workers
	// recorded). Jobs are spread over the partitions by their id; dedupe is
	// per partition (docs/operations.md, "Partitions"). Defaults to 1.
	Partitions int
	// Dedupe makes Submit answer with the live or completed job that holds
	// the same SubmitOptions.InputHash instead of creating a new one. Jobs
	// without an InputHash are never deduplicated. Defaults to false.
	Dedupe bool
	// PersistInput keeps each job's input in its record (Job.Input), at the
	// cost of Redis memory. Defaults to false.
	PersistInput bool
	// MaxInputBytes caps the size of a job's JSON input; larger inputs are
	// refused by Submit (workers dead-letter them too). Defaults to
	// MaxInputBytesDefault.
	MaxInputBytes int
	// Logger receives the shared reader's diagnostics (Redis errors it
	// retries). Library calls return errors and never log them. Defaults to
	// a null logger.
	Logger hclog.Logger
	// PendingCancelTTL is how long Cancel keeps a cancel for an id that has
	// no job yet (a raw submission not yet admitted), so that the job ends
	// CANCELED unsent when it arrives. Defaults to PendingCancelTTLDefault;
	// -1 keeps nothing (Cancel of an unknown id is then ErrJobNotFound).
	PendingCancelTTL time.Duration
	// Durability makes Submit report success only once the new job (its
	// record, submission entry and event) has reached this many replicas
	// (WAIT) or the AOF (WAITAOF, Redis 7.2+), so a failover cannot lose a
	// job the producer was told exists. Short of it Submit returns an error
	// wrapping ErrNotDurable: the job exists on the primary, and submitting
	// the same ClientJobID again is safe (it waits again). Use the workers'
	// setting. Defaults to none.
	Durability Durability
}

// Durability is what a write must reach before it counts: the workers' setting
// (streams.Durability), so producers and workers are configured alike.
type Durability = streams.Durability

// DurabilityTimeoutDefault bounds a durability wait when none is set.
const DurabilityTimeoutDefault = streams.DurabilityTimeoutDefault

// WithDefaults returns a copy of cfg with every zero field set to its default.
func (cfg Config) WithDefaults() Config {
	cfg.Namespace = cmp.Or(cfg.Namespace, streams.NamespaceDefault)
	cfg.MaxInputBytes = cmp.Or(cfg.MaxInputBytes, MaxInputBytesDefault)
	cfg.Partitions = cmp.Or(cfg.Partitions, 1)
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.PendingCancelTTL == 0 {
		cfg.PendingCancelTTL = PendingCancelTTLDefault
	}
	return cfg
}

// Validate reports the first invalid field of cfg, naming it. It expects a
// config with defaults applied (WithDefaults); New applies them.
func (cfg Config) Validate() error {
	if err := streams.ValidateNamespace(cfg.Namespace); err != nil {
		return fmt.Errorf("client: config: Namespace: %w", err)
	}
	if err := streams.ValidatePartitions(cfg.Partitions); err != nil {
		return fmt.Errorf("client: config: Partitions: %w", err)
	}
	if cfg.MaxInputBytes < 0 {
		return fmt.Errorf("client: config: MaxInputBytes: %d is negative", cfg.MaxInputBytes)
	}
	if cfg.Logger == nil {
		return errors.New("client: config: Logger: nil (use WithDefaults)")
	}
	if cfg.PendingCancelTTL < time.Millisecond && cfg.PendingCancelTTL != -1 {
		return fmt.Errorf("client: config: PendingCancelTTL: %s must be at least 1ms, or -1 for none", cfg.PendingCancelTTL)
	}
	return nil
}
