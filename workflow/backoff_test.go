package workflow

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fixedRand returns the same value every time.
type fixedRand float64

func (f fixedRand) Float64() float64 { return float64(f) }

func TestPollDelay(t *testing.T) {
	t.Parallel()
	p := PollPolicy{}.WithDefaults()

	t.Run("GrowsToMaxWithoutJitter", func(t *testing.T) {
		t.Parallel()
		want := []time.Duration{2 * time.Second, 3 * time.Second, 4500 * time.Millisecond, 6750 * time.Millisecond, 10 * time.Second, 10 * time.Second}
		for n, w := range want {
			require.Equal(t, w, PollDelay(p, n, nil), "poll %d", n)
		}
		require.Equal(t, 10*time.Second, PollDelay(p, 1_000_000, nil), "huge n must not overflow")
	})
	t.Run("JitterBounds", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, 1600*time.Millisecond, PollDelay(p, 0, fixedRand(0)))
		require.Equal(t, 2*time.Second, PollDelay(p, 0, fixedRand(0.5)))
		require.InDelta(t, float64(12*time.Second), float64(PollDelay(p, 10, fixedRand(0.999999))), float64(time.Millisecond))
	})
	t.Run("NoJitterSentinel", func(t *testing.T) {
		t.Parallel()
		q := PollPolicy{Jitter: -1}.WithDefaults()
		require.Equal(t, 2*time.Second, PollDelay(q, 0, fixedRand(0)))
	})
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{}.WithDefaults()
	require.Equal(t, 500*time.Millisecond, RetryDelay(p, 0, 0, nil))
	require.Equal(t, time.Second, RetryDelay(p, 1, 0, nil))
	require.Equal(t, 30*time.Second, RetryDelay(p, 100, 0, nil))
	require.Equal(t, 30*time.Second, RetryDelay(p, 1<<30, 0, nil))
	// Full jitter: anywhere in [0, cap].
	require.Equal(t, time.Duration(0), RetryDelay(p, 3, 0, fixedRand(0)))
	require.Equal(t, 2*time.Second, RetryDelay(p, 3, 0, fixedRand(0.5)))
	// The Retry-After hint is a floor.
	require.Equal(t, 7*time.Second, RetryDelay(p, 0, 7*time.Second, fixedRand(0.5)))
}

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, Policy{}.WithDefaults().Validate())
	d := Policy{}.WithDefaults()
	tests := []struct {
		name   string
		mutate func(p *Policy)
		want   string
	}{
		{"PollInitial", func(p *Policy) { p.Poll.Initial = -1 }, "workflow: Poll.Initial: must be positive"},
		{"PollMax", func(p *Policy) { p.Poll.Max = time.Second }, "workflow: Poll.Max: 1s is less than Initial 2s"},
		{"PollJitter", func(p *Policy) { p.Poll.Jitter = 1.5 }, "workflow: Poll.Jitter"},
		{"PollMultiplier", func(p *Policy) { p.Poll.Multiplier = 0.5 }, "workflow: Poll.Multiplier"},
		{"RetryInitial", func(p *Policy) { p.Retry.Initial = -time.Second }, "workflow: Retry.Initial"},
		{"RetryMax", func(p *Policy) { p.Retry.Max = time.Millisecond }, "workflow: Retry.Max"},
		{"RetryMultiplier", func(p *Policy) { p.Retry.Multiplier = 0.1 }, "workflow: Retry.Multiplier"},
		{"SubmitUncertain", func(p *Policy) { p.SubmitUncertain = "maybe" }, "workflow: SubmitUncertain"},
		{"MaxCancelAttempts", func(p *Policy) { p.MaxCancelAttempts = -1 }, "workflow: MaxCancelAttempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := d
			tt.mutate(&p)
			err := p.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	t.Parallel()
	p := Policy{}.WithDefaults()
	require.Equal(t, PollPolicy{Initial: 2 * time.Second, Max: 10 * time.Second, Jitter: 0.2, Multiplier: 1.5,
		QueueMax: 20 * time.Second, Horizon: 10 * time.Minute}, p.Poll)
	require.Equal(t, RetryPolicy{Initial: 500 * time.Millisecond, Max: 30 * time.Second, Multiplier: 2}, p.Retry)
	require.Equal(t, SubmitUncertainResubmit, p.SubmitUncertain)
	require.Equal(t, 5, p.MaxCancelAttempts)
	// Explicit values survive.
	q := Policy{SubmitUncertain: SubmitUncertainFail, MaxCancelAttempts: 2}.WithDefaults()
	require.Equal(t, SubmitUncertainFail, q.SubmitUncertain)
	require.Equal(t, 2, q.MaxCancelAttempts)
}
