package streams

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func testBudgetParams(op string, limit int) BudgetParams {
	return BudgetParams{
		EndpointID: "ep1", Op: op, Limit: limit, Window: 10 * time.Second,
		Recover: 0.1, Decrease: 0.5, MinFactor: 0.05, DecreaseGap: time.Second,
		BreakerFailures: 3, BreakerOpen: 5 * time.Second, ProbeHold: 2 * time.Second,
	}
}

// TestBudgetTakeStaysWithinLimitInEveryWindow: callers asking for batches
// far more often than the budget allows are granted, in every window of the
// budget's length (sliding, at 50 ms steps), at most Limit tokens, and close
// to it over a long run.
func TestBudgetTakeStaysWithinLimitInEveryWindow(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testBundle) {
		p := testBudgetParams("status", 200)
		const step = 50 * time.Millisecond
		var grants []int      // per step
		for i := range 1200 { // 60 s
			now := b.now.Add(time.Duration(i) * step)
			n := 0
			for _, caller := range []string{"a", "b", "c"} {
				g, err := b.st.BudgetTake(b.ctx, p, caller, 8, now)
				require.NoError(t, err)
				require.Equal(t, BreakerClosed, g.Breaker)
				if g.Granted == 0 {
					require.True(t, g.RetryAt.After(now), "a refusal says when to come back")
				}
				n += g.Granted
			}
			grants = append(grants, n)
		}
		per := int(p.Window / step)
		total := 0
		for i := range grants {
			total += grants[i]
			if i >= per {
				total -= grants[i-per]
			}
			require.LessOrEqual(t, total, p.Limit, "window ending at step %d", i)
		}
		sum := 0
		for _, n := range grants {
			sum += n
		}
		// 6 windows' worth at most, and not much less (the refill is even).
		require.LessOrEqual(t, sum, 6*p.Limit)
		require.GreaterOrEqual(t, sum, 6*p.Limit*9/10)
	})
}

// TestBudgetThrottledLowersThePoolAndRecovers: one caller's 429 with a
// Retry-After refuses every caller until it ends, halves the budget (once
// for a burst of 429s), and the factor grows back by Recover per window.
func TestBudgetThrottledLowersThePoolAndRecovers(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testBundle) {
		p := testBudgetParams("run", 100)
		now := b.now
		g, err := b.st.BudgetTake(b.ctx, p, "a", 1, now)
		require.NoError(t, err)
		require.Equal(t, 1, g.Granted)

		for range 5 { // a burst of 429s seen by several workers
			st, err := b.st.BudgetReport(b.ctx, p, ReportThrottled, 3*time.Second, now)
			require.NoError(t, err)
			require.InDelta(t, 0.5, st.Factor, 0.001)
		}
		g, err = b.st.BudgetTake(b.ctx, p, "b", 5, now.Add(time.Second))
		require.NoError(t, err)
		require.Zero(t, g.Granted, "another worker is refused during the Retry-After")
		require.Equal(t, now.Add(3*time.Second), g.RetryAt)

		g, err = b.st.BudgetTake(b.ctx, p, "b", 50, now.Add(3*time.Second))
		require.NoError(t, err)
		require.InDelta(t, 0.53, g.Factor, 0.002)
		require.LessOrEqual(t, g.Granted, 5, "the lowered budget's burst is smaller")

		// Recovery: +0.1 per window, capped at 1.
		g, err = b.st.BudgetTake(b.ctx, p, "b", 1, now.Add(3*time.Second+20*time.Second))
		require.NoError(t, err)
		require.InDelta(t, 0.73, g.Factor, 0.002)
		g, err = b.st.BudgetTake(b.ctx, p, "b", 1, now.Add(2*time.Minute))
		require.NoError(t, err)
		require.InDelta(t, 1.0, g.Factor, 0.001)
	})
}

// TestBudgetBreakerSingleProbe: consecutive failures reported by any worker
// open the endpoint's circuit for every operation; after the open time
// exactly one caller gets a probe; its failure reopens, its success closes;
// each change is one breaker event.
func TestBudgetBreakerSingleProbe(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testBundle) {
		status, cancel := testBudgetParams("status", 200), testBudgetParams("cancel", 10)
		now := b.now
		for i := range 3 {
			st, err := b.st.BudgetReport(b.ctx, status, ReportFailure, 0, now)
			require.NoError(t, err)
			require.Equal(t, i+1, st.Failures)
		}
		g, err := b.st.BudgetTake(b.ctx, cancel, "a", 1, now.Add(time.Second))
		require.NoError(t, err)
		require.Equal(t, BreakerOpen, g.Breaker)
		require.Zero(t, g.Granted)
		require.Equal(t, now.Add(5*time.Second), g.RetryAt)

		probeAt := now.Add(5 * time.Second)
		g, err = b.st.BudgetTake(b.ctx, status, "a", 8, probeAt)
		require.NoError(t, err)
		require.Equal(t, BudgetGrant{Granted: 1, Breaker: BreakerHalfOpen, Failures: 3, Factor: 1, Probe: true}, g)
		for _, c := range []string{"a", "b"} {
			g, err = b.st.BudgetTake(b.ctx, status, c, 8, probeAt.Add(time.Second))
			require.NoError(t, err)
			require.Zero(t, g.Granted, "one probe for the whole pool")
			require.Equal(t, probeAt.Add(2*time.Second), g.RetryAt, "the probe's hold, at most a tenth of a window")
		}

		st, err := b.st.BudgetReport(b.ctx, status, ReportFailure, 0, probeAt.Add(time.Second))
		require.NoError(t, err)
		require.Equal(t, BreakerOpen, st.Breaker, "a failed probe reopens")
		st, err = b.st.BudgetReport(b.ctx, status, ReportSuccess, 0, probeAt.Add(time.Second))
		require.NoError(t, err)
		require.Equal(t, BreakerOpen, st.Breaker, "a late success while open changes nothing")

		reprobe := probeAt.Add(6 * time.Second)
		g, err = b.st.BudgetTake(b.ctx, cancel, "b", 1, reprobe)
		require.NoError(t, err)
		require.True(t, g.Probe)
		st, err = b.st.BudgetReport(b.ctx, cancel, ReportSuccess, 0, reprobe)
		require.NoError(t, err)
		require.Equal(t, BudgetState{Breaker: BreakerClosed, Factor: 1}, st)
		g, err = b.st.BudgetTake(b.ctx, status, "a", 8, reprobe)
		require.NoError(t, err)
		require.Equal(t, 8, g.Granted)
		require.Equal(t, BreakerClosed, g.Breaker)

		var states []string
		for _, ev := range b.events(t) {
			require.Equal(t, EventBreaker, ev.Type)
			require.Empty(t, ev.JobID)
			require.Contains(t, ev.Payload.Reason, "endpoint ep1")
			states = append(states, ev.State)
		}
		require.Equal(t, []string{"open", "half-open", "open", "half-open", "closed"}, states)
	})
}

// TestBudgetProbeHolderVanishes: a probe whose holder never reports frees
// the slot once its hold expires, so a crashed worker cannot stall the pool.
func TestBudgetProbeHolderVanishes(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testBundle) {
		p := testBudgetParams("status", 200)
		for range 3 {
			_, err := b.st.BudgetReport(b.ctx, p, ReportFailure, 0, b.now)
			require.NoError(t, err)
		}
		at := b.now.Add(5 * time.Second)
		g, err := b.st.BudgetTake(b.ctx, p, "dead", 1, at)
		require.NoError(t, err)
		require.True(t, g.Probe)
		g, err = b.st.BudgetTake(b.ctx, p, "b", 1, at.Add(2*time.Second))
		require.NoError(t, err)
		require.True(t, g.Probe, "the hold expired: the next caller probes")
	})
}
