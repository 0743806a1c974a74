package streams

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFinalizeTimingsAndGPU: Runpod's delayTime, executionTime and workerId
// and the finalizing worker reach the record and the terminal event, and
// the endpoint's GPU counter moves once per job run: never again for a
// retried write (its reply lost), a second writer, or a fenced one; again
// for the job's next run after a retry.
func TestFinalizeTimingsAndGPU(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "g")
		out := Outcome{JobID: "g", Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch, State: "FAILED",
			Error: "boom", RunpodID: "rp-g", RunpodStatus: "FAILED",
			DelayMs: 1500, ExecMs: 4200, RunpodWorkerID: "gpuworker00001", Endpoint: "ep1"}
		opts := FinalizeOpts{ResultTTL: time.Hour, Now: b.now.Add(time.Second)}
		errs, err := b.st.Finalize(b.ctx, []Outcome{out}, opts)
		require.NoError(t, err)
		require.NoError(t, errs[0])

		got := b.get(t, "g")
		require.EqualValues(t, 1500, got.DelayMs)
		require.EqualValues(t, 4200, got.ExecMs)
		require.Equal(t, "gpuworker00001", got.RunpodWorkerID)
		require.Equal(t, rec.Owner, got.FinalizedBy)
		evs := b.events(t)
		last := evs[len(evs)-1]
		require.Equal(t, EventFailed, last.Type)
		require.EqualValues(t, 1500, last.Payload.DelayMs)
		require.EqualValues(t, 4200, last.Payload.ExecMs)
		require.Equal(t, "gpuworker00001", last.Payload.RunpodWorkerID)
		require.Equal(t, rec.Owner, last.Payload.FinalizedBy)

		want := map[string]GPUUsage{"ep1": {Ms: 4200, Runs: 1}}
		usage, err := b.st.GPUUsage(b.ctx)
		require.NoError(t, err)
		require.Equal(t, want, usage)

		// The same write again (its first reply lost), another worker's
		// outcome, a fenced one: none counts.
		other := out
		other.Owner, other.ExecMs = "w9", 9999
		stale := out
		stale.Epoch--
		errs, err = b.st.Finalize(b.ctx, []Outcome{out, other, stale}, opts)
		require.NoError(t, err)
		require.NoError(t, errs[0])
		require.ErrorIs(t, errs[1], ErrTerminal)
		require.ErrorIs(t, errs[2], ErrTerminal)
		usage, err = b.st.GPUUsage(b.ctx)
		require.NoError(t, err)
		require.Equal(t, want, usage)

		// Run 2 of the job is counted on its own; its record starts without
		// the first run's figures.
		_, err = b.st.Retry(b.ctx, "g", []byte(`{"again":true}`), b.now.Add(time.Minute))
		require.NoError(t, err)
		r2 := b.get(t, "g")
		require.Zero(t, r2.ExecMs)
		require.Empty(t, r2.RunpodWorkerID)
		require.Empty(t, r2.FinalizedBy)
		_, res := b.readAdmit(t, "w2", 1, AdmitOpts{MaxDeliveries: 5})
		require.Equal(t, Admitted, res[0].Status)
		r2 = res[0].Record
		errs, err = b.st.Finalize(b.ctx, []Outcome{{JobID: "g", Entry: r2.Entry, Owner: r2.Owner, Epoch: r2.Epoch,
			State: "COMPLETED", RunpodID: "rp-g2", ExecMs: 800, Endpoint: "ep1"}}, opts)
		require.NoError(t, err)
		require.NoError(t, errs[0])
		usage, err = b.st.GPUUsage(b.ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]GPUUsage{"ep1": {Ms: 5000, Runs: 2}}, usage)
	})
}

// TestFinalizeErrorJSON: Runpod's error object is stored as JSON (not JSON
// inside a string) in the record's result and the terminal event, beside
// the readable error.
func TestFinalizeErrorJSON(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		rec := b.admitted(t, "e")
		obj := []byte(`{"code":"E42","message":"quota exceeded"}`)
		errs, err := b.st.Finalize(b.ctx, []Outcome{{JobID: "e", Entry: rec.Entry, Owner: rec.Owner, Epoch: rec.Epoch,
			State: "FAILED", Error: "quota exceeded", ErrorJSON: obj, RunpodID: "rp-e"}}, FinalizeOpts{ResultTTL: time.Hour, Now: b.now})
		require.NoError(t, err)
		require.NoError(t, errs[0])
		got := b.get(t, "e")
		require.Equal(t, "quota exceeded", got.Error)
		require.JSONEq(t, string(obj), string(got.ErrorJSON))
		evs := b.events(t)
		last := evs[len(evs)-1]
		require.Equal(t, EventFailed, last.Type)
		require.Equal(t, "quota exceeded", last.Payload.Error)
		require.JSONEq(t, string(obj), string(last.Payload.ErrorJSON))
	})
}
