package worker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// admitGateStore holds the reply of the Admit that admits job gated until
// release is closed (admit.lua has run: the record names us, the worker has
// not adopted the job yet), and reports when a read of the cancel log
// returned gated. No hints reach the worker (noHints).
type admitGateStore struct {
	noHints
	gated    string
	admitted chan struct{} // closed when gated's admit has run
	release  chan struct{}
	logged   chan struct{} // closed when a cancel-log read returned gated
	once     sync.Once
	logOnce  sync.Once
}

func (s *admitGateStore) Admit(ctx context.Context, reqs []streams.AdmitRequest, opts streams.AdmitOpts) ([]streams.AdmitResult, error) {
	res, err := s.Store.Admit(ctx, reqs, opts)
	for _, r := range res {
		if r.Status == streams.Admitted && r.Record.JobID == s.gated {
			s.once.Do(func() { close(s.admitted) })
			<-s.release
		}
	}
	return res, err
}

func (s *admitGateStore) CancelsAfter(ctx context.Context, after string, read bool, count int64) (streams.CancelLogRead, error) {
	r, err := s.Store.CancelsAfter(ctx, after, read, count)
	if slices.Contains(r.JobIDs, s.gated) {
		s.logOnce.Do(func() { close(s.logged) })
	}
	return r, err
}

// A cancel landing while a takeover admits a job already on Runpod: after
// admit.lua ran (the record it returned has no cancel flag) and before the
// worker adopted the job. The hint is missed (the subscription was
// reconnecting), and a beat, for another job of the partition, reads the
// cancel log past the cancel while the job is not held yet. Before: the
// wake found no job and was dropped, the log's position had moved on, and
// the job ran on uncancelled on Runpod until the poll's re-read of the
// record (cancelRecheckEvery, 10 min). Now a wake for a job being admitted
// is kept and applied when the job is adopted.
func TestCancelDuringTakeoverAdmitIsSeen(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.submit(t, "ct", `{"mock_delay":3600000}`, 0)
	crashAfterRun(t, b, "dead", 1)

	st := &admitGateStore{noHints: noHints{b.store}, gated: "ct",
		admitted: make(chan struct{}), release: make(chan struct{}), logged: make(chan struct{})}
	var releaseOnce sync.Once
	open := func() { releaseOnce.Do(func() { close(st.release) }) }
	t.Cleanup(open)
	cfg := b.config("w")
	cfg.Poll.Initial, cfg.Poll.Max, cfg.Poll.QueueMax = time.Hour, time.Hour, time.Hour
	w := newWorker(st, cfg.WithDefaults())
	b.run(t, w)
	// Another job of the partition, held by w: its beats read the log.
	b.submit(t, "other", `{"mock_delay":3600000}`, 0)
	b.waitRecord(t, "other", 30*time.Second, func(r streams.Record) bool { return r.RunpodID != "" && r.Owner == "w" })

	// The dead worker's lease lapses; w's claim pass admits ct.
	require.NoError(t, b.rdb.Do(context.Background(), "XCLAIM", b.store.Keys().Submissions(), b.store.Group(), "dead", 0,
		b.get(t, "ct").Entry, "IDLE", time.Hour.Milliseconds(), "JUSTID").Err())
	recovered := make(chan struct{})
	go func() {
		defer close(recovered)
		_, _ = w.RecoverNow(context.Background())
	}()
	<-st.admitted
	_, err := b.store.Cancel(context.Background(), "ct", streams.CancelOpts{})
	require.NoError(t, err)
	select {
	case <-st.logged:
	case <-time.After(time.Minute):
		t.Fatal("no beat read the cancel log")
	}
	open()
	<-recovered

	b.waitState(t, "ct", "CANCELED", 30*time.Second)
	_, _, cancels := b.rp.counts()
	require.Equal(t, 1, cancels, "the Runpod job was cancelled")
}
