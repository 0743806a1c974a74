package runpodsim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// §16.8: retention after completion (30 min /run, 1 min /runsync), then 404.
func TestRetention(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c) })
	id := b.run(t, map[string]any{"mock_delay": 0})
	p := b.clock.PendingTimers()
	ch := b.asyncPost(t, "runsync?wait=1000", `{"input":{"mock_delay":0}}`)
	b.waitTimers(t, p+4)
	mc.Advance(0)
	syncID := recv(t, ch).obj(t)["id"].(string)
	require.Equal(t, "COMPLETED", b.status(t, id)["status"])
	require.Equal(t, "COMPLETED", b.status(t, syncID)["status"])

	mc.Advance(time.Minute - time.Millisecond)
	require.Equal(t, 200, b.call(t, "GET", "status/"+syncID, nil).code)
	mc.Advance(time.Millisecond)
	require.Equal(t, 404, b.call(t, "GET", "status/"+syncID, nil).code)

	mc.Advance(29 * time.Minute)
	require.Equal(t, 404, b.call(t, "GET", "status/"+id, nil).code)
	info, ok := b.sim.Job(id)
	require.True(t, ok)
	require.Equal(t, "retention", info.Removed)
	require.Equal(t, 30*time.Minute, info.RemovedAt.Sub(info.FinishedAt))
	require.EqualValues(t, 2, b.sim.Stats().JobsRemoved)
}

// Retention configurable and scalable in wall time.
func TestRetentionTimeScale(t *testing.T) {
	t.Parallel()
	// Two simulated minutes of retention are 2.4 s of wall time at scale 50:
	// long enough for a loaded machine to see COMPLETED first, and far
	// shorter than the unscaled two minutes the wait below would need.
	b := setup(t, func(c *Config) { c.Retention = 2 * time.Minute; c.TimeScale = 50; c.MockDelay = time.Millisecond })
	id := b.run(t, 1)
	b.eventually(t, id, "COMPLETED")
	require.Eventually(t, func() bool {
		return b.call(t, "GET", "status/"+id, nil).code == 404
	}, 60*time.Second, 10*time.Millisecond)
}

// §16.8: TTL deletes in any state, even mid-run, freeing the worker; ?ttl on
// /status resets it; queue expiry can end TIMED_OUT instead.
func TestTTL(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c); c.GPUWorkers = 1 })
	r := b.call(t, "POST", "run", map[string]any{"input": map[string]any{"mock_delay": 60000}, "policy": map[string]any{"ttl": 10000}})
	running := r.obj(t)["id"].(string)
	queued := b.run(t, map[string]any{"mock_delay": 100})
	mc.Advance(10 * time.Second)
	require.Equal(t, 404, b.call(t, "GET", "status/"+running, nil).code, "ttl deletes a running job")
	m := b.status(t, queued)
	require.Equal(t, "IN_PROGRESS", m["status"], "the deleted job's worker is free")
	require.EqualValues(t, 10000, m["delayTime"])

	// ?ttl shortens the remaining lifespan.
	mc.Advance(100 * time.Millisecond)
	require.Equal(t, 200, b.call(t, "GET", "status/"+queued+"?ttl=50", nil).code)
	mc.Advance(50 * time.Millisecond)
	require.Equal(t, 404, b.call(t, "GET", "status/"+queued, nil).code)
	require.Equal(t, 404, b.call(t, "GET", "status/"+running+"?ttl=abc", nil).code, "unknown id checked first")
	other := b.run(t, 1)
	require.Equal(t, 400, b.call(t, "GET", "status/"+other+"?ttl=abc", nil).code)

	to := setup(t, func(c *Config) {
		manual(c)
		c.GPUWorkers = 1
		c.QueueExpiryOutcome = OutcomeTimedOut
		c.TTL = 20 * time.Second
	})
	r = to.call(t, "POST", "run", map[string]any{"input": map[string]any{"mock_delay": 60000}, "policy": map[string]any{"ttl": 60000}})
	require.Equal(t, 200, r.code)
	q := to.run(t, 1)
	to.clock.Advance(20 * time.Second)
	m = to.status(t, q)
	require.Equal(t, "TIMED_OUT", m["status"])
	require.NotContains(t, m, "delayTime", "never picked up")
}

// §16.8: executionTimeout ends the job TIMED_OUT (or FAILED) and frees the worker.
func TestExecutionTimeout(t *testing.T) {
	t.Parallel()
	for _, outcome := range []string{OutcomeTimedOut, OutcomeFailed} {
		var mc *ManualClock
		b := setup(t, func(c *Config) {
			mc = manual(c)
			c.GPUWorkers = 1
			if outcome == OutcomeFailed {
				c.ExecutionTimeoutOutcome = outcome
			}
		})
		r := b.call(t, "POST", "run", map[string]any{"input": map[string]any{"mock_delay": 1e9}, "policy": map[string]any{"executionTimeout": 5000}})
		id := r.obj(t)["id"].(string)
		next := b.run(t, map[string]any{"mock_delay": 10})
		mc.Advance(5 * time.Second)
		m := b.status(t, id)
		require.Equal(t, outcome, m["status"])
		require.EqualValues(t, 5000, m["executionTime"])
		require.Contains(t, m["error"], "execution timeout")
		require.Equal(t, "IN_PROGRESS", b.status(t, next)["status"])
		// Config default (600 s) applies without a policy.
		long := b.run(t, map[string]any{"mock_delay": 1e9})
		mc.Advance(10 * time.Millisecond)
		mc.Advance(ExecutionTimeoutDefault)
		require.Equal(t, outcome, b.status(t, long)["status"])
		require.EqualValues(t, 2, b.sim.Stats().ExecutionTimeouts)
	}
}

func TestManualClock(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	mc := NewManualClock(start)
	var got []int
	mc.AfterFunc(2*time.Second, func() { got = append(got, 2) })
	stopped := mc.AfterFunc(time.Second, func() { got = append(got, -1) })
	mc.AfterFunc(time.Second, func() {
		got = append(got, 1)
		mc.AfterFunc(500*time.Millisecond, func() { got = append(got, 15) }) // due within the same Advance
	})
	mc.AfterFunc(0, func() { got = append(got, 0) })
	require.True(t, stopped.Stop())
	require.False(t, stopped.Stop())
	require.Equal(t, 3, mc.PendingTimers())
	mc.Advance(0)
	require.Equal(t, []int{0}, got)
	mc.Advance(2 * time.Second)
	require.Equal(t, []int{0, 1, 15, 2}, got)
	require.Equal(t, start.Add(2*time.Second), mc.Now())
	require.Zero(t, mc.PendingTimers())
}

// The ledger of a long run is bounded: a job removed by retention is
// dropped from Jobs after LedgerRetention; the counters keep counting it.
// A live job is never dropped.
func TestLedgerRetention(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) {
		mc = manual(c)
		c.Retention = time.Minute
		c.LedgerRetention = time.Hour
	})
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = b.run(t, map[string]any{"mock_delay": 0})
	}
	mc.Advance(0)
	for _, id := range ids {
		require.Equal(t, "COMPLETED", b.status(t, id)["status"])
	}
	live := b.run(t, map[string]any{"mock_delay": 10 * 60 * 60 * 1000})
	mc.Advance(time.Minute)
	require.Len(t, b.sim.Jobs(), 11, "removed jobs stay in the ledger for LedgerRetention")
	mc.Advance(time.Hour)
	jobs := b.sim.Jobs()
	require.Len(t, jobs, 1)
	require.Equal(t, live, jobs[0].ID)
	_, ok := b.sim.Job(ids[0])
	require.False(t, ok)
	st := b.sim.Stats()
	require.EqualValues(t, 11, st.JobsCreated)
	require.EqualValues(t, 10, st.JobsCompleted)
	require.EqualValues(t, 10, st.JobsForgotten)
}
