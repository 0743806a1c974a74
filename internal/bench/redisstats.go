package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// serverStats is what the bench reads from the measured Redis server: every
// command it executed (INFO commandstats counts the commands a Lua script
// calls as well as the EVALSHA itself) and the CPU it used.
type serverStats struct {
	calls   map[string]int64 // command → calls
	cpuSec  float64          // used_cpu_user + used_cpu_sys
	masters int              // servers summed (the masters of a Cluster)
}

// readServerStats reads the server's figures, summed over the masters of a
// Cluster.
func readServerStats(ctx context.Context, rdb redis.UniversalClient) (serverStats, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return readNodeStats(ctx, rdb)
	}
	var mu sync.Mutex
	total := serverStats{calls: map[string]int64{}}
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		st, err := readNodeStats(ctx, c)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for k, v := range st.calls {
			total.calls[k] += v
		}
		total.cpuSec += st.cpuSec
		total.masters++
		return nil
	})
	return total, err
}

func readNodeStats(ctx context.Context, rdb redis.UniversalClient) (serverStats, error) {
	st := serverStats{calls: map[string]int64{}, masters: 1}
	cmds, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return st, fmt.Errorf("bench: INFO commandstats: %w", err)
	}
	for _, line := range strings.Split(cmds, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				st.calls[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	cpu, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return st, fmt.Errorf("bench: INFO cpu: %w", err)
	}
	for _, line := range strings.Split(cpu, "\n") {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (name == "used_cpu_user" || name == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			st.cpuSec += f
		}
	}
	return st, nil
}

// sub returns the difference a−b: what ran between two readings. The two
// INFO calls of the later reading are left out.
func (a serverStats) sub(b serverStats) serverStats {
	d := serverStats{calls: map[string]int64{}, cpuSec: a.cpuSec - b.cpuSec, masters: a.masters}
	for k, v := range a.calls {
		if n := v - b.calls[k]; n > 0 {
			d.calls[k] = n
		}
	}
	if n := 2 * int64(max(a.masters, 1)); d.calls["info"] >= n {
		d.calls["info"] -= n
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

// roundTrips counts what a go-redis client sends: one per command, one per
// pipeline (a batch of commands in one write).
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

var _ redis.Hook = (*roundTrips)(nil)
