package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestRecoverAllPending: the seed's recoverAllPending() under the name a
// seed user looks for. Jobs of a crashed worker (on Runpod, idle past
// MinIdle) are taken over by one call and resumed at POLL, never sent
// again; a second call finds nothing left to recover.
func TestRecoverAllPending(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 5
	for _, id := range jobIDs("rap", n) {
		b.submit(t, id, `{"mock_delay":200,"mock_return":"ok"}`, 0)
	}
	rpIDs := crashAfterRun(t, b, "crashed", n)

	r := b.start(t, b.config("survivor")) // ClaimInterval 1 min: only the calls below claim
	recovered := 0
	require.Eventually(t, func() bool {
		k, err := r.w.RecoverAllPending(context.Background())
		require.NoError(t, err)
		recovered += k
		return recovered == n
	}, time.Minute, 100*time.Millisecond)
	for i, id := range jobIDs("rap", n) {
		rec := b.waitState(t, id, workflow.StateCompleted, time.Minute)
		require.Equal(t, rpIDs[i], rec.RunpodID, "resumed, not resubmitted")
	}
	k, err := r.w.RecoverAllPending(context.Background())
	require.NoError(t, err)
	require.Zero(t, k, "nothing pending is left")
	runs, _, _ := b.rp.counts()
	require.Equal(t, n, runs, "no second /run")
}
