package streams

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A beat that must read the records (its liveness key had lapsed) is
// applied, its reply is lost and go-redis sends the very same EVALSHA
// again (MaxRetries: cmd/worker retries for seconds). The resend finds the
// token it is writing already in the key. It must still read the records:
// the applied try's findings (a lease lost) never reached the caller.
// Before: the resend took the key holding its own token for "as the last
// beat left it", skipped the records and refreshed a lease whose record
// names another owner, and every later beat found the key as written, so
// the loss was never reported by a beat.
//
// The state: A stalled past its lease; B took X over (admit: owner B,
// epoch+1) and died; A's claim pass took X back from B (the PEL names A)
// and its admit has not run (or failed), so A still holds X at its old
// epoch in memory. Only the record shows that A's lease is stale.
func TestRetriedBeatStillChecksRecords(t *testing.T) {
	t.Parallel()
	for _, first := range []bool{false, true} {
		name := "later_beat"
		if first {
			name = "first_beat"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, backendRedis)
			leases := b.admitMany(t, "A", "rb", 2)
			expect := ExpectAbsent
			if !first {
				_, err := b.st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:1", Expect: ExpectAbsent}, leases)
				require.NoError(t, err)
				expect = "a:1"
			}
			x := leases[0]

			// A stalls past the lease: its key expires, its entries idle.
			require.NoError(t, b.rdb.Del(b.ctx, b.keys.Alive("A")).Err())
			b.age(t, "A", x.Entry, time.Hour)
			cr, err := b.st.ClaimFrom(b.ctx, "B", "A", time.Minute, 1, false)
			require.NoError(t, err)
			require.Len(t, cr.Msgs, 1)
			require.Equal(t, x.Entry, cr.Msgs[0].ID)
			ad, err := b.st.Admit(b.ctx, []AdmitRequest{NewAdmitRequest(cr.Msgs[0], 1<<20)}, AdmitOpts{Consumer: "B", Now: b.now})
			require.NoError(t, err)
			require.Equal(t, Admitted, ad[0].Status)
			require.Equal(t, "B", ad[0].Record.Owner)
			// B dies; A's claim pass takes X back, its admit not run yet.
			b.age(t, "B", x.Entry, time.Hour)
			cr, err = b.st.ClaimFrom(b.ctx, "A", "B", time.Minute, 1, false)
			require.NoError(t, err)
			require.Len(t, cr.Msgs, 1)
			require.Equal(t, "A", b.owner(t, x.Entry))

			// A's beat (a first beat: another process with A's name wrote
			// the key meanwhile). Its reply is lost; go-redis resends it.
			if first {
				require.NoError(t, b.rdb.Set(b.ctx, b.keys.Alive("A"), "earlier-process:9", time.Minute).Err())
			}
			st, p := b.lostReplyStore(t, 3)
			lost := p.SwallowReply("a:2")
			res, err := st.Beat(b.ctx, "A", Liveness{Lease: time.Minute, Token: "a:2", Expect: expect}, leases)
			<-lost
			require.NoError(t, err, "go-redis resent the beat")
			require.True(t, res.Checked, "the resent beat skipped the records its applied try read")
			require.Equal(t, []Lease{x}, res.Lost, "the stale lease is reported lost")
		})
	}
}
