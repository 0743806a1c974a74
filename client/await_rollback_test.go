package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// rollBackEvents makes the shared reader's position pass the events
// stream's end, as a Redis rollback does: an event an hour ahead (a master
// whose clock ran ahead) for job ahead, which waitAhead awaits, is read and
// then lost, and the stream's last id goes back to its last real entry, so
// the next event's id is below the reader's position.
func rollBackEvents(t *testing.T, b *testBundle, waitAhead <-chan awaited) {
	t.Helper()
	ctx := context.Background()
	events := b.worker.store.Keys().Events()
	ahead := fmt.Sprintf("%d-0", time.Now().Add(time.Hour).UnixMilli())
	require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: events, ID: ahead,
		Values: []any{"type", "completed", "job_id", "ahead", "state", string(workflow.StateCompleted)}}).Err())
	require.NoError(t, receive(t, waitAhead).err)
	require.NoError(t, b.rdb.XDel(ctx, events, ahead).Err())
	last, err := b.rdb.XRevRangeN(ctx, events, "+", "-", 1).Result()
	require.NoError(t, err)
	require.Len(t, last, 1)
	require.NoError(t, b.rdb.Do(ctx, "XSETID", events, last[0].ID).Err())
}

// A Redis rollback (a restart from an older snapshot, a promoted replica
// that missed the last writes, on a host whose clock is behind) leaves the
// shared events reader's position past the stream's end: the terminal
// event written afterwards gets a lower id and the reader's XREAD after its
// position never returns it. AwaitResult must still return, from the
// record. Before the fix it waited until its context ended.
func TestAwaitResultAfterEventsRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, client.Config{})
	client.SetAwaitRecheck(b.client, 100*time.Millisecond)
	b.submit(t, "j")
	b.submit(t, "ahead")
	recs := b.worker.admit(ctx, 2, streams.AdmitOpts{})

	waitJ := awaitAsync(ctx, b.client, "j")
	waitAhead := awaitAsync(ctx, b.client, "ahead")
	waitWaiters(t, b.client, 2)

	rollBackEvents(t, b, waitAhead)

	b.worker.finish(ctx, recs["j"], workflow.StateCompleted, `{"ok":1}`, "")
	got := receive(t, waitJ)
	require.NoError(t, got.err)
	require.Equal(t, workflow.StateCompleted, got.r.Status)
	require.JSONEq(t, `{"ok":1}`, string(got.r.Output))
	require.Zero(t, client.Waiters(b.client))
}

// The same rollback while Submit waits for Runpod to accept the job
// (WaitAccepted): it returns the Runpod id from the record. Before the fix
// it waited until its context ended.
func TestWaitAcceptedAfterEventsRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, client.Config{})
	client.SetAwaitRecheck(b.client, 100*time.Millisecond)
	b.submit(t, "ahead")
	waitAhead := awaitAsync(ctx, b.client, "ahead")
	waitWaiters(t, b.client, 1)

	submitted := make(chan error, 1)
	var res client.SubmitResult
	go func() {
		var err error
		res, err = b.client.Submit(ctx, client.SubmitOptions{ClientJobID: "j", Input: map[string]any{"p": 1}, WaitAccepted: true})
		submitted <- err
	}()
	waitWaiters(t, b.client, 2)
	recs := b.worker.admit(ctx, 2, streams.AdmitOpts{})
	rollBackEvents(t, b, waitAhead)

	b.worker.accept(ctx, recs["j"], "rp-j")
	select {
	case err := <-submitted:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Submit with WaitAccepted did not return")
	}
	require.Equal(t, "rp-j", res.RunpodJobID)
}
