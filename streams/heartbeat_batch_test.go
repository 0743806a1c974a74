package streams

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHeartbeatBatchPELRead: a batch's PEL check is one XPENDING over its id
// range. Whether that answer is complete (a sorted, narrow batch) or may be
// cut (the range holds more of our entries than were asked for: the per
// lease fallback), held leases are refreshed, the one another consumer took
// is lost and is not stolen back, and the order of the leases does not
// matter.
func TestHeartbeatBatchPELRead(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *testBundle) {
		const n = 80 // more than a batch of 3 asks XPENDING for (3 + 64)
		var leases []Lease
		for i := range n {
			id := fmt.Sprintf("hb%02d", i)
			_, err := b.st.Submit(b.ctx, sub(id), SubmitOpts{Now: b.now})
			require.NoError(t, err)
		}
		_, res := b.readAdmit(t, "w1", n, AdmitOpts{})
		for _, r := range res {
			require.Equal(t, Admitted, r.Status)
			leases = append(leases, Lease{JobID: r.Record.JobID, Entry: r.Record.Entry, Epoch: r.Record.Epoch})
		}
		SortLeases(leases)
		stolen := leases[40]
		b.takeOver(t, "w2", stolen.Entry)
		for _, l := range leases {
			if l != stolen {
				b.age(t, "w1", l.Entry, time.Hour)
			}
		}

		// Narrow and sorted: complete answer.
		lost, err := b.st.Heartbeat(b.ctx, "w1", leases[39:42])
		require.NoError(t, err)
		require.Equal(t, []Lease{stolen}, lost)
		// Wide (first, stolen, last: 80 of ours in range), unsorted: fallback.
		lost, err = b.st.Heartbeat(b.ctx, "w1", []Lease{leases[n-1], stolen, leases[0]})
		require.NoError(t, err)
		require.Equal(t, []Lease{stolen}, lost)

		for _, i := range []int{0, 39, 41, n - 1} {
			p := b.pending(t, leases[i].Entry)
			require.Equal(t, "w1", p.Consumer)
			require.Less(t, p.Idle, time.Minute, "lease %d refreshed", i)
		}
		require.Greater(t, b.pending(t, leases[1].Entry).Idle, 59*time.Minute, "a lease not in any batch is untouched")
		require.Equal(t, "w2", b.pending(t, stolen.Entry).Consumer, "never stolen back")
	})
}

func TestSortLeasesNumerically(t *testing.T) {
	t.Parallel()
	ls := []Lease{{Entry: "10-0"}, {Entry: "9-1"}, {Entry: "9-10"}, {Entry: "x"}, {Entry: "9-2"}}
	SortLeases(ls)
	var got []string
	for _, l := range ls {
		got = append(got, l.Entry)
	}
	require.Equal(t, []string{"9-1", "9-2", "9-10", "10-0", "x"}, got)
}
