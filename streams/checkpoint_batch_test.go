package streams

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// gateHook holds the first checkpoint script call until release is closed
// and counts every checkpoint script call (EVALSHA or EVAL of its body).
type gateHook struct {
	mu      sync.Mutex
	calls   int
	held    chan struct{} // closed once the first call is held
	release chan struct{}
}

func newGateHook() *gateHook {
	return &gateHook{held: make(chan struct{}), release: make(chan struct{})}
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isCheckpointCall(cmd) {
			h.mu.Lock()
			h.calls++
			first := h.calls == 1
			h.mu.Unlock()
			if first {
				close(h.held)
				<-h.release
			}
		}
		return next(ctx, cmd)
	}
}

func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *gateHook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

func isCheckpointCall(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	name := strings.ToLower(fmt.Sprint(args[0]))
	return (name == "evalsha" && args[1] == scriptCheckpoint.Hash()) ||
		(name == "eval" && strings.Contains(fmt.Sprint(args[1]), "checkpoint.lua"))
}

// queued is how many calls wait for the next checkpoint batch.
func (b *testBundle) queued() int {
	b.st.cps.mu.Lock()
	defer b.st.cps.mu.Unlock()
	return len(b.st.cps.queue)
}

func (b *testBundle) waitQueued(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return b.queued() == n }, time.Minute, time.Millisecond)
}

// TestCheckpointConcurrentCallsShareOneScriptCall: calls made while a
// checkpoint is in flight go together in the next script call, and each
// gets its own answer (one of them fenced, its batch-mates applied).
func TestCheckpointConcurrentCallsShareOneScriptCall(t *testing.T) {
	t.Parallel()
	b := setup(t, backendRedis)
	require.NoError(t, b.st.LoadScripts(b.ctx))
	ids := []string{"b0", "b1", "b2", "b3", "b4"}
	recs := map[string]Record{}
	for _, id := range ids {
		recs[id] = b.admitted(t, id)
	}
	h := newGateHook()
	b.rdb.AddHook(h)

	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	cp := func(i int) {
		defer wg.Done()
		r := recs[ids[i]]
		epoch := r.Epoch
		if i == 3 {
			epoch++ // fenced
		}
		errs[i] = b.st.Checkpoint(b.ctx, Checkpoint{JobID: ids[i], Owner: r.Owner, Epoch: epoch, Step: "SUBMITTING", Attempts: 1}, b.now)
	}
	wg.Add(1)
	go cp(0)
	<-h.held // b0 is in flight alone
	for i := 1; i < len(ids); i++ {
		wg.Add(1)
		go cp(i)
	}
	b.waitQueued(t, len(ids)-1)
	close(h.release)
	wg.Wait()

	require.Equal(t, 2, h.count(), "b0 alone, then the four queued behind it in one call")
	for i, id := range ids {
		if i == 3 {
			require.ErrorIs(t, errs[i], ErrFenced, id)
			require.Equal(t, "SUBMIT", b.get(t, id).Step, "a refused checkpoint writes nothing")
			continue
		}
		require.NoError(t, errs[i], id)
		require.Equal(t, "SUBMITTING", b.get(t, id).Step, id)
	}
}

// TestCheckpointCanceledWhileQueuedWritesNothing: a call whose ctx ends
// while it waits for the batch in flight returns at once and is never sent.
func TestCheckpointCanceledWhileQueuedWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, backendRedis)
	require.NoError(t, b.st.LoadScripts(b.ctx))
	r0, r1, r2 := b.admitted(t, "q0"), b.admitted(t, "q1"), b.admitted(t, "q2")
	h := newGateHook()
	b.rdb.AddHook(h)

	done0 := make(chan error, 1)
	go func() {
		done0 <- b.st.Checkpoint(b.ctx, Checkpoint{JobID: "q0", Owner: r0.Owner, Epoch: r0.Epoch, Step: "SUBMITTING", Attempts: 1}, b.now)
	}()
	<-h.held
	ctx, cancel := context.WithCancel(b.ctx)
	done1 := make(chan error, 1)
	go func() {
		done1 <- b.st.Checkpoint(ctx, Checkpoint{JobID: "q1", Owner: r1.Owner, Epoch: r1.Epoch, Step: "SUBMITTING", Attempts: 1}, b.now)
	}()
	done2 := make(chan error, 1)
	go func() {
		done2 <- b.st.Checkpoint(b.ctx, Checkpoint{JobID: "q2", Owner: r2.Owner, Epoch: r2.Epoch, Step: "SUBMITTING", Attempts: 1}, b.now)
	}()
	b.waitQueued(t, 2)
	cancel()
	require.ErrorIs(t, <-done1, context.Canceled)
	require.Equal(t, 1, b.queued(), "the canceled call left the queue")
	close(h.release)
	require.NoError(t, <-done0)
	require.NoError(t, <-done2)
	require.Equal(t, "SUBMIT", b.get(t, "q1").Step, "never sent")
	require.Equal(t, "SUBMITTING", b.get(t, "q2").Step)
	require.Equal(t, 2, h.count())
}

// TestCheckpointBatchMateErrorIsItsOwn: a checkpoint whose commands fail
// (its key holds a string) is answered with an error alone; the rest of
// its batch applies.
func TestCheckpointBatchMateErrorIsItsOwn(t *testing.T) {
	t.Parallel()
	b := setup(t, backendRedis)
	require.NoError(t, b.st.LoadScripts(b.ctx))
	r0, r1 := b.admitted(t, "e0"), b.admitted(t, "e1")
	require.NoError(t, b.rdb.Set(b.ctx, b.keys.Job("bad"), "not a hash", 0).Err())
	h := newGateHook()
	b.rdb.AddHook(h)
	go func() {
		_ = b.st.Checkpoint(b.ctx, Checkpoint{JobID: "e0", Owner: r0.Owner, Epoch: r0.Epoch, Step: "SUBMITTING", Attempts: 1}, b.now)
	}()
	<-h.held
	errBad, errOK := make(chan error, 1), make(chan error, 1)
	go func() {
		errBad <- b.st.Checkpoint(b.ctx, Checkpoint{JobID: "bad", Owner: "w1", Epoch: 1, Step: "SUBMITTING", Attempts: 1}, b.now)
	}()
	go func() {
		errOK <- b.st.Checkpoint(b.ctx, Checkpoint{JobID: "e1", Owner: r1.Owner, Epoch: r1.Epoch, Step: "SUBMITTING", Attempts: 1}, b.now)
	}()
	b.waitQueued(t, 2)
	close(h.release)
	err := <-errBad
	require.Error(t, err)
	require.Contains(t, err.Error(), "WRONGTYPE")
	require.False(t, refusedErr(err), "a failed write is not a refusal")
	require.NoError(t, <-errOK)
	require.Equal(t, "SUBMITTING", b.get(t, "e1").Step)
}

func refusedErr(err error) bool {
	for _, e := range []error{ErrFenced, ErrTerminal, ErrNotFound, ErrCancelRequested} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
