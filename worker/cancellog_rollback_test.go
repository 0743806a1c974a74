package worker

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// aheadReadStore reports when a beat's read of the cancel log has moved the
// worker's position to ahead. No hints reach the worker (noHints).
type aheadReadStore struct {
	noHints
	ahead string
	read  chan struct{}
	once  sync.Once
}

func (s *aheadReadStore) CancelsAfter(ctx context.Context, after string, read bool, count int64) (streams.CancelLogRead, error) {
	r, err := s.Store.CancelsAfter(ctx, after, read, count)
	if err == nil && r.Next == s.ahead {
		s.once.Do(func() { close(s.read) })
	}
	return r, err
}

// A Redis rollback loses the cancel log's tail after a beat read it, and the
// next cancel is logged under an id below the worker's position (the lost
// entry came from a faster clock: an old master's, or ours before a promoted
// replica's). Polls are an hour away and the hint never arrives. Before: the
// beats read after the position, skipped the cancel, and the job ran on
// until the 10-minute re-read of its record. Now the read sees its position
// gone and reads the log again from its start.
func TestCancelAfterCancelLogRollbackIsSeen(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	log := b.store.Keys().Cancels()
	old, err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: log, Values: []any{"job_id", "gone-1"}}).Result()
	require.NoError(t, err)
	ahead := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10) + "-0"
	st := &aheadReadStore{noHints: noHints{b.store}, ahead: ahead, read: make(chan struct{})}
	cfg := b.config("w")
	cfg.Poll.Initial, cfg.Poll.Max, cfg.Poll.QueueMax = time.Hour, time.Hour, time.Hour
	w := newWorker(st, cfg.WithDefaults())
	b.run(t, w)
	b.submit(t, "rb", `{"mock_delay":3600000}`, 0)
	b.waitRecord(t, "rb", 30*time.Second, func(r streams.Record) bool { return r.RunpodID != "" && r.Owner == "w" })

	require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: log, ID: ahead, Values: []any{"job_id", "gone-2"}}).Err())
	select {
	case <-st.read:
	case <-time.After(time.Minute):
		t.Fatal("no beat read the cancel log up to the entry to lose")
	}
	// The rollback as a reader sees it: the tail gone, the last id back.
	require.NoError(t, b.rdb.XDel(ctx, log, ahead).Err())
	require.NoError(t, b.rdb.Do(ctx, "XSETID", log, old).Err())

	_, err = b.store.Cancel(ctx, "rb", streams.CancelOpts{})
	require.NoError(t, err)
	b.waitState(t, "rb", "CANCELED", 30*time.Second)
	_, _, cancels := b.rp.counts()
	require.Equal(t, 1, cancels, "the Runpod job was cancelled")
	require.Equal(t, uint64(1), w.Stats().CancelLogRollbacks)
}
