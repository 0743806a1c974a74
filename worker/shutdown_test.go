package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// watchHandoff is the real store, except that Handoff, once it has written,
// waits (bounded) for a heartbeat to follow, and counts those that do.
type watchHandoff struct {
	*streams.Store
	wait         time.Duration
	handedOff    atomic.Bool
	beatsAfter   atomic.Int64
	beatAfterSig chan struct{}
}

func (s *watchHandoff) Beat(ctx context.Context, consumer string, lv streams.Liveness, leases []streams.Lease) (streams.BeatResult, error) {
	if s.handedOff.Load() {
		s.beatsAfter.Add(1)
		select {
		case s.beatAfterSig <- struct{}{}:
		default:
		}
	}
	return s.Store.Beat(ctx, consumer, lv, leases)
}

func (s *watchHandoff) Handoff(ctx context.Context, consumer string, leases []streams.Lease) (int, error) {
	n, err := s.Store.Handoff(ctx, consumer, leases)
	s.handedOff.Store(true)
	// A heartbeater still running ticks within a few HeartbeatIntervals.
	t := time.NewTimer(s.wait)
	defer t.Stop()
	select {
	case <-s.beatAfterSig:
	case <-t.C:
	}
	return n, err
}

// The heartbeater stops before the handoff: no heartbeat may follow it and
// reset the handed-off entry's idle time (which would strand it for MinIdle).
func TestNoHeartbeatAfterHandoff(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config("w").WithDefaults()
	st := &watchHandoff{Store: b.store, wait: 3 * cfg.HeartbeatInterval, beatAfterSig: make(chan struct{}, 1)}
	w := newWorker(st, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	b.submit(t, "hb", `{"mock_delay":60000,"mock_return":"x"}`, 0)
	b.waitRecord(t, "hb", 5*time.Second, func(r streams.Record) bool { return r.RunpodID != "" })
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	require.True(t, st.handedOff.Load())
	require.EqualValues(t, 1, w.Stats().HandedOff)
	require.Zero(t, st.beatsAfter.Load(), "a heartbeat followed the handoff")

	// The entry is still long idle: a peer can claim it at once.
	p, err := b.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{
		Stream: b.store.Keys().Submissions(), Group: b.store.Group(), Start: "-", End: "+", Count: 10}).Result()
	require.NoError(t, err)
	require.Len(t, p, 1)
	require.Greater(t, p[0].Idle, cfg.MinIdle, "handed-off entry idle time was reset")
}

// stopAfterDelivery is the real store, except that the first Read or Claim
// that delivers entries returns only once the shutdown has begun (the
// loop's ctx is done), so the admit that follows runs during shutdown.
type stopAfterDelivery struct {
	*streams.Store
	stop      context.CancelFunc
	delivered atomic.Bool
}

func (s *stopAfterDelivery) hold(ctx context.Context, n int) {
	if n == 0 || !s.delivered.CompareAndSwap(false, true) {
		return
	}
	s.stop()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		panic("loop ctx not canceled 5s after Run's ctx")
	}
}

func (s *stopAfterDelivery) Read(ctx context.Context, consumer string, count int, block time.Duration) ([]redis.XMessage, error) {
	msgs, err := s.Store.Read(ctx, consumer, count, block)
	s.hold(ctx, len(msgs))
	return msgs, err
}

func (s *stopAfterDelivery) ClaimFrom(ctx context.Context, to, from string, minIdle time.Duration, count int, own bool) (streams.ClaimResult, error) {
	res, err := s.Store.ClaimFrom(ctx, to, from, minIdle, count, own)
	s.hold(ctx, len(res.Msgs))
	return res, err
}

// Entries delivered (by XREADGROUP or XAUTOCLAIM) just as the shutdown
// begins are still admitted and then handed off, not stranded for MinIdle.
func TestEntriesDeliveredAtShutdownAreHandedOff(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"read", "claim"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			id := "d-" + via
			b.submit(t, id, `{"mock_delay":60000,"mock_return":"x"}`, 0)
			if via == "claim" {
				// A crashed consumer got the entry long ago.
				require.NoError(t, b.store.EnsureGroup(context.Background()))
				msgs, err := b.store.Read(context.Background(), "dead", 1, 0)
				require.NoError(t, err)
				require.Len(t, msgs, 1)
				require.NoError(t, b.rdb.Do(context.Background(), "XCLAIM", b.store.Keys().Submissions(), b.store.Group(),
					"dead", 0, msgs[0].ID, "IDLE", 3600000, "JUSTID").Err())
			}
			cfg := b.config("w").WithDefaults()
			ctx, cancel := context.WithCancel(context.Background())
			st := &stopAfterDelivery{Store: b.store, stop: cancel}
			w := newWorker(st, cfg)
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(15 * time.Second):
				cancel()
				t.Fatal("Run did not return")
			}
			require.True(t, st.delivered.Load())
			rec := b.get(t, id)
			require.Equal(t, "w", rec.Owner, "the delivered entry was not admitted")
			require.EqualValues(t, 1, w.Stats().Admitted)
			require.EqualValues(t, 1, w.Stats().HandedOff)
			p, err := b.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{
				Stream: b.store.Keys().Submissions(), Group: b.store.Group(), Start: "-", End: "+", Count: 10}).Result()
			require.NoError(t, err)
			require.Len(t, p, 1)
			require.Equal(t, "w", p[0].Consumer)
			require.Greater(t, p[0].Idle, cfg.MinIdle, "entry not handed off: stranded for MinIdle")
		})
	}
}

// brokenStore is the real store with some operations failing, as when
// Redis goes away for good.
type brokenStore struct {
	*streams.Store
	group, finalize, handoff bool
}

var errBroken = errors.New("injected: redis unreachable")

func (s *brokenStore) EnsureGroup(ctx context.Context) error {
	if s.group {
		return errBroken
	}
	return s.Store.EnsureGroup(ctx)
}

func (s *brokenStore) Finalize(ctx context.Context, outs []streams.Outcome, opts streams.FinalizeOpts) ([]error, error) {
	if s.finalize {
		return nil, errBroken
	}
	return s.Store.Finalize(ctx, outs, opts)
}

func (s *brokenStore) Handoff(ctx context.Context, consumer string, leases []streams.Lease) (int, error) {
	if s.handoff {
		return 0, errBroken
	}
	return s.Store.Handoff(ctx, consumer, leases)
}

// TestRunReportsAFailedStop: Run returns an error, not nil, when it stops on
// a failure: it never got the consumer group, or it stopped with outcomes it
// could not write and leases it could not hand off.
func TestRunReportsAFailedStop(t *testing.T) {
	t.Parallel()
	t.Run("never_started", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w := newWorker(&brokenStore{Store: b.store, group: true}, b.config("w").WithDefaults())
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err := w.Run(ctx)
		require.ErrorIs(t, err, errBroken)
	})
	t.Run("outcome_unwritten", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		st := &brokenStore{Store: b.store, finalize: true, handoff: true}
		var decided atomic.Bool
		cfg := b.config("w").WithDefaults()
		cfg.StepHook = func(_, point string) {
			if point == PointFinalize {
				decided.Store(true)
			}
		}
		w := newWorker(st, cfg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		b.submit(t, "rf", `{"mock_delay":1,"mock_return":1}`, 0)
		require.Eventually(t, decided.Load, 10*time.Second, 5*time.Millisecond)
		cancel()
		var err error
		select {
		case err = <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return")
		}
		require.ErrorIs(t, err, errBroken)
		require.ErrorContains(t, err, "1 decided outcomes could not be written")
		require.ErrorContains(t, err, "1 leases could not be handed off")
	})
}
