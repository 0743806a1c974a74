package streams

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// Redis loses its last writes (an older snapshot restored after a crash;
// the same happens with AOF everysec or a lagging replica promoted): worker
// A's admit is gone, the entry is delivered again and worker B is admitted
// at the same epoch A holds. Only B may write: the fence compares the owner
// as well as the epoch.
func TestFenceSurvivesLostWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, err := redistest.StartWith(redistest.Options{AppendOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := New(rdb, Config{Namespace: "lost"})
	require.NoError(t, err)
	now := time.UnixMilli(1_700_000_000_000)

	require.NoError(t, st.EnsureGroup(ctx))
	_, err = st.Submit(ctx, sub("j"), SubmitOpts{Now: now})
	require.NoError(t, err)
	snapshot := t.TempDir()
	require.NoError(t, srv.CopyData(snapshot))

	readAdmit := func(consumer string) Record {
		t.Helper()
		msgs, err := st.Read(ctx, consumer, 10, 0)
		require.NoError(t, err)
		require.Len(t, msgs, 1, "consumer %s: entries delivered", consumer)
		res, err := st.Admit(ctx, []AdmitRequest{NewAdmitRequest(msgs[0], 1<<20)}, AdmitOpts{Consumer: consumer, Now: now})
		require.NoError(t, err)
		require.Equal(t, Admitted, res[0].Status)
		return res[0].Record
	}
	a := readAdmit("A")
	require.NoError(t, st.Checkpoint(ctx, Checkpoint{JobID: "j", Owner: "A", Epoch: a.Epoch, Step: "SUBMITTING", Attempts: 1}, now))

	// Crash; the restored data predates A's admit.
	srv2, err := srv.RestartFrom(snapshot)
	require.NoError(t, err)
	t.Cleanup(func() { srv2.Stop() })
	require.Eventually(t, func() bool { return rdb.Ping(ctx).Err() == nil }, 10*time.Second, 10*time.Millisecond)

	b := readAdmit("B")
	require.Equal(t, a.Epoch, b.Epoch, "the lost admit makes B's epoch equal to A's")

	// A still believes it owns the job at that epoch: every write is refused.
	err = st.Checkpoint(ctx, Checkpoint{JobID: "j", Owner: "A", Epoch: a.Epoch, Step: "POLL", State: "QUEUED", RunpodID: "rp-A",
		Event: &EventInput{Type: EventQueued}}, now)
	require.True(t, errors.Is(err, ErrFenced), "A's checkpoint at B's epoch: %v", err)
	lost, err := st.Heartbeat(ctx, "A", []Lease{{JobID: "j", Entry: a.Entry, Epoch: a.Epoch}})
	require.NoError(t, err)
	require.Len(t, lost, 1, "A's heartbeat must not hold B's lease")
	errs, err := st.Finalize(ctx, []Outcome{{JobID: "j", Owner: "A", Epoch: a.Epoch, State: "FAILED", Error: "A"}}, FinalizeOpts{Now: now})
	require.NoError(t, err)
	require.True(t, errors.Is(errs[0], ErrFenced), "A's finalize at B's epoch: %v", errs[0])
	n, err := st.Handoff(ctx, "A", []Lease{{JobID: "j", Entry: a.Entry, Epoch: a.Epoch}})
	require.NoError(t, err)
	require.Zero(t, n, "A must not hand off B's lease")

	// B writes.
	require.NoError(t, st.Checkpoint(ctx, Checkpoint{JobID: "j", Owner: "B", Epoch: b.Epoch, Step: "POLL", State: "QUEUED", RunpodID: "rp-B",
		Event: &EventInput{Type: EventQueued}}, now))
	errs, err = st.Finalize(ctx, []Outcome{{JobID: "j", Owner: "B", Epoch: b.Epoch, State: "COMPLETED", Output: []byte(`1`), RunpodID: "rp-B"}}, FinalizeOpts{Now: now})
	require.NoError(t, err)
	require.NoError(t, errs[0])
	rec, err := st.Get(ctx, "j")
	require.NoError(t, err)
	require.Equal(t, "COMPLETED", rec.State)
	require.Equal(t, "rp-B", rec.RunpodID)
	require.Equal(t, "B", rec.Owner)
}
