package streams

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// A blocking read (XREADGROUP or XREAD with BLOCK: Read, WaitNew,
// ReadEvents) holds a pooled connection for its whole BLOCK. A worker runs
// one per partition and a client's events readers one per partition, so on
// a node carrying several partitions the readers can outnumber the node's
// pool (go-redis: 5 per CPU per Cluster node, 10 per CPU for one server):
// each connection a reader gives back then goes straight to the next
// waiting reader, and every other command (heartbeats, outcome writes, Get)
// waits about a BLOCK for its turn, or fails with a pool timeout. So every
// Store sharing one client shares one limit: blocking reads hold at most
// half of its pool (per node for a Cluster client, counted over all nodes:
// stricter), and the rest is always there for short commands.

// BlockingShare is how many blocking reads may run at once on a client
// whose pool holds poolSize connections.
func BlockingShare(poolSize int) int { return max(1, poolSize/2) }

// blockingLimits maps a client to its limit (a channel used as a
// semaphore); clients whose pool size is unknown have none.
var blockingLimits sync.Map // redis.UniversalClient -> chan struct{}

func blockingLimit(rdb redis.UniversalClient) chan struct{} {
	if v, ok := blockingLimits.Load(rdb); ok {
		return v.(chan struct{})
	}
	var size int
	switch c := rdb.(type) {
	case *redis.Client: // one server, or Sentinel's failover client
		size = c.Options().PoolSize
	case *redis.ClusterClient:
		size = c.Options().PoolSize
	case *redis.Ring:
		size = c.Options().PoolSize
	default:
		return nil
	}
	if size <= 0 {
		return nil
	}
	v, _ := blockingLimits.LoadOrStore(rdb, make(chan struct{}, BlockingShare(size)))
	return v.(chan struct{})
}

// blocking runs fn, a blocking read, within the client's limit. It waits
// for a place as long as ctx allows.
func (s *Store) blocking(ctx context.Context, fn func() error) error {
	sem := blockingLimit(s.rdb)
	if sem == nil {
		return fn()
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-sem }()
	return fn()
}
