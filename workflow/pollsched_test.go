package workflow

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type fixedExpect time.Duration

func (f fixedExpect) ExpectedExecution() (time.Duration, bool) { return time.Duration(f), f > 0 }

func TestNextPoll(t *testing.T) {
	t.Parallel()
	p := PollPolicy{}.WithDefaults()
	t0 := time.Unix(1_700_000_000, 0)
	running := Job{State: StateInProgress, RunningSince: t0}

	t.Run("QueuedIsSlowAndCapped", func(t *testing.T) {
		t.Parallel()
		q := Job{State: StateQueued}
		require.Equal(t, 2*time.Second, NextPoll(p, q, t0, 0, nil))
		q.Polls = 100
		require.Equal(t, p.QueueMax, NextPoll(p, q, t0, 0, nil))
		require.Greater(t, p.QueueMax, p.Max, "IN_QUEUE polls slower than IN_PROGRESS")
	})
	t.Run("PollsAtTheExpectedEnd", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, 12*time.Second, NextPoll(p, running, t0, 12*time.Second, nil))
		require.Equal(t, 7*time.Second, NextPoll(p, running, t0.Add(5*time.Second), 12*time.Second, nil))
		// Right at the end: the floor, not a burst of back-to-back polls.
		require.Equal(t, PollFloor, NextPoll(p, running, t0.Add(12*time.Second-time.Millisecond), 12*time.Second, nil))
	})
	t.Run("PastTheEndGrowsWithTheOverrun", func(t *testing.T) {
		t.Parallel()
		e := 12 * time.Second
		require.Equal(t, p.Initial, NextPoll(p, running, t0.Add(e), e, nil))
		require.Equal(t, 5*time.Second, NextPoll(p, running, t0.Add(e+10*time.Second), e, nil))
		require.Equal(t, p.Max, NextPoll(p, running, t0.Add(e+time.Hour), e, nil))
	})
	t.Run("NoEstimateGrowsWithRunningTime", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, p.Initial, NextPoll(p, running, t0.Add(time.Second), 0, nil))
		require.Equal(t, 3*time.Second, NextPoll(p, running, t0.Add(6*time.Second), 0, nil))
		require.Equal(t, p.Max, NextPoll(p, running, t0.Add(time.Minute), 0, nil))
	})
	t.Run("TakeoverWithoutRunningSinceUsesBackoff", func(t *testing.T) {
		t.Parallel()
		j := Job{State: StateInProgress, Polls: 2}
		require.Equal(t, 4500*time.Millisecond, NextPoll(p, j, t0, 12*time.Second, nil))
	})
	t.Run("LongJobsNeverWaitPastTheHorizon", func(t *testing.T) {
		t.Parallel()
		// A 2 h job: the expected end is far, but a wait never exceeds the
		// horizon (a third of Runpod's result retention), jitter included.
		for _, r := range []float64{0, 0.5, 0.999999} {
			d := NextPoll(p, running, t0, 2*time.Hour, fixedRand(r))
			require.LessOrEqual(t, d, p.Horizon)
		}
		require.Less(t, p.Horizon, RunpodResultRetention)
	})
	t.Run("WebhooksMakePollingASlowFallback", func(t *testing.T) {
		t.Parallel()
		w := p
		w.WebhookFallback = time.Minute
		w = w.WithDefaults()
		require.Equal(t, time.Minute, NextPoll(w, Job{State: StateQueued}, t0, 0, nil))
		require.Equal(t, time.Minute, NextPoll(w, running, t0.Add(12*time.Second), 12*time.Second, nil))
	})
	t.Run("Jitter", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, 9600*time.Millisecond, NextPoll(p, running, t0, 12*time.Second, fixedRand(0)))
		require.Equal(t, 12*time.Second, NextPoll(p, running, t0, 12*time.Second, fixedRand(0.5)))
	})
}

func TestApplyPollUsesTheScheduler(t *testing.T) {
	t.Parallel()
	pol := Policy{Expect: fixedExpect(30 * time.Second)}.WithDefaults()
	pol.Poll.Jitter = -1
	t0 := time.Unix(1_700_000_000, 0)
	j := Job{ID: "a", State: StateQueued, Step: StepPoll, RunpodID: "r", RunpodStatus: RunpodInQueue}
	a := Next(j, t0, pol)
	j, _ = Apply(j, a, Result{Job: RunpodJob{ID: "r", Status: RunpodInProgress}}, t0, pol, nil)
	require.Equal(t, t0, j.RunningSince)
	require.Equal(t, t0.Add(30*time.Second), j.NextAt, "first poll of a running job at its expected end")
	// Re-queued (GPU worker crash): RunningSince is forgotten.
	t1 := t0.Add(5 * time.Second)
	j, _ = Apply(j, Next(j, t1, pol), Result{Job: RunpodJob{ID: "r", Status: RunpodInQueue}}, t1, pol, nil)
	require.True(t, j.RunningSince.IsZero())
}

func TestPollPolicyValidateSchedulerFields(t *testing.T) {
	t.Parallel()
	ok := PollPolicy{}.WithDefaults()
	require.NoError(t, ok.Validate())
	for name, mut := range map[string]func(*PollPolicy){
		"QueueMax":        func(p *PollPolicy) { p.QueueMax = time.Second },
		"Horizon":         func(p *PollPolicy) { p.Horizon = p.QueueMax - 1 },
		"WebhookFallback": func(p *PollPolicy) { p.WebhookFallback = -1 },
	} {
		p := ok
		mut(&p)
		err := p.Validate()
		require.Error(t, err, name)
		require.Contains(t, err.Error(), name)
	}
}

// turnaround is an estimator that knows execution and turnaround times.
type turnaround struct{ exec, total time.Duration }

func (e turnaround) ExpectedExecution() (time.Duration, bool)  { return e.exec, e.exec > 0 }
func (e turnaround) ExpectedTurnaround() (time.Duration, bool) { return e.total, e.total > 0 }

// TestFirstPollFromTurnaround: the first poll after /run is planned at the
// endpoint's usual turnaround (delayTime + executionTime), not at the fixed
// Initial: a 1 ms job is looked at after 250 ms (not 2 s), a 40 s job once
// at 40 s (not 2 s, 3 s, ...); the floor never exceeds a shorter Initial,
// and nothing waits past the horizon.
func TestFirstPollFromTurnaround(t *testing.T) {
	t.Parallel()
	p := PollPolicy{}.WithDefaults()
	require.Equal(t, p.Initial, FirstPoll(p, 0, nil), "nothing learned yet")
	require.Equal(t, PollFloor, FirstPoll(p, time.Millisecond, nil))
	require.Equal(t, 40*time.Second, FirstPoll(p, 40*time.Second, nil))
	require.Equal(t, p.Horizon, FirstPoll(p, 2*time.Hour, nil))
	fast := PollPolicy{Initial: time.Millisecond}.WithDefaults()
	require.Equal(t, 2*time.Millisecond, FirstPoll(fast, 2*time.Millisecond, nil), "a short Initial keeps its floor")
	hooked := PollPolicy{WebhookFallback: time.Minute}.WithDefaults()
	require.Equal(t, time.Minute, FirstPoll(hooked, time.Second, nil), "webhooks report the end: only the fallback poll")

	// Through Apply: the job /run queued is polled first at the turnaround.
	pol := Policy{Expect: turnaround{exec: 30 * time.Second, total: 31 * time.Second}}.WithDefaults()
	t0 := time.Unix(1_700_000_000, 0)
	j := BeginSubmit(newJob())
	j, _ = Apply(j, Action{Kind: ActSubmit, At: t0}, Result{Job: RunpodJob{ID: "rp-1", Status: RunpodInQueue}}, t0, pol, nil)
	require.Equal(t, t0.Add(31*time.Second), j.NextAt)

	// A streaming job's chunks are wanted while it runs: its first look is
	// at Initial, to find the start, not at the usual end.
	s := BeginSubmit(newJob())
	s.Streaming = true
	s, _ = Apply(s, Action{Kind: ActSubmit, At: t0}, Result{Job: RunpodJob{ID: "rp-2", Status: RunpodInQueue}}, t0, pol, nil)
	require.Equal(t, t0.Add(pol.Poll.Initial), s.NextAt)
}
