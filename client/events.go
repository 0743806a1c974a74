package client

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// EventType names what an event reports (field "type" of the events stream).
type EventType string

// Event types, as written by the orchestrator (wire format v1).
const (
	EventSubmitted       EventType = streams.EventSubmitted       // job created
	EventQueued          EventType = streams.EventQueued          // Runpod accepted it; RunpodID set
	EventProgress        EventType = streams.EventProgress        // Runpod status or progress output changed
	EventCompleted       EventType = streams.EventCompleted       // terminal: COMPLETED, Output set
	EventFailed          EventType = streams.EventFailed          // terminal: FAILED, Error set
	EventTimedOut        EventType = streams.EventTimedOut        // terminal: TIMED_OUT
	EventCanceled        EventType = streams.EventCanceled        // terminal: CANCELED
	EventCancelRequested EventType = streams.EventCancelRequested // Cancel was called
	EventDeduplicated    EventType = streams.EventDeduplicated    // raw submission recorded as an alias (AliasOf)
	EventRejected        EventType = streams.EventRejected        // a submission entry was refused (Reason)
	EventRetried         EventType = streams.EventRetried         // a finished job runs again (Retry): opens run Run
	// EventRunpodJobRevealed: a webhook revealed a Runpod job of this job
	// whose id was never learned (RunpodID, Attempt); not a state change.
	EventRunpodJobRevealed EventType = streams.EventRunpodJobRevealed
	// EventSubmitUncertain: /run attempt Attempt has an unknown outcome; a
	// Runpod job nobody tracks may run (a possible duplicate GPU job).
	EventSubmitUncertain EventType = streams.EventSubmitUncertain
)

// Terminal reports whether t is one of the four terminal event types.
func (t EventType) Terminal() bool {
	switch t {
	case EventCompleted, EventFailed, EventTimedOut, EventCanceled:
		return true
	}
	return false
}

// Event is one entry of the events stream. An entry that could not be
// decoded has an empty Type (and only ID set).
type Event struct {
	// ID is the stream entry id. With one partition, pass it as
	// EventsOptions.From to resume after this event; with several, ids are
	// per partition (two partitions' events may share one), so resume from
	// Subscription.Position and tell events apart by (Partition, ID).
	ID string `json:"id"`
	// Partition is the partition whose events stream holds the event
	// (always 0 with one partition).
	Partition int `json:"partition,omitempty"`
	// Type says what happened.
	Type EventType `json:"type"`
	// JobID is the job the event belongs to.
	JobID string `json:"clientJobId,omitempty"`
	// State is the job's state after the event.
	State workflow.State `json:"state,omitempty"`
	// Epoch is the fencing token of the writer.
	Epoch int64 `json:"epoch,omitempty"`
	// Run is the run of the job the event belongs to, from the second run
	// on (Retry): 2, 3, ...; 0 on the events of a job's first run. A
	// retried event opens its run.
	Run int `json:"run,omitempty"`
	// Time is when the event was written (millisecond precision, UTC).
	Time time.Time `json:"time,omitzero"`
	// RunpodID is Runpod's job id, once known.
	RunpodID string `json:"runpodJobId,omitempty"`
	// RunpodStatus is the status Runpod reported.
	RunpodStatus workflow.RunpodStatus `json:"runpodStatus,omitempty"`
	// Output is the job's output (completed) or progress output.
	Output json.RawMessage `json:"output,omitempty"`
	// Error is the failure text of a terminal event.
	Error string `json:"error,omitempty"`
	// ErrorJSON is Runpod's error as a JSON value (an object, not JSON
	// inside a string), when Runpod sent one; Error is its readable text.
	ErrorJSON json.RawMessage `json:"errorJson,omitempty"`
	// RunpodWorkerID (Runpod's workerId) and FinalizedBy (the worker that
	// wrote the outcome) are set on terminal events.
	RunpodWorkerID string `json:"runpodWorkerId,omitempty"`
	FinalizedBy    string `json:"finalizedBy,omitempty"`
	// Chunk is, on a progress event of a streaming job, the index (from 0,
	// in the order the handler yielded them, each once) of the /stream
	// chunk Output holds; nil on every other event.
	Chunk *int `json:"chunk,omitempty"`
	// Reason explains a rejection, a dead-letter or a cancel.
	Reason string `json:"reason,omitempty"`
	// AliasOf names the job a deduplicated raw submission points to.
	AliasOf string `json:"aliasOf,omitempty"`
	// Attempt is the /run attempt the event belongs to.
	Attempt int `json:"attempt,omitempty"`
	// Delay and Execution are Runpod's queue and execution times.
	// They are written as delayMs and executionMs in JSON.
	Delay     time.Duration `json:"-"`
	Execution time.Duration `json:"-"`
}

// MarshalJSON writes Delay and Execution as milliseconds.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	return json.Marshal(struct {
		plain
		Delay     int64 `json:"delayMs,omitempty"`
		Execution int64 `json:"executionMs,omitempty"`
	}{plain(e), e.Delay.Milliseconds(), e.Execution.Milliseconds()})
}

func eventFromStreams(ev streams.Event) Event {
	e := Event{
		ID:             ev.ID,
		Type:           EventType(ev.Type),
		JobID:          ev.JobID,
		State:          workflow.State(ev.State),
		Epoch:          ev.Epoch,
		Run:            ev.Run,
		Time:           msTime(ev.TS),
		RunpodID:       ev.Payload.RunpodID,
		RunpodStatus:   workflow.RunpodStatus(ev.Payload.RunpodStatus),
		Output:         rawJSON(ev.Payload.Output),
		Error:          ev.Payload.Error,
		ErrorJSON:      rawJSON(ev.Payload.ErrorJSON),
		RunpodWorkerID: ev.Payload.RunpodWorkerID,
		FinalizedBy:    ev.Payload.FinalizedBy,
		Chunk:          ev.Payload.Chunk,
		Reason:         ev.Payload.Reason,
		AliasOf:        ev.Payload.AliasOf,
		Attempt:        ev.Payload.Attempt,
		Delay:          time.Duration(ev.Payload.DelayMs) * time.Millisecond,
		Execution:      time.Duration(ev.Payload.ExecMs) * time.Millisecond,
	}
	return e
}

// Positions for EventsOptions.From.
const (
	// FromNow follows only events written after the subscription starts.
	FromNow = ""
	// FromStart replays the stream from its oldest retained event.
	FromStart = "0"
)

// EventsOptions selects the events a subscription delivers.
type EventsOptions struct {
	// From is where to start: FromNow (""), FromStart ("0"), or a stream
	// entry id ("1700000000000-0", or just the milliseconds), exclusive:
	// delivery starts after it. With several partitions it may also be one
	// id per partition, comma-separated (what Subscription.Position
	// returns); a single id applies to every partition.
	From string
	// JobID, if set, delivers only that job's events. Filtering happens in
	// the client: the whole stream is still read.
	JobID string
	// StopAtEnd ends the subscription once it has caught up with the
	// stream, instead of waiting for new events.
	StopAtEnd bool
}

var streamIDRe = regexp.MustCompile(`^[0-9]{1,20}(-[0-9]{1,20})?(,[0-9]{1,20}(-[0-9]{1,20})?)*$`)

// Validate checks From and JobID, naming the field.
func (o EventsOptions) Validate() error {
	if o.From != FromNow && !streamIDRe.MatchString(o.From) {
		return fmt.Errorf("client: events: From %q: want \"\" (now), \"0\" (start) or a stream id like 1700000000000-0 (one per partition, comma-separated)", o.From)
	}
	if o.JobID != "" {
		if err := checkToken("JobID", o.JobID, MaxClientJobIDBytes, false); err != nil {
			return fmt.Errorf("client: events: %w", err)
		}
	}
	return nil
}

// Tuning of subscriptions.
const (
	// eventsBlock bounds each blocking read of a subscription, so a
	// cancelled ctx is noticed within it (go-redis does not interrupt a
	// blocked read).
	eventsBlock = 500 * time.Millisecond
	// eventsBatch is the most events one read returns.
	eventsBatch = 500
)

// Position returns the current end of the events stream: a subscription
// From it delivers exactly the events written after this call. With
// several partitions it is one stream id per partition, comma-separated.
func (c *Client) Position(ctx context.Context) (string, error) {
	if err := c.checkParts(ctx); err != nil {
		return "", err
	}
	ids, err := c.lastEventIDs(ctx)
	if err != nil {
		return "", fmt.Errorf("client: events position: %w", err)
	}
	return strings.Join(ids, ","), nil
}

// lastEventIDs returns each partition's newest event id.
func (c *Client) lastEventIDs(ctx context.Context) ([]string, error) {
	ids := make([]string, c.parts.Count())
	for i, st := range c.parts.All() {
		id, err := st.LastEventID(ctx)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return ids, nil
}

// compareStreamIDs orders stream ids ("ms-seq") numerically.
func compareStreamIDs(a, b string) int {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	an, _ := strconv.ParseUint(am, 10, 64)
	bn, _ := strconv.ParseUint(bm, 10, 64)
	if c := cmp.Compare(an, bn); c != 0 {
		return c
	}
	aq, _ := strconv.ParseUint(as, 10, 64)
	bq, _ := strconv.ParseUint(bs, 10, 64)
	return cmp.Compare(aq, bq)
}

// Subscription reads the events stream from a position fixed when it is
// created, so NewSubscription(FromNow) followed by Submit always delivers the
// job's submitted event. It resumes after the last event it delivered when a
// read fails for a transient reason (Redis restarting, a dropped
// connection), so a subscription survives Redis restarts without gaps or
// repeats. A Subscription is read by one goroutine at a time.
type Subscription struct {
	c     *Client
	opts  EventsOptions
	after []string                  // per partition: the id to read after
	next  int                       // the partition the next blocking read waits on (P > 1)
	retry func(n int) time.Duration // backoff after the n-th failed read in a row
}

// NewSubscription validates opts and fixes the subscription's position now
// (for FromNow, the current end of the stream). Read it with Events or Run.
func (c *Client) NewSubscription(ctx context.Context, opts EventsOptions) (*Subscription, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := c.checkParts(ctx); err != nil {
		return nil, err
	}
	var after []string
	switch {
	case opts.From == FromNow:
		ids, err := c.lastEventIDs(ctx)
		if err != nil {
			return nil, fmt.Errorf("client: events: capture position: %w", err)
		}
		after = ids
	case strings.Contains(opts.From, ","):
		after = strings.Split(opts.From, ",")
		if len(after) != c.parts.Count() {
			return nil, fmt.Errorf("client: events: From %q names %d partitions' positions, the namespace has %d",
				opts.From, len(after), c.parts.Count())
		}
	default:
		after = slices.Repeat([]string{opts.From}, c.parts.Count())
	}
	return &Subscription{c: c, opts: opts, after: after, retry: readerRetry}, nil
}

// Position returns the id after which the subscription reads next: its
// starting position, then the id of the last event it read (one per
// partition, comma-separated, with several partitions). Pass it as
// EventsOptions.From to resume in another process.
func (s *Subscription) Position() string { return strings.Join(s.after, ",") }

// read reads the next batch: with one partition, one read blocking up to
// block; with several, a non-blocking read of each partition in turn and,
// when none had anything, a short blocking read of one partition (rotating)
// so a quiet namespace costs one command per wait, not P. part says which
// partition the events are from.
func (s *Subscription) read(ctx context.Context, block time.Duration) (evs []streams.Event, part int, err error) {
	p := s.c.parts.Count()
	if p == 1 {
		evs, err = s.c.parts.At(0).ReadEvents(ctx, s.after[0], eventsBatch, block)
		return evs, 0, err
	}
	for i := range p {
		k := (s.next + i) % p
		evs, err = s.c.parts.At(k).ReadEvents(ctx, s.after[k], eventsBatch, 0)
		if err != nil || len(evs) > 0 {
			s.next = (k + 1) % p // the others are read first next time: no partition starves
			return evs, k, err
		}
	}
	if block <= 0 {
		return nil, 0, nil
	}
	k := s.next
	s.next = (k + 1) % p
	evs, err = s.c.parts.At(k).ReadEvents(ctx, s.after[k], eventsBatch, max(block/time.Duration(p), 50*time.Millisecond))
	return evs, k, err
}

// Events returns the subscription's events as an iterator, until ctx ends
// (or, with StopAtEnd, until caught up). Transient read failures are retried
// with backoff from the last delivered event; the sequence ends after
// yielding a non-nil error: a permanent read failure (a refused command, a
// closed Redis client), or ctx ending (the error then wraps ctx.Err()).
func (s *Subscription) Events(ctx context.Context) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		block := eventsBlock
		if s.opts.StopAtEnd {
			block = 0
		}
		failures := 0
		for {
			if err := ctx.Err(); err != nil {
				yield(Event{}, fmt.Errorf("client: events: %w", err))
				return
			}
			evs, part, err := s.read(ctx, block)
			if err != nil {
				if ctx.Err() == nil && transientRedis(err) {
					failures++
					s.c.cfg.Logger.Debug("events read failed; resuming", "after", s.Position(), "error", err)
					if sleepCtx(ctx, s.retry(failures)) == nil {
						continue
					}
				}
				if ctx.Err() != nil {
					err = ctx.Err()
				}
				yield(Event{}, fmt.Errorf("client: events: read after %s: %w", s.Position(), err))
				return
			}
			failures = 0
			if len(evs) == 0 && s.opts.StopAtEnd {
				return
			}
			for _, ev := range evs {
				s.after[part] = ev.ID
				if s.opts.JobID != "" && ev.JobID != s.opts.JobID {
					continue
				}
				e := eventFromStreams(ev)
				e.Partition = part
				if !yield(e, nil) {
					return
				}
			}
		}
	}
}

// Run calls fn for each event in stream order, with the same ending rules
// as Subscribe.
func (s *Subscription) Run(ctx context.Context, fn func(Event) error) error {
	for ev, err := range s.Events(ctx) {
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return fmt.Errorf("client: subscribe: handler for event %s: %w", ev.ID, err)
		}
	}
	return nil
}

// Events returns the events stream as an iterator, from opts.From, until ctx
// ends (or, with StopAtEnd, until caught up). The position is taken when
// Events is called, not when the iteration starts. Each call has its own
// reader; see Subscription for how failures are handled.
//
//	for ev, err := range c.Events(ctx, client.EventsOptions{From: client.FromStart}) {
//		if err != nil { ... }
//	}
func (c *Client) Events(ctx context.Context, opts EventsOptions) iter.Seq2[Event, error] {
	s, err := c.NewSubscription(ctx, opts)
	if err != nil {
		return func(yield func(Event, error) bool) { yield(Event{}, err) }
	}
	return s.Events(ctx)
}

// Subscribe calls fn for each event selected by opts, in stream order, until
// ctx ends, fn returns an error, or (with StopAtEnd) the stream is caught up;
// the latter returns nil. fn's error is returned wrapped; ctx ending returns
// an error wrapping ctx.Err(). Subscribe blocks: to fix the position before
// starting it in a goroutine (and then submit), use NewSubscription and Run.
func (c *Client) Subscribe(ctx context.Context, opts EventsOptions, fn func(Event) error) error {
	s, err := c.NewSubscription(ctx, opts)
	if err != nil {
		return err
	}
	return s.Run(ctx, fn)
}

// Handlers are typed callbacks for Handle, after the seed's
// on('submitted' | 'progress' | 'completed' | 'failed'). A nil handler is
// skipped. Handlers run on the subscription's goroutine, in stream order.
type Handlers struct {
	// Submitted: the job was created (EventSubmitted).
	Submitted func(Event)
	// Queued: Runpod accepted the job; Event.RunpodID is set.
	Queued func(Event)
	// Progress: Runpod's status or progress output changed.
	Progress func(Event)
	// Completed: the job ended COMPLETED; Result.Output holds its output.
	Completed func(Result)
	// Failed: the job ended FAILED, TIMED_OUT or CANCELED; Result.Status
	// says which and Result.Error why.
	Failed func(Result)
	// Other receives every other event (cancel requests, dedupe aliases,
	// rejected entries), when set.
	Other func(Event)
}

// Handle dispatches the subscription's events to h until ctx ends, with the
// same ending rules as Subscribe.
func (s *Subscription) Handle(ctx context.Context, h Handlers) error {
	return s.Run(ctx, func(ev Event) error {
		h.dispatch(ev)
		return nil
	})
}

func (h Handlers) dispatch(ev Event) {
	call := func(f func(Event)) {
		if f != nil {
			f(ev)
		}
	}
	switch {
	case ev.Type == EventSubmitted:
		call(h.Submitted)
	case ev.Type == EventQueued:
		call(h.Queued)
	case ev.Type == EventProgress:
		call(h.Progress)
	case ev.Type == EventCompleted:
		if h.Completed != nil {
			h.Completed(ev.Result())
		}
	case ev.Type.Terminal():
		if h.Failed != nil {
			h.Failed(ev.Result())
		}
	default:
		call(h.Other)
	}
}

// Result returns the outcome a terminal event carries (zero Status for any
// other event).
func (e Event) Result() Result {
	if !e.Type.Terminal() {
		return Result{}
	}
	return Result{ClientJobID: e.JobID, Status: e.State, RunpodID: e.RunpodID, Output: e.Output, Error: e.Error,
		ErrorJSON: e.ErrorJSON}
}
