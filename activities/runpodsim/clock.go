package runpodsim

import (
	"container/heap"
	"sync"
	"time"
)

// Clock is the simulator's notion of time. Every Runpod-side timer (mock
// execution, cold start, retention, TTL, execution timeout, rate-limit
// windows, long-poll holds, webhook retry spacing) runs on it, and every time
// the simulator reports (delayTime, executionTime, JobInfo timestamps) is read
// from it. Fault latency and hung requests are network behaviour and use real
// time, because they exist to exercise the client's real timeouts.
type Clock interface {
	// Now returns the current simulated time.
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d of simulated time has
	// passed. The returned Timer's Stop prevents a call that has not started.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not started; it reports whether it did.
	Stop() bool
}

// scaledClock runs simulated time scale times faster than wall time, starting
// at the wall time of its creation.
type scaledClock struct {
	base  time.Time // simulated and wall time at creation (carries the monotonic reading)
	scale float64
}

func newScaledClock(scale float64) *scaledClock {
	return &scaledClock{base: time.Now(), scale: scale}
}

func (c *scaledClock) Now() time.Time {
	elapsed := time.Since(c.base)
	if c.scale == 1 {
		return c.base.Add(elapsed)
	}
	return c.base.Add(time.Duration(float64(elapsed) * c.scale))
}

func (c *scaledClock) AfterFunc(d time.Duration, f func()) Timer {
	real := time.Duration(float64(d) / c.scale)
	if real < 0 {
		real = 0
	}
	return time.AfterFunc(real, f)
}

// ManualClock is a Clock that moves only when Advance is called, so tests can
// assert exact sequences (deterministic mode, docs/runpod-api.md §16.16). Timers
// due at or before the new time fire in deadline order, synchronously in the
// goroutine that calls Advance. A timer created with d <= 0 fires at the next
// Advance (Advance(0) fires it).
type ManualClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers manualHeap // guarded by mu
}

// NewManualClock returns a ManualClock reading start.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start}
}

// Now returns the clock's current time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f at Now()+d.
func (c *ManualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &manualTimer{c: c, at: c.now.Add(d), seq: c.seq, f: f, idx: -1}
	heap.Push(&c.timers, t)
	return t
}

// Advance moves the clock forward by d and runs every timer that became due,
// including timers those callbacks schedule within the new time.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		if len(c.timers) == 0 || c.timers[0].at.After(target) {
			if c.now.Before(target) {
				c.now = target
			}
			c.mu.Unlock()
			return
		}
		t := heap.Pop(&c.timers).(*manualTimer)
		if t.at.After(c.now) {
			c.now = t.at
		}
		c.mu.Unlock()
		// Run outside the lock: callbacks take the simulator's lock and may
		// schedule new timers.
		t.f()
	}
}

// PendingTimers returns how many timers are scheduled and not yet fired or
// stopped. Tests use it to wait until a long poll has started.
func (c *ManualClock) PendingTimers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

type manualTimer struct {
	c   *ManualClock
	at  time.Time
	seq uint64
	f   func()
	idx int // position in the heap; -1 when not scheduled
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.idx < 0 {
		return false
	}
	heap.Remove(&t.c.timers, t.idx)
	return true
}

// manualHeap orders timers by deadline, then by creation.
type manualHeap []*manualTimer

func (h manualHeap) Len() int { return len(h) }
func (h manualHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h manualHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}
func (h *manualHeap) Push(x any) {
	t := x.(*manualTimer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *manualHeap) Pop() any {
	old := *h
	n := len(old)
	t := old[n-1]
	old[n-1] = nil
	t.idx = -1
	*h = old[:n-1]
	return t
}
