package streams

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"runtime"
	"sync"
	"time"
	"weak"

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
// Store sharing one client shares one limit (see blockingLimit): blocking reads hold at most
// half of its pool (per node for a Cluster client, counted over all nodes:
// stricter), and the rest is always there for short commands.

// BlockingShare is how many blocking reads may run at once on a client
// whose pool holds poolSize connections.
func BlockingShare(poolSize int) int { return max(1, poolSize/2) }

// blockingLimits maps a client to its limit (a channel used as a
// semaphore). The key is a weak pointer to the client, and the entry is
// deleted once the client is collected: the map holds no client alive, and
// it keeps one entry per client in use, not per client ever used.
var blockingLimits sync.Map // weak.Pointer[byte] -> chan struct{}

// poolSize is rdb's pool size. A client go-redis does not define (a
// wrapper) is asked for the Options of the client it embeds; one that has
// none gets go-redis's default pool (10 per CPU).
func poolSize(rdb redis.UniversalClient) int {
	var size int
	switch c := rdb.(type) {
	case interface{ Options() *redis.Options }: // one server, Sentinel
		size = c.Options().PoolSize
	case interface{ Options() *redis.ClusterOptions }:
		size = c.Options().PoolSize
	case interface{ Options() *redis.RingOptions }:
		size = c.Options().PoolSize
	}
	if size <= 0 {
		size = 10 * runtime.GOMAXPROCS(0)
	}
	return size
}

// blockingLimit returns rdb's limit. A client whose dynamic value is not a
// pointer cannot be keyed weakly: each call gets a fresh limit, held by the
// Store that asked.
func blockingLimit(rdb redis.UniversalClient) chan struct{} {
	v := reflect.ValueOf(rdb)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Type().Elem().Size() == 0 {
		return make(chan struct{}, BlockingShare(poolSize(rdb)))
	}
	obj := (*byte)(v.UnsafePointer())
	key := weak.Make(obj)
	if sem, ok := blockingLimits.Load(key); ok {
		return sem.(chan struct{})
	}
	sem, loaded := blockingLimits.LoadOrStore(key, make(chan struct{}, BlockingShare(poolSize(rdb))))
	if !loaded {
		runtime.AddCleanup(obj, func(k weak.Pointer[byte]) { blockingLimits.Delete(k) }, key)
	}
	return sem.(chan struct{})
}

// BlockingSlack is how long a blocking read may outlast its BLOCK before
// it is given up: fn's context ends then. go-redis's own deadline for it is
// BLOCK + 10 s, so a reader on a master that went silent (a stopped host)
// would wait that long before it reads from the promoted replica. A client
// with ContextTimeoutEnabled (redisconn's Cluster and Sentinel clients)
// applies the context's deadline to the socket; others keep go-redis's.
const BlockingSlack = 2 * time.Second

// blocking runs fn, a blocking read of up to block, within the client's
// limit. It waits for a place as long as ctx allows.
func (s *Store) blocking(ctx context.Context, block time.Duration, fn func(context.Context) error) error {
	sem := s.sem
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-sem }()
	rctx, cancel := context.WithTimeout(ctx, block+BlockingSlack)
	defer cancel()
	err := fn(rctx)
	var ne net.Error
	if err != nil && ctx.Err() == nil && (rctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()) {
		// The read outlasted its deadline, not the caller's context: say
		// so rather than "context deadline exceeded", which callers take
		// for their own. (The socket's deadline is rctx's, and it may fire
		// a moment before rctx's timer does.)
		return fmt.Errorf("%w: blocking read of %s got no reply within %s more: %w", errBlockingStalled, block, BlockingSlack, err)
	}
	return err
}

// errBlockingStalled: a blocking read got no reply within its BLOCK and
// BlockingSlack.
var errBlockingStalled = errors.New("redis did not answer")
