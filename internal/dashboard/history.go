package dashboard

import (
	"sync"
	"time"

	"github.com/yourscope/runpod-orchestrator/client"
)

// point is one sample of the queue.
type point struct {
	At      time.Time
	Backlog int64 // submissions not yet read by a worker
	Pending int64 // delivered, not finished
	Dead    int64
	// Completed and Failed count the outcomes (terminal events) seen since
	// the previous sample; Failed includes TIMED_OUT and CANCELED.
	Completed int
	Failed    int
}

// history is a ring of samples plus the outcome counters of the interval
// in progress. Safe for concurrent use.
type history struct {
	mu        sync.Mutex // guards everything below
	pts       []point
	max       int
	completed int
	failed    int
}

func newHistory(n int) *history { return &history{max: n} }

func (h *history) add(p point) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pts) == h.max {
		copy(h.pts, h.pts[1:])
		h.pts = h.pts[:len(h.pts)-1]
	}
	h.pts = append(h.pts, p)
}

// points returns a copy of the samples, oldest first.
func (h *history) points() []point {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]point(nil), h.pts...)
}

func (h *history) countEvent(ev client.Event) {
	if !ev.Type.Terminal() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ev.Type == client.EventCompleted {
		h.completed++
	} else {
		h.failed++
	}
}

// takeOutcomes returns and resets the outcome counters.
func (h *history) takeOutcomes() (completed, failed int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	completed, failed = h.completed, h.failed
	h.completed, h.failed = 0, 0
	return completed, failed
}

// message is what the pages are told over /events.
type message struct {
	Kind string `json:"kind"` // "event" or "sample"
	Job  string `json:"job,omitempty"`
	Type string `json:"type,omitempty"`
}

// broadcaster fans messages out to the /events streams. A slow stream
// misses messages rather than slowing the others: each one only means
// "something changed, refresh".
type broadcaster struct {
	mu     sync.Mutex // guards subs and closed
	subs   map[chan message]struct{}
	closed bool
	done   chan struct{} // closed by close: the streams end
}

func newBroadcaster() *broadcaster {
	return &broadcaster{subs: map[chan message]struct{}{}, done: make(chan struct{})}
}

func (b *broadcaster) subscribe() chan message {
	ch := make(chan message, 64)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[ch] = struct{}{}
	return ch
}

func (b *broadcaster) unsubscribe(ch chan message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, ch)
}

func (b *broadcaster) publish(m message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- m:
		default:
		}
	}
}

// close ends every stream (Run returned: nothing more will come).
func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.done)
	}
}
