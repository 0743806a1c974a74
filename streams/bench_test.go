package streams

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

// countHook counts commands sent and round trips made (a pipeline is one
// round trip carrying several commands).
type countHook struct{ cmds, trips atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		h.trips.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.cmds.Add(int64(len(cmds)))
		h.trips.Add(1)
		return next(ctx, cmds)
	}
}

// BenchmarkAdmitFinalize runs jobs through the worker's Redis path in batches
// of 100: raw XADD (the producer, pipelined), Read, Admit, Heartbeat,
// Finalize, and reports Redis commands and round trips per job (the target
// is at most 8 commands per job end to end).
func BenchmarkAdmitFinalize(b *testing.B) {
	for _, withHash := range []bool{true, false} {
		b.Run(fmt.Sprintf("input_hash=%v", withHash), func(b *testing.B) {
			benchAdmitFinalize(b, withHash)
		})
	}
}

func benchAdmitFinalize(b *testing.B, withHash bool) {
	const batch = 100
	ctx := context.Background()
	rdb, ns := redistest.New(b)
	hook := &countHook{}
	rdb.AddHook(hook)
	st, err := New(rdb, Config{Namespace: ns})
	require.NoError(b, err)
	require.NoError(b, st.EnsureGroup(ctx))
	require.NoError(b, st.LoadScripts(ctx))
	now := time.Now()
	hook.cmds.Store(0)
	hook.trips.Store(0)
	jobs := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pipe := rdb.Pipeline()
		for j := range batch {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: st.Keys().Submissions(),
				Values: SubmissionValues(Submission{JobID: fmt.Sprint("b", i, "-", j), Input: []byte(`{"x":1}`),
					InputHash: hash(withHash, fmt.Sprint("h", i, "-", j))})})
		}
		_, err := pipe.Exec(ctx)
		require.NoError(b, err)
		msgs, err := st.Read(ctx, "w1", batch, 0)
		require.NoError(b, err)
		reqs := make([]AdmitRequest, len(msgs))
		for k, m := range msgs {
			reqs[k] = NewAdmitRequest(m, 0)
		}
		res, err := st.Admit(ctx, reqs, AdmitOpts{Consumer: "w1", Now: now, ResultTTL: time.Hour})
		require.NoError(b, err)
		leases := make([]Lease, 0, len(res))
		outs := make([]Outcome, 0, len(res))
		for _, r := range res {
			require.Equal(b, Admitted, r.Status)
			leases = append(leases, Lease{JobID: r.Record.JobID, Entry: r.Record.Entry, Epoch: r.Record.Epoch})
			o := Outcome{JobID: r.Record.JobID, Entry: r.Record.Entry, Owner: r.Record.Owner, Epoch: r.Record.Epoch,
				State: "COMPLETED", Output: []byte(`{"y":2}`)}
			// The worker knows the hash from the admitted record; given, it
			// saves Finalize a read. Jobs without a hash always cost the read.
			o.InputHash = r.Record.InputHash
			outs = append(outs, o)
		}
		lost, err := st.Heartbeat(ctx, "w1", leases)
		require.NoError(b, err)
		require.Empty(b, lost)
		errs, err := st.Finalize(ctx, outs, FinalizeOpts{Now: now, ResultTTL: time.Hour})
		require.NoError(b, err)
		for _, e := range errs {
			require.NoError(b, e)
		}
		jobs += len(msgs)
	}
	b.StopTimer()
	b.ReportMetric(float64(hook.cmds.Load())/float64(jobs), "cmds/job")
	b.ReportMetric(float64(hook.trips.Load())/float64(jobs), "trips/job")
	b.ReportMetric(float64(jobs)/b.Elapsed().Seconds(), "jobs/s")
}

func hash(use bool, h string) string {
	if use {
		return h
	}
	return ""
}
