package failover

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// go-redis's cluster client reloads its slot map in a goroutine that may
// still sleep its 200 ms cooldown after Close, and a pool that lost its
// node re-dials in one that sleeps up to a second before it sees the Close.
func TestMain(m *testing.M) {
	redistest.Main(m,
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9.(*clusterStateHolder).LazyReload.func1"),
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
