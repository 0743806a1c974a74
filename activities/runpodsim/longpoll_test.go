package runpodsim

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// §16.5: /runsync returns the terminal job, or {id, status} after wait; the
// job survives a client that goes away.
func TestRunsync(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c); c.GPUWorkers = 1 })

	// Finishes within the wait: the whole job object.
	p := b.clock.PendingTimers()
	ch := b.asyncPost(t, "runsync?wait=5000", `{"input":{"mock_delay":2000,"mock_return":"ok"}}`)
	b.waitTimers(t, p+4) // ttl, execution end, execution timeout, the request's wait
	mc.Advance(2 * time.Second)
	m := recv(t, ch).obj(t)
	require.Equal(t, "COMPLETED", m["status"])
	require.Equal(t, "ok", m["output"])
	require.EqualValues(t, 2000, m["executionTime"])
	require.Contains(t, m, "workerId")

	// Does not finish within the wait: {id, status} only.
	p = b.clock.PendingTimers()
	ch = b.asyncPost(t, "runsync?wait=1000", `{"input":{"mock_delay":3000}}`)
	b.waitTimers(t, p+4)
	mc.Advance(time.Second)
	r := recv(t, ch)
	require.Equal(t, 200, r.code)
	m = r.obj(t)
	require.ElementsMatch(t, []string{"id", "status"}, keys(m))
	require.Equal(t, "IN_PROGRESS", m["status"])
	id := m["id"].(string)
	mc.Advance(2 * time.Second)
	require.Equal(t, "COMPLETED", b.status(t, id)["status"])

	// wait out of range is clamped (1 s minimum); a queued job reports IN_QUEUE.
	b.run(t, map[string]any{"mock_delay": 10000}) // occupies the only worker
	p = b.clock.PendingTimers()
	ch = b.asyncPost(t, "runsync?wait=10", `{"input":1}`)
	b.waitTimers(t, p+2) // ttl and wait: the job is queued
	mc.Advance(999 * time.Millisecond)
	select {
	case r := <-ch:
		t.Fatalf("runsync returned before the clamped 1 s wait: %s", r.body)
	case <-time.After(20 * time.Millisecond):
	}
	mc.Advance(time.Millisecond)
	require.Equal(t, "IN_QUEUE", recv(t, ch).obj(t)["status"])
	require.Equal(t, 400, b.call(t, "POST", "runsync?wait=abc", map[string]any{"input": 1}).code)

	strict := setup(t, func(c *Config) { c.RejectOutOfRangeWait = true })
	require.Equal(t, 400, strict.call(t, "POST", "runsync?wait=300001", map[string]any{"input": 1}).code)
}

func TestRunsyncClientDisconnectKeepsJob(t *testing.T) {
	t.Parallel()
	// A manual clock, and the client hangs up only once the sim holds the
	// request: a real-time client timeout could fire before the request
	// arrived (no job) on a loaded machine.
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", b.base+"/runsync",
		strings.NewReader(`{"input":{"mock_delay":1500,"mock_return":"kept"}}`))
	req.Header.Set("Authorization", testKey)
	p := b.clock.PendingTimers()
	errc := make(chan error, 1)
	go func() {
		resp, err := b.hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	b.waitTimers(t, p+4) // ttl, execution end, execution timeout, the request's wait
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled, "the client hung up before the job ended")
	case <-time.After(time.Minute):
		t.Fatal("the canceled request did not return")
	}
	// The handler saw the hang-up and dropped its wait; the job did not end.
	require.Eventually(t, func() bool { return b.clock.PendingTimers() == p+3 }, time.Minute, time.Millisecond)
	jobs := b.sim.Jobs()
	require.Len(t, jobs, 1)
	require.Equal(t, "IN_PROGRESS", b.status(t, jobs[0].ID)["status"])
	mc.Advance(1500 * time.Millisecond)
	m := b.eventually(t, jobs[0].ID, "COMPLETED")
	require.Equal(t, "kept", m["output"])
}

// §16.7: /status-sync long-polls until terminal or wait.
func TestStatusSync(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c) })
	id := b.run(t, map[string]any{"mock_delay": 5000, "mock_progress": []any{"half"}})

	p := b.clock.PendingTimers()
	ch := b.async(t, "GET", "status-sync/"+id+"?wait=2000")
	b.waitTimers(t, p+1) // the wait
	mc.Advance(2 * time.Second)
	m := recv(t, ch).obj(t)
	require.Equal(t, "IN_PROGRESS", m["status"])
	require.NotContains(t, m, "output", "progress is at 2.5 s")

	p = b.clock.PendingTimers()
	ch = b.async(t, "POST", "status-sync/"+id+"?wait=90000")
	b.waitTimers(t, p+1)
	mc.Advance(3 * time.Second)
	m = recv(t, ch).obj(t)
	require.Equal(t, "COMPLETED", m["status"])
	require.EqualValues(t, 5000, m["executionTime"])
	require.Equal(t, 404, b.call(t, "GET", "status-sync/unknown", nil).code)
}

// §16.7: /stream holds while empty, drains each chunk once, always carries a
// stream array, and ends with the terminal status and [].
func TestStreamDrain(t *testing.T) {
	t.Parallel()
	var mc *ManualClock
	b := setup(t, func(c *Config) { mc = manual(c) })
	id := b.run(t, map[string]any{"mock_delay": 6000, "mock_stream": []any{"a", "b", "c"}})

	// Chunks arrive at 1.5 s, 3 s and 4.5 s; the job ends at 6 s.
	// Nothing yet: the call holds, then the first chunk releases it.
	p := b.clock.PendingTimers()
	ch := b.async(t, "GET", "stream/"+id)
	b.waitTimers(t, p+1) // the hold
	mc.Advance(1500 * time.Millisecond)
	m := recv(t, ch).obj(t)
	require.Equal(t, "IN_PROGRESS", m["status"])
	require.Equal(t, []any{map[string]any{"output": "a"}}, m["stream"])

	mc.Advance(3 * time.Second) // b and c are buffered
	m = b.call(t, "POST", "stream/"+id, nil).obj(t)
	require.Equal(t, []any{map[string]any{"output": "b"}, map[string]any{"output": "c"}}, m["stream"])

	// Empty and not terminal: held for ?wait, then an empty array.
	p = b.clock.PendingTimers()
	ch = b.async(t, "GET", "stream/"+id+"?wait=500") // clamped to 1 s
	b.waitTimers(t, p+1)
	mc.Advance(time.Second)
	m = recv(t, ch).obj(t)
	require.Equal(t, "IN_PROGRESS", m["status"])
	require.Equal(t, []any{}, m["stream"])

	mc.Advance(500 * time.Millisecond)
	m = b.call(t, "GET", "stream/"+id, nil).obj(t)
	require.Equal(t, "COMPLETED", m["status"])
	require.Equal(t, []any{}, m["stream"])
	// Without mock_aggregate_stream a generator's output is [].
	require.Equal(t, []any{}, b.status(t, id)["output"])

	agg := b.run(t, map[string]any{"mock_delay": 10, "mock_stream": []any{1, 2}, "mock_aggregate_stream": true})
	mc.Advance(10 * time.Millisecond)
	m = b.call(t, "GET", "stream/"+agg, nil).obj(t)
	require.Equal(t, "COMPLETED", m["status"])
	require.Len(t, m["stream"], 2, "chunks not yet handed out come with the terminal status")
	require.Equal(t, []any{1.0, 2.0}, b.status(t, agg)["output"])

	// A non-generator job streams nothing.
	plain := b.run(t, 1)
	mc.Advance(MockDelayDefault)
	r := b.call(t, "GET", "stream/"+plain, nil)
	require.JSONEq(t, `{"id":"`+plain+`","status":"COMPLETED","stream":[]}`, string(r.body))
}
