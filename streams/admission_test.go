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
