package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Result is a job's terminal outcome.
type Result struct {
	// ClientJobID is the job the outcome belongs to: the awaited id, or the
	// target of an alias.
	ClientJobID string `json:"clientJobId"`
	// Status is COMPLETED, FAILED, TIMED_OUT or CANCELED.
	Status workflow.State `json:"status"`
	// RunpodID is Runpod's job id, if the job reached Runpod.
	RunpodID string `json:"runpodJobId,omitempty"`
	// Output is the handler's JSON output (COMPLETED).
	Output json.RawMessage `json:"output,omitempty"`
	// Error says why the job did not complete.
	Error string `json:"error,omitempty"`
	// ErrorJSON is Runpod's error as a JSON value when it sent an object
	// (or a JSON string holding one, as the Python worker does); Error
	// then holds its readable message.
	ErrorJSON json.RawMessage `json:"errorJson,omitempty"`
}

// maxAliasHops bounds how many alias records AwaitResult follows. Aliases
// point at the job holding an input hash, which is never itself an alias, so
// one hop is the norm; the bound only guards against a corrupt record.
const maxAliasHops = 4

// AwaitResult waits until job id is terminal and returns its outcome. A job
// that is already terminal returns at once. An alias record is followed to
// its target. A job that does not exist is an error matching
// workflow.ErrJobNotFound; when ctx ends first the error wraps ctx.Err(),
// and when the Client is closed it wraps ErrClosed.
//
// Every AwaitResult of a Client shares one reader of the events stream (of
// each partition, with Config.Partitions > 1: a job's events are in its
// partition).
func (c *Client) AwaitResult(ctx context.Context, id string) (Result, error) {
	if err := c.checkParts(ctx); err != nil {
		return Result{}, err
	}
	for range maxAliasHops {
		// Register before reading the record: any terminal event the record
		// does not show yet is written after this point and is delivered.
		w, err := c.hubFor(id).register(ctx, id, func(ev streams.Event) bool {
			return workflow.State(ev.State).Terminal()
		})
		if err != nil {
			return Result{}, fmt.Errorf("client: await job %q: %w", id, err)
		}
		job, err := c.Get(ctx, id)
		if err != nil {
			w.h.unregister(w)
			return Result{}, fmt.Errorf("client: await: %w", err)
		}
		if job.AliasOf != "" && job.AliasOf != id {
			w.h.unregister(w)
			id = job.AliasOf
			continue
		}
		if r, ok := job.Result(); ok {
			w.h.unregister(w)
			return r, nil
		}
		ev, rec, err := c.waitOrRecheck(ctx, w, id, func(j Job) bool { return j.State.Terminal() })
		if err != nil {
			return Result{}, fmt.Errorf("client: await job %q: %w", id, err)
		}
		if rec != nil {
			if r, ok := rec.Result(); ok {
				return r, nil
			}
		}
		return c.resultFromEvent(ctx, ev), nil
	}
	return Result{}, fmt.Errorf("client: await job %q: more than %d alias hops", id, maxAliasHops)
}

// awaitRecheckDefault is how often a waiting AwaitResult re-reads the
// record. The terminal event is how a waiter normally learns its outcome;
// the record is the truth it falls back on. After a Redis rollback (a
// restart from an older snapshot, a promoted replica that missed the last
// writes, on a host whose clock is behind) the shared reader's position can
// be past the stream's end, so events written afterwards get lower ids and
// its XREAD never returns them; a trimmed or lost event is the same. One
// HMGET per waiter per period bounds how long such a waiter waits.
const awaitRecheckDefault = 30 * time.Second

// waitOrRecheck waits for w's event, re-reading job id's record every
// awaitRecheck in case the event is one the reader cannot see. It returns
// the event, or the record once settled says it holds what w waits for.
func (c *Client) waitOrRecheck(ctx context.Context, w *waiter, id string, settled func(Job) bool) (streams.Event, *Job, error) {
	every := c.awaitRecheck
	if every <= 0 {
		every = awaitRecheckDefault
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case ev := <-w.ch:
			return ev, nil, nil
		case <-ctx.Done():
			w.h.unregister(w)
			return streams.Event{}, nil, ctx.Err()
		case <-w.h.done:
			w.h.unregister(w)
			return streams.Event{}, nil, ErrClosed
		case <-t.C:
			job, err := c.Get(ctx, id)
			if err == nil && settled(job) {
				w.h.unregister(w)
				return streams.Event{}, &job, nil
			}
			// Otherwise the reader or the next recheck answers.
		}
	}
}

// resultFromEvent builds a Result from a terminal event. Events carry the
// outcome, but should a COMPLETED event come without output, the record (which
// the same script wrote) has it.
func (c *Client) resultFromEvent(ctx context.Context, ev streams.Event) Result {
	r := Result{
		ClientJobID: ev.JobID,
		Status:      workflow.State(ev.State),
		RunpodID:    ev.Payload.RunpodID,
		Output:      rawJSON(ev.Payload.Output),
		Error:       ev.Payload.Error,
		ErrorJSON:   rawJSON(ev.Payload.ErrorJSON),
	}
	if r.Status == workflow.StateCompleted && len(r.Output) == 0 {
		if job, err := c.Get(ctx, ev.JobID); err == nil && job.State == r.Status {
			r.Output = job.Output
			r.RunpodID = cmpOr(r.RunpodID, job.RunpodID)
		}
	}
	return r
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Tuning of the shared reader.
const (
	// readerBlock bounds each XREAD BLOCK. go-redis does not interrupt a
	// blocked read when its context is cancelled, so this is also how long
	// Close may wait for the reader to notice.
	readerBlock = 500 * time.Millisecond
	// readerBatch is the most events one XREAD returns.
	readerBatch = 1000
	// readerRetryMin and readerRetryMax bound the backoff after a failed read.
	readerRetryMin = 100 * time.Millisecond
	readerRetryMax = 5 * time.Second
)

// waiter is one registered interest in a job's events. match selects the
// event that ends the wait; the reader sends it on ch (capacity 1) and
// forgets the waiter.
type waiter struct {
	h     *hub // the hub of the job's partition
	jobID string
	match func(streams.Event) bool
	ch    chan streams.Event
}

// hub is the shared reader of the events stream and its registry of
// waiters. The reader runs only while there are waiters.
//
// Ordering argument (why no event is missed): while the reader runs, it
// moves its position and dispatches a batch under mu, so an event it
// consumed before a waiter registered existed before the registration, and
// the waiter's later record read shows its effect (state change and event
// are written by one script). When no reader runs, the one started for a new
// waiter begins after the last event id captured before that waiter reads
// the record, so every later event is delivered.
type hub struct {
	store *streams.Store
	log   hclog.Logger

	ctx    context.Context // cancelled by close; the reader's context
	cancel context.CancelFunc
	done   chan struct{} // closed by close: wakes every waiter
	wg     sync.WaitGroup

	mu       sync.Mutex
	waiters  map[string]map[*waiter]struct{} // guarded by mu; by job id
	count    int                             // guarded by mu; number of waiters
	running  bool                            // guarded by mu; a reader goroutine is live
	starting chan struct{}                   // guarded by mu; non-nil while a start captures its position
	closed   bool                            // guarded by mu

	starts atomic.Int64 // reader goroutines started, for tests
}

func newHub(store *streams.Store, log hclog.Logger) *hub {
	// The reader outlives any one call, so its context is the hub's own,
	// ended by Close (a constructor's documented default, STYLE §23).
	ctx, cancel := context.WithCancel(context.Background())
	return &hub{
		store:   store,
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		waiters: make(map[string]map[*waiter]struct{}),
	}
}

// register adds a waiter for jobID, starting the reader if none runs.
func (h *hub) register(ctx context.Context, jobID string, match func(streams.Event) bool) (*waiter, error) {
	w := &waiter{h: h, jobID: jobID, match: match, ch: make(chan streams.Event, 1)}
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, ErrClosed
		}
		if h.running {
			h.addLocked(w)
			h.mu.Unlock()
			return w, nil
		}
		if wait := h.starting; wait != nil {
			// Another caller is capturing the start position: wait for it
			// rather than have ten thousand callers capture at once.
			h.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-h.done:
				return nil, ErrClosed
			}
		}
		started := make(chan struct{})
		h.starting = started
		h.mu.Unlock()

		from, err := h.store.LastEventID(ctx)

		h.mu.Lock()
		h.starting = nil
		close(started)
		if err != nil {
			h.mu.Unlock()
			return nil, fmt.Errorf("capture events position: %w", err)
		}
		if h.closed {
			h.mu.Unlock()
			return nil, ErrClosed
		}
		h.addLocked(w)
		h.running = true
		h.starts.Add(1)
		h.wg.Add(1)
		go h.read(from)
		h.mu.Unlock()
		return w, nil
	}
}

func (h *hub) addLocked(w *waiter) {
	set := h.waiters[w.jobID]
	if set == nil {
		set = make(map[*waiter]struct{}, 1)
		h.waiters[w.jobID] = set
	}
	set[w] = struct{}{}
	h.count++
}

// unregister forgets w; a no-op if the reader already delivered to it.
func (h *hub) unregister(w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(w)
}

func (h *hub) removeLocked(w *waiter) {
	set := h.waiters[w.jobID]
	if _, ok := set[w]; !ok {
		return
	}
	delete(set, w)
	if len(set) == 0 {
		delete(h.waiters, w.jobID)
	}
	h.count--
}

// readerRetry is the wait after the n-th failed read in a row (n >= 1):
// doubling from readerRetryMin, capped at readerRetryMax.
func readerRetry(n int) time.Duration {
	d := readerRetryMin
	for i := 1; i < n && d < readerRetryMax; i++ {
		d *= 2
	}
	return min(d, readerRetryMax)
}

// sleepCtx waits d or until ctx ends (then it returns ctx.Err()).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// transientRedis reports whether a failed read is worth resuming: a network
// failure or a server that is loading, failing over or read-only. A refused
// command (NOPERM, WRONGTYPE, ...) or a closed client is permanent.
func transientRedis(err error) bool {
	if errors.Is(err, redis.ErrClosed) {
		return false
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true // network, timeout, EOF
	}
	msg := rerr.Error()
	for _, p := range []string{"LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "MOVED", "ASK"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// read is the reader goroutine: XREAD BLOCK after `after`, dispatch, repeat
// until no waiter is left or the hub closes.
func (h *hub) read(after string) {
	defer h.wg.Done()
	failures := 0
	for {
		evs, err := h.store.ReadEvents(h.ctx, after, readerBatch, readerBlock)
		if err != nil && h.ctx.Err() == nil {
			failures++
			backoff := readerRetry(failures)
			h.log.Warn("read events failed; retrying", "after", after, "retry_in", backoff, "error", err)
			_ = sleepCtx(h.ctx, backoff)
		} else if err == nil {
			failures = 0
		}

		h.mu.Lock()
		for _, ev := range evs {
			after = ev.ID
			for w := range h.waiters[ev.JobID] {
				if w.match(ev) {
					w.ch <- ev // capacity 1 and sent once: never blocks
					h.removeLocked(w)
				}
			}
		}
		if h.count == 0 || h.ctx.Err() != nil {
			h.running = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}

// close stops the reader and wakes every waiter with ErrClosed.
func (h *hub) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.done)
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}
