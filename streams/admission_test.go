package streams

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func testAdmissionParams() AdmissionParams {
	return AdmissionParams{EndpointID: "ep1", Depth: 10, Interval: time.Second, ReadHold: 2 * time.Second, Stale: 30 * time.Second}
}

// TestAdmissionOneRoomForThePool: four callers share one reading's room (not
// four rooms); one caller is elected to read per interval while the others
// wait; jobs admitted and not yet on Runpod (unsent reports) count against
// the next reading; a failed reading admits nothing until the next one.
func TestAdmissionOneRoomForThePool(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testBundle) {
		p := testAdmissionParams()
		take := func(caller string, unsent, want int, r *AdmissionReading, at time.Duration) AdmissionGrant {
			t.Helper()
			g, err := b.st.AdmissionTake(b.ctx, p, caller, unsent, want, r, b.now.Add(at))
			require.NoError(t, err)
			return g
		}
		// No reading yet: a is elected, the others wait for it.
		g := take("a", 0, 100, nil, 0)
		require.True(t, g.Read)
		for _, c := range []string{"b", "c", "d"} {
			g := take(c, 0, 100, nil, 0)
			require.False(t, g.Read, c)
			require.Zero(t, g.Granted, c)
			require.False(t, g.RetryAt.IsZero(), c)
		}
		// a's reading: depth 10 + 4 idle - 2 queued = 12 for the pool.
		g = take("a", 0, 5, &AdmissionReading{InQueue: 2, IdleWorkers: 4}, 10*time.Millisecond)
		require.Equal(t, 5, g.Granted)
		require.Equal(t, 7, g.Room)
		total := 5
		for _, c := range []string{"b", "c", "d"} {
			total += take(c, 0, 100, nil, 20*time.Millisecond).Granted
		}
		require.Equal(t, 12, total, "one room for the pool")
		g = take("b", 0, 100, nil, 30*time.Millisecond)
		require.Zero(t, g.Granted)
		require.Equal(t, b.now.Add(10*time.Millisecond+p.Interval), g.RetryAt, "come back at the next reading")

		// Next interval: the unsent jobs (12 admitted, 9 still unsent) are
		// not in Runpod's queue yet, so they count against the room.
		g = take("c", 3, 100, nil, 1100*time.Millisecond)
		require.True(t, g.Read, "a new reader once the reading is stale")
		require.False(t, take("a", 0, 100, nil, 1100*time.Millisecond).Read, "only one reader")
		take("b", 6, 100, nil, 1100*time.Millisecond) // a: 0, b: 6, c: 3, d: 0 unsent
		g = take("c", 3, 100, &AdmissionReading{InQueue: 0, IdleWorkers: 0}, 1110*time.Millisecond)
		require.Equal(t, 10-9, g.Granted, "room = depth + idle - queued - unsent")
		require.Zero(t, g.Room)

		// The reader vanished: after its hold another caller reads.
		require.True(t, take("d", 0, 1, nil, 2200*time.Millisecond).Read)
		require.False(t, take("a", 0, 1, nil, 2300*time.Millisecond).Read)
		require.True(t, take("a", 0, 1, nil, 2200*time.Millisecond+p.ReadHold).Read, "after the hold")

		// More queued than the depth: no room, never a negative one.
		g = take("a", 0, 5, &AdmissionReading{InQueue: 50}, 4200*time.Millisecond)
		require.Zero(t, g.Granted)
		require.Zero(t, g.Room)

		// A failed reading admits nothing until the next one.
		require.True(t, take("a", 0, 5, nil, 5300*time.Millisecond).Read)
		g = take("a", 0, 5, &AdmissionReading{Failed: true}, 5300*time.Millisecond)
		require.Zero(t, g.Granted)
		g = take("b", 0, 5, nil, 5400*time.Millisecond)
		require.False(t, g.Read)
		require.Zero(t, g.Granted)

		// Stale unsent reports (a worker gone) stop counting.
		g = take("a", 0, 100, nil, 40*time.Second)
		require.True(t, g.Read)
		g = take("a", 0, 100, &AdmissionReading{InQueue: 0, IdleWorkers: 0}, 40*time.Second)
		require.Equal(t, 10, g.Granted, "b's and c's reports are older than Stale")
	})
}

// TestAdmissionReturnToItsReading: grants a caller could not use go back to
// the room of the reading they came from, for another caller to take before
// the next reading; grants of an older reading are dropped (the newer
// reading's room already reflects Runpod's queue).
func TestAdmissionReturnToItsReading(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testBundle) {
		p := testAdmissionParams()
		take := func(caller string, want int, r *AdmissionReading, at time.Duration) AdmissionGrant {
			t.Helper()
			g, err := b.st.AdmissionTake(b.ctx, p, caller, 0, want, r, b.now.Add(at))
			require.NoError(t, err)
			return g
		}
		require.True(t, take("a", 10, nil, 0).Read)
		g := take("a", 10, &AdmissionReading{}, 0) // room 10, all to a
		require.Equal(t, 10, g.Granted)
		require.NotEmpty(t, g.Reading)
		require.Zero(t, take("b", 1, nil, time.Millisecond).Granted, "room spent")

		ok, err := b.st.AdmissionReport(b.ctx, p, "a", 3, g.Reading, 7, b.now.Add(time.Millisecond)) // a's read found 3
		require.NoError(t, err)
		require.True(t, ok)
		gb := take("b", 10, nil, 2*time.Millisecond)
		require.Equal(t, 7, gb.Granted, "b takes what a gave back")
		require.Equal(t, g.Reading, gb.Reading)

		// Next reading: b's unused grants of the old one are dropped.
		require.True(t, take("a", 1, nil, 2*p.Interval).Read)
		g2 := take("a", 1, &AdmissionReading{InQueue: 9}, 2*p.Interval)
		require.Equal(t, 1, g2.Granted)
		require.NotEqual(t, g.Reading, g2.Reading)
		ok, err = b.st.AdmissionReport(b.ctx, p, "b", 0, gb.Reading, 7, b.now.Add(2*p.Interval))
		require.NoError(t, err)
		require.False(t, ok)
		require.Zero(t, take("c", 10, nil, 2*p.Interval+time.Millisecond).Granted, "nothing returned to the new reading")
	})
}

// TestAdmissionReportBetweenTakes: a caller that takes nothing (it waits for
// new submissions) still reports its unsent count, so jobs it has sent since
// its last take stop counting against the pool's next reading.
func TestAdmissionReportBetweenTakes(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testBundle) {
		p := testAdmissionParams()
		take := func(caller string, unsent, want int, r *AdmissionReading, at time.Duration) AdmissionGrant {
			t.Helper()
			g, err := b.st.AdmissionTake(b.ctx, p, caller, unsent, want, r, b.now.Add(at))
			require.NoError(t, err)
			return g
		}
		require.True(t, take("a", 4, 1, nil, 0).Read) // a: 4 admitted, not sent
		g := take("a", 4, 1, &AdmissionReading{}, 0)
		require.Equal(t, 1, g.Granted)
		require.Equal(t, 5, g.Room, "depth 10 - a's 4 unsent - 1 granted")
		// a sends its jobs and waits for new submissions: it only reports.
		ok, err := b.st.AdmissionReport(b.ctx, p, "a", 0, "", 0, b.now.Add(time.Millisecond))
		require.NoError(t, err)
		require.False(t, ok, "report only: nothing returned")
		require.True(t, take("b", 0, 10, nil, p.Interval).Read)
		require.Equal(t, 10, take("b", 0, 10, &AdmissionReading{}, p.Interval).Granted,
			"a's sent jobs no longer count")
	})
}

// TestWaitNewSeesOnlyUndelivered: WaitNew counts entries no consumer of the
// group has been delivered, without taking them, and times out on none.
func TestWaitNewSeesOnlyUndelivered(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testBundle) {
		require.NoError(t, b.st.EnsureGroup(b.ctx))
		n, err := b.st.WaitNew(b.ctx, 10, 0)
		require.NoError(t, err)
		require.Zero(t, n)
		for _, id := range []string{"wn-1", "wn-2", "wn-3"} {
			_, err := b.st.Submit(b.ctx, sub(id), SubmitOpts{Now: b.now})
			require.NoError(t, err)
		}
		n, err = b.st.WaitNew(b.ctx, 10, 0)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		n, err = b.st.WaitNew(b.ctx, 2, 0)
		require.NoError(t, err)
		require.Equal(t, 2, n, "at most count")
		msgs, err := b.st.Read(b.ctx, "c1", 2, 0)
		require.NoError(t, err)
		require.Len(t, msgs, 2)
		n, err = b.st.WaitNew(b.ctx, 10, 0)
		require.NoError(t, err)
		require.Equal(t, 1, n, "delivered entries no longer count")
		_, err = b.st.Read(b.ctx, "c1", 10, 0)
		require.NoError(t, err)
		n, err = b.st.WaitNew(b.ctx, 10, 10*time.Millisecond)
		require.NoError(t, err)
		require.Zero(t, n)
	})
}
