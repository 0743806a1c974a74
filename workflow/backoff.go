package workflow

import (
	"math"
	"time"
)

// Rand is the random source the backoff functions draw jitter from, so they
// stay pure: production passes a *math/rand/v2.Rand (or any source), tests a
// fixed sequence. A nil Rand means no jitter.
type Rand interface {
	// Float64 returns a number in [0, 1).
	Float64() float64
}

// growth returns min(initial·mult^n, max) without overflowing for large n.
func growth(initial, max time.Duration, mult float64, n int) time.Duration {
	if n < 0 {
		n = 0
	}
	d := float64(initial) * math.Pow(mult, float64(n))
	if math.IsInf(d, 0) || math.IsNaN(d) || d >= float64(max) {
		return max
	}
	return time.Duration(d)
}

// PollDelay returns the wait before the poll that follows n polls without a
// status change: min(Initial·Multiplier^n, Max) spread by ±Jitter. The result
// may exceed Max by at most the jitter, which is intended: capping after the
// jitter would bunch every long-running job's polls exactly at Max.
func PollDelay(p PollPolicy, n int, rnd Rand) time.Duration {
	d := growth(p.Initial, p.Max, p.Multiplier, n)
	if rnd == nil || p.Jitter <= 0 {
		return d
	}
	// Uniform in [d·(1-J), d·(1+J)).
	f := 1 + p.Jitter*(2*rnd.Float64()-1)
	return time.Duration(float64(d) * f)
}

// RetryDelay returns the wait before retry n (0 for the first retry) of an
// activity that failed transiently: uniform in [0, min(Initial·Multiplier^n,
// Max)] ("full jitter"), but never less than hint (the server's Retry-After).
// Without a random source it returns the cap.
func RetryDelay(p RetryPolicy, n int, hint time.Duration, rnd Rand) time.Duration {
	d := growth(p.Initial, p.Max, p.Multiplier, n)
	if rnd != nil {
		d = time.Duration(float64(d) * rnd.Float64())
	}
	if d < hint {
		d = hint
	}
	return d
}
