package client

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/streams"
)

// MaxInputBytesDefault is the default cap on a job's input, in bytes (10 MiB).
const MaxInputBytesDefault = 10 << 20

// Config configures a Client. The zero value is usable: every field has a
// default.
type Config struct {
	// Namespace selects the orchestrator deployment: every key lives under
	// the hash tag {Namespace}. It must match the workers'. Defaults to
	// streams.NamespaceDefault ("runpod").
	Namespace string
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
	// NowFunc is the clock used for the timestamps the client writes.
	// Defaults to time.Now.
	NowFunc func() time.Time
}

// WithDefaults returns a copy of cfg with every zero field set to its default.
func (cfg Config) WithDefaults() Config {
	cfg.Namespace = cmp.Or(cfg.Namespace, streams.NamespaceDefault)
	cfg.MaxInputBytes = cmp.Or(cfg.MaxInputBytes, MaxInputBytesDefault)
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	return cfg
}

// Validate reports the first invalid field of cfg, naming it. It expects a
// config with defaults applied (WithDefaults); New applies them.
func (cfg Config) Validate() error {
	if err := streams.ValidateNamespace(cfg.Namespace); err != nil {
		return fmt.Errorf("client: config: Namespace: %w", err)
	}
	if cfg.MaxInputBytes < 0 {
		return fmt.Errorf("client: config: MaxInputBytes: %d is negative", cfg.MaxInputBytes)
	}
	if cfg.Logger == nil {
		return errors.New("client: config: Logger: nil (use WithDefaults)")
	}
	if cfg.NowFunc == nil {
		return errors.New("client: config: NowFunc: nil (use WithDefaults)")
	}
	return nil
}
