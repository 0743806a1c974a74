package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// readSignal signals the first Read (or WaitNew: the wait before a gated
// read) of a partition's store.
type readSignal struct {
	store
	once    sync.Once
	reading chan struct{}
}

func (s *readSignal) Read(ctx context.Context, consumer string, count int, block time.Duration) ([]redis.XMessage, error) {
	s.once.Do(func() { close(s.reading) })
	return s.store.Read(ctx, consumer, count, block)
}

func (s *readSignal) WaitNew(ctx context.Context, count int, block time.Duration) (int, error) {
	s.once.Do(func() { close(s.reading) })
	return s.store.WaitNew(ctx, count, block)
}

// TestAdmissionGrantNotSpentOnEmptyPartition: the pool-wide admission gate
// has room for one job until the next /health reading. Worker w0 serves
// partition 0, which is empty; w1 serves partition 1, which holds a job.
// w0's fetch loop takes grants (up to its whole share of MaxInFlight: it
// serves one partition) before its blocking read of the empty partition,
// so the read could admit what arrives; the read returns nothing and the
// grants are not given back: w1's job waits for the next reading, though
// Runpod had room for it. With P = 1 the same grant reads the same stream
// and admits the job. With --serve-partitions pinning workers to shards,
// the workers of an idle shard take the pool's room every reading; with
// every partition served, each empty partition's loop takes one grant per
// read (250 ms). Seen failing (Condition never satisfied); with Depth 1000
// (room left after w0's grab) it passes. Fixed: a gated loop waits for new
// entries (WaitNew) before it takes a grant, and gives back what its read
// did not use.
func TestAdmissionGrantNotSpentOnEmptyPartition(t *testing.T) {
	t.Parallel()
	b, ps := partsSetup(t, 2)
	adm := Admission{Depth: 1, Interval: time.Hour, // one reading: room for 1 job all test long
		Health: func(context.Context) (EndpointLoad, error) { return EndpointLoad{}, nil }}
	cfg0 := b.config("w0")
	cfg0.Partitions, cfg0.ServePartitions, cfg0.Admission = 2, []int{0}, adm
	w0, err := New(b.rdb, cfg0)
	require.NoError(t, err)
	sig := &readSignal{store: w0.store.all[0], reading: make(chan struct{})}
	w0.store.all[0] = sig
	b.run(t, w0)
	select {
	case <-sig.reading: // w0 holds the grant, blocked on its empty partition
	case <-time.After(time.Minute):
		t.Fatal("w0 never read partition 0")
	}

	id := ""
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("adm-p-%d", i); streams.PartitionOf(c, 2) == 1 {
			id = c
		}
	}
	submitTo(t, ps, id, `{}`)
	cfg1 := b.config("w1")
	cfg1.Partitions, cfg1.ServePartitions, cfg1.Admission = 2, []int{1}, adm
	b.start(t, cfg1)
	require.Eventually(t, func() bool {
		rec, err := ps.For(id).Get(context.Background(), id)
		return err == nil && rec.Owner == "w1"
	}, time.Minute, 20*time.Millisecond,
		"the job of the busy partition 1 was never admitted: the gate's one grant went to empty partition 0's read")
}
