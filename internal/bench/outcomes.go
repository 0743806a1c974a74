package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/yourscope/runpod-orchestrator/client"
)

// outcomeReader follows the events stream and notes each job's first
// terminal event: the bench ends when every job has one.
type outcomeReader struct {
	mu     sync.Mutex
	seen   map[string]time.Time
	states map[string]int
	err    error
	more   chan struct{}
}

func newOutcomeReader() *outcomeReader {
	return &outcomeReader{seen: map[string]time.Time{}, states: map[string]int{}, more: make(chan struct{}, 1)}
}

func (r *outcomeReader) read(ctx context.Context, sub *client.Subscription) {
	for ev, err := range sub.Events(ctx) {
		if err != nil {
			r.mu.Lock()
			if ctx.Err() == nil {
				r.err = err
			}
			r.mu.Unlock()
			r.poke()
			return
		}
		if !ev.Type.Terminal() {
			continue
		}
		now := time.Now()
		r.mu.Lock()
		if _, dup := r.seen[ev.JobID]; !dup {
			r.seen[ev.JobID] = now
			r.states[string(ev.State)]++
		}
		r.mu.Unlock()
		r.poke()
	}
}

func (r *outcomeReader) poke() {
	select {
	case r.more <- struct{}{}:
	default:
	}
}

// wait returns once n jobs have an outcome, or on the first worker error.
func (r *outcomeReader) wait(ctx context.Context, n int, progress func(int, int), werrs <-chan error) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		r.mu.Lock()
		done, err := len(r.seen), r.err
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("bench: reading outcomes: %w", err)
		}
		if done >= n {
			if progress != nil {
				progress(done, n)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: %d of %d outcomes seen: %w", done, n, ctx.Err())
		case err := <-werrs:
			return fmt.Errorf("bench: worker stopped: %w", err)
		case <-tick.C:
			if progress != nil {
				progress(done, n)
			}
		case <-r.more:
		}
	}
}

func (r *outcomeReader) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.states))
	for k, v := range r.states {
		out[k] = v
	}
	return out
}

func (r *outcomeReader) seenAt() map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]time.Time, len(r.seen))
	for k, v := range r.seen {
		out[k] = v
	}
	return out
}
