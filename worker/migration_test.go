package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestStaleCountWorkerLeavesMigratedJobs: a worker started with P = 6 is
// still running when the namespace is migrated to P = 3 (the operator
// missed one host). A producer of the new layout submits a job whose id
// belongs to partition 1 of 3 but to partition 4 of 6; the stale worker
// reads partition 1. It must not dead-letter the entry as "wrong partition"
// (the job's record exists, written by the producer: the entry gone, the
// job would stay SUBMITTED forever, no terminal outcome): it sees the count
// changed, leaves the entry pending and stops with ErrPartitionsMismatch,
// and a worker of the new count runs the job.
func TestStaleCountWorkerLeavesMigratedJobs(t *testing.T) {
	t.Parallel()
	b, old := partsSetup(t, 6)
	cfg := b.config("stale")
	cfg.Partitions = 6
	stale := b.start(t, cfg)
	require.Eventually(t, func() bool {
		n, err := old.StoredPartitions(context.Background())
		return err == nil && n == 6
	}, 10*time.Second, 10*time.Millisecond, "the stale worker recorded P = 6")

	// The migration: the count becomes 3 (docs/operations.md, "Changing P").
	meta, err := streams.NewKeys(b.ns)
	require.NoError(t, err)
	require.NoError(t, b.rdb.HSet(context.Background(), meta.Meta(), streams.MetaPartitions, 3).Err())
	nu, err := streams.NewPartitions(b.rdb, streams.Config{Namespace: b.ns}, 3)
	require.NoError(t, err)
	id := ""
	for i := 0; id == ""; i++ {
		c := fmt.Sprintf("mig-%d", i)
		if p3, p6 := streams.PartitionOf(c, 3), streams.PartitionOf(c, 6); p3 != p6 {
			id = c
		}
	}
	submitTo(t, nu, id, `{"mock_delay":1}`)

	// The stale worker reads the entry; before the fix it dead-lettered it
	// and went on.
	var runErr error
	select {
	case runErr = <-stale.done:
	case <-time.After(20 * time.Second):
	}
	dead, err := nu.For(id).ReadDead(context.Background(), "", 10)
	require.NoError(t, err)
	require.Empty(t, dead, "a job of the new count was dead-lettered by the stale worker")
	require.Error(t, runErr, "the stale worker stops")
	require.True(t, errors.Is(runErr, streams.ErrPartitionsMismatch), "%v", runErr)
	stale.once.Do(func() {}) // Run returned already: nothing to stop

	cfg3 := b.config("fresh")
	cfg3.Partitions = 3
	cfg3.ClaimInterval = 100 * time.Millisecond
	b.start(t, cfg3)
	require.Eventually(t, func() bool {
		rec, err := nu.For(id).Get(context.Background(), id)
		return err == nil && rec.State == string(workflow.StateCompleted)
	}, 30*time.Second, 20*time.Millisecond, "the job runs under the new count")
}

// TestUnservedPartitionIsLoud: --serve-partitions subsets that together
// leave a partition unserved strand its jobs silently (no group, nobody
// reads it). The janitor of a worker that does not serve a partition
// holding submissions no consumer group was ever created for says so at
// error level.
func TestUnservedPartitionIsLoud(t *testing.T) {
	t.Parallel()
	b, ps := partsSetup(t, 3)
	id := ""
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("un-%d", i); streams.PartitionOf(c, 3) == 2 {
			id = c
		}
	}
	submitTo(t, ps, id, `{"mock_delay":1}`)
	var logs syncBuffer
	cfg := b.config("subset")
	cfg.Partitions = 3
	cfg.ServePartitions = []int{0, 1}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	b.start(t, cfg) // its janitor runs a pass at start
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "PARTITION NOT SERVED") },
		10*time.Second, 10*time.Millisecond, "no word about partition 2:\n%s", logs.String())
	require.Contains(t, logs.String(), "partition=2")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
