package dashboard

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestChart: fewer than two samples draw no line; more draw one polyline
// per series, scaled to a round top, with the points in the plot area.
func TestChart(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	require.Contains(t, string(queueChart(nil)), "collecting samples")
	require.NotContains(t, string(queueChart([]point{{At: t0}})), "polyline")

	pts := []point{
		{At: t0, Backlog: 0, Pending: 10},
		{At: t0.Add(5 * time.Second), Backlog: 40, Pending: 70, Completed: 5},
		{At: t0.Add(10 * time.Second), Backlog: 0, Pending: 3, Completed: 10, Failed: 1},
	}
	q := string(queueChart(pts))
	require.Equal(t, 2, strings.Count(q, "<polyline"))
	require.Contains(t, q, `>100</text>`, "top rounded up from 70")
	require.Contains(t, q, "03:04:05")
	require.Contains(t, q, "03:04:15 UTC")
	// The first point of pending (10 of 100) sits at x = padL, y near the bottom.
	require.Contains(t, q, `points="56.0,156.0 `)

	r := string(rateChart(pts, 5*time.Second))
	require.Equal(t, 2, strings.Count(r, "<polyline"))
	require.Contains(t, r, `>200</text>`, "10 outcomes in 5 s = 120/min, rounded up to 200")
}

func TestNiceCeil(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]float64{0: 1, 0.5: 1, 1: 1, 1.2: 2, 3: 5, 7: 10, 10: 10, 11: 20, 70: 100, 120: 200, 4999: 5000} {
		require.Equal(t, want, niceCeil(in), "niceCeil(%v)", in)
	}
}
