package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Durability is what a write must reach before the worker relies on it:
// before /run (the SUBMITTING intent) and before an outcome is reported
// written. The zero value waits for nothing (the write is acknowledged
// once the primary applied it in memory).
type Durability struct {
	// Replicas: WAIT until this many replicas acknowledged the write.
	Replicas int
	// LocalAOF: WAITAOF until the primary fsynced the write to its AOF
	// (with Replicas, also that many replicas' AOFs). Needs Redis 7.2 or
	// later; CheckDurability reports a server without WAITAOF.
	LocalAOF bool
	// Timeout bounds each wait. Defaults to DurabilityTimeoutDefault.
	Timeout time.Duration
}

// DurabilityTimeoutDefault bounds a durability wait when none is set.
const DurabilityTimeoutDefault = time.Second

// ErrNotDurable: the write was applied but fewer replicas (or AOFs)
// acknowledged it than Durability asks before the timeout. The write is not
// undone: the caller treats it as an ambiguous write and retries.
var ErrNotDurable = errors.New("streams: write not confirmed durable")

// On reports whether d waits for anything.
func (d Durability) On() bool { return d.Replicas > 0 || d.LocalAOF }

func (d Durability) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return DurabilityTimeoutDefault
}

// waitCmd is the WAIT or WAITAOF command for d.
func (d Durability) waitCmd() []any {
	ms := d.timeout().Milliseconds()
	if d.LocalAOF {
		return []any{"WAITAOF", 1, d.Replicas, ms}
	}
	return []any{"WAIT", d.Replicas, ms}
}

// check reads a WAIT / WAITAOF reply.
func (d Durability) check(v any) error {
	switch r := v.(type) {
	case int64: // WAIT: replicas that acknowledged
		if r < int64(d.Replicas) {
			return fmt.Errorf("%w: %d of %d replicas acknowledged within %s", ErrNotDurable, r, d.Replicas, d.timeout())
		}
		return nil
	case []any: // WAITAOF: [local fsyncs, replicas fsynced]
		if len(r) == 2 {
			local, _ := r[0].(int64)
			reps, _ := r[1].(int64)
			if local < 1 || reps < int64(d.Replicas) {
				return fmt.Errorf("%w: AOF fsynced locally %d, on %d of %d replicas within %s",
					ErrNotDurable, local, reps, d.Replicas, d.timeout())
			}
			return nil
		}
	}
	return fmt.Errorf("streams: unexpected durability wait reply %T", v)
}

// SetDurability makes durable writes (Checkpoint with Durable, every
// Finalize and every Submit) wait for d. Call it before the store is used.
func (s *Store) SetDurability(d Durability) { s.dur = d }

// CheckDurability reports whether the server can give s's durability:
// WAITAOF exists (Redis 7.2+) when LocalAOF is asked, and enough replicas
// are connected when Replicas is. It also loads the scripts, so durable
// writes (pipelined EVALSHA + wait) need no NOSCRIPT fallback.
func (s *Store) CheckDurability(ctx context.Context) error {
	d := s.dur
	if !d.On() {
		return nil
	}
	if err := s.LoadScripts(ctx); err != nil {
		return err
	}
	// The server that matters is the one holding the namespace: on a
	// Cluster, the master of its slot (a keyless INFO goes to any master).
	node, err := s.durableNode(ctx, s.keys.Submissions())
	if err != nil {
		return fmt.Errorf("streams: check durability: %w", err)
	}
	if d.LocalAOF {
		info, err := node.Do(ctx, "COMMAND", "INFO", "WAITAOF").Result()
		if err != nil {
			return fmt.Errorf("streams: check durability: %w", err)
		}
		if arr, ok := info.([]any); !ok || len(arr) == 0 || arr[0] == nil {
			ver := ""
			if m, err := node.InfoMap(ctx, "server").Result(); err == nil {
				ver = m["Server"]["redis_version"]
			}
			return fmt.Errorf("streams: durability LocalAOF needs WAITAOF (Redis 7.2 or later); this server (redis_version %q) has none: use appendfsync always, or Replicas", ver)
		}
	}
	if d.Replicas > 0 {
		m, err := node.InfoMap(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("streams: check durability: %w", err)
		}
		var n int
		_, _ = fmt.Sscan(m["Replication"]["connected_slaves"], &n)
		if n < d.Replicas {
			return fmt.Errorf("streams: durability asks for %d replicas, the server has %d connected", d.Replicas, n)
		}
	}
	return nil
}

// runDurable runs sc and then the durability wait on the same connection
// (WAIT and WAITAOF wait for the writes of their own connection), as one
// pipelined round trip. It returns the script's reply, and ErrNotDurable
// (wrapped) when the wait fell short. On a Cluster client the pipeline
// goes to the keys' master itself: the cluster pipeline sends a keyless
// WAIT to any master, where it has nothing to wait for and answers at once.
func (s *Store) runDurable(ctx context.Context, op string, sc *redis.Script, keys []string, args ...any) (any, error) {
	moved := 0
	for try := 0; ; try++ {
		node, err := s.durableNode(ctx, keys[0])
		if err != nil {
			return nil, fmt.Errorf("streams: %s: %w", op, err)
		}
		pipe := node.Pipeline()
		ev := sc.EvalSha(ctx, pipe, keys, args...)
		wait := pipe.Do(ctx, s.dur.waitCmd()...)
		_, err = pipe.Exec(ctx)
		if err != nil && redis.HasErrorPrefix(ev.Err(), "NOSCRIPT") && try == 0 {
			if err := sc.Load(ctx, node).Err(); err != nil {
				return nil, fmt.Errorf("streams: %s: load script: %w", op, err)
			}
			continue
		}
		if cc, ok := s.rdb.(*redis.ClusterClient); ok && moved < 3 &&
			(redis.HasErrorPrefix(ev.Err(), "MOVED") || redis.HasErrorPrefix(ev.Err(), "ASK")) {
			// The slot moved (a failover, a reshard): the script did not
			// run; find its master again. (ASK: the slot is migrating; the
			// reloaded map says where it lands.)
			moved++
			cc.ReloadState(ctx)
			continue
		}
		if ev.Err() != nil {
			return nil, fmt.Errorf("streams: %s: %w", op, ev.Err())
		}
		if wait.Err() != nil {
			return ev.Val(), fmt.Errorf("streams: %s: durability wait: %w", op, wait.Err())
		}
		if err := s.dur.check(wait.Val()); err != nil {
			return ev.Val(), fmt.Errorf("streams: %s: %w", op, err)
		}
		return ev.Val(), nil
	}
}

// pipeliner is a client that pipelines on one connection: one server's
// client (or Sentinel's), or one Cluster node's.
type pipeliner interface {
	redis.Scripter
	Pipeline() redis.Pipeliner
	InfoMap(ctx context.Context, sections ...string) *redis.InfoCmd
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// durableNode is the client a durable write pipelines on: the master
// holding key on a Cluster, else the store's client.
func (s *Store) durableNode(ctx context.Context, key string) (pipeliner, error) {
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		n, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("find the master of %s: %w", key, err)
		}
		return n, nil
	}
	return s.rdb, nil
}
