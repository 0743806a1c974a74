package streams

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// PruneConsumers removes idle consumers without pending entries, never one
// that holds an entry, nor the caller's own; a missing stream or group is
// nothing to prune.
func TestPruneConsumers(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		b.rawAdd(t, "job_id", "j", "input", `1`)
		msgs, err := b.st.Read(b.ctx, "holder", 1, 0)
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		for _, c := range []string{"gone", "me"} { // each took an entry and acked it: 0 pending
			b.rawAdd(t, "job_id", "j-"+c, "input", `1`)
			got, err := b.st.Read(b.ctx, c, 1, 0)
			require.NoError(t, err)
			require.Len(t, got, 1)
			require.NoError(t, b.rdb.XAck(b.ctx, b.keys.Submissions(), b.st.Group(), got[0].ID).Err())
		}

		removed, err := b.st.PruneConsumers(b.ctx, time.Hour, "me")
		require.NoError(t, err)
		require.Empty(t, removed, "nobody idle for an hour")
		// miniredis reports idle -1 after XREADGROUP (it does not track it),
		// so it never prunes: safe, and --dev runs are short.
		b.skipOnMini(t, "XINFO CONSUMERS idle is not tracked")
		require.Eventually(t, func() bool {
			removed, err = b.st.PruneConsumers(b.ctx, time.Millisecond, "me")
			require.NoError(t, err)
			return len(removed) > 0
		}, 5*time.Second, 5*time.Millisecond)
		require.Equal(t, []string{"gone"}, removed)
		require.Equal(t, map[string]string{msgs[0].ID: "holder"}, b.pel(t), "the holder keeps its entry")
	})
	t.Run("NoGroup", func(t *testing.T) {
		t.Parallel()
		b := setup(t, backendRedis)
		st, err := New(b.rdb, Config{Namespace: b.keys.Namespace() + "-none"})
		require.NoError(t, err)
		removed, err := st.PruneConsumers(b.ctx, time.Millisecond, "")
		require.NoError(t, err)
		require.Empty(t, removed)
	})
}

// TrimEvents in bounded steps, then exactly: nothing older than the cut
// survives, nothing newer is touched.
func TestTrimEventsStepsThenExact(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		for i := 1; i <= 1000; i++ {
			b.rawEvent(t, i)
		}
		cut := time.UnixMilli(700)
		var total int64
		for {
			n, err := b.st.TrimEvents(b.ctx, cut, 100)
			require.NoError(t, err)
			if n == 0 {
				break
			}
			if b.mini == nil { // miniredis ignores LIMIT and trims all at once
				require.LessOrEqual(t, n, int64(200), "a step is bounded")
			}
			total += n
		}
		n, err := b.st.TrimEvents(b.ctx, cut, 0)
		require.NoError(t, err)
		require.EqualValues(t, 699, total+n)
		require.EqualValues(t, 301, b.xlen(t, b.keys.Events()))
	})
}

func (b *testBundle) rawEvent(t *testing.T, ms int) {
	t.Helper()
	require.NoError(t, b.rdb.Do(b.ctx, "XADD", b.keys.Events(), fmt.Sprintf("%d-0", ms), "type", "x").Err())
}
