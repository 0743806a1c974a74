package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Errors of Retry. Match with errors.Is.
var (
	// ErrCompleted: Retry refused a COMPLETED job; its outcome stands.
	ErrCompleted = errors.New("client: job completed; not retried")
	// ErrNotFinished: Retry refused a job that has no outcome yet.
	ErrNotFinished = errors.New("client: job not finished; not retried")
	// ErrNoInput: the job's input was kept nowhere (not persisted, not in a
	// dead-letter copy), so it cannot be sent again; submit it anew.
	ErrNoInput = errors.New("client: job input not kept; cannot retry")
)

// WorkerReport is one worker's self-report, written every few seconds by
// cmd/worker to {ns}:workers (docs/architecture.md) and removed at a clean
// stop. A program embedding package worker may write its own with
// ReportWorker. InFlightByState and Outcomes are keyed by workflow.State.
type WorkerReport = streams.WorkerReport

// ReportWorker stores r (under r.Instance) for Stats to read.
func (c *Client) ReportWorker(ctx context.Context, r WorkerReport) error {
	return c.base.ReportWorker(ctx, r)
}

// RemoveWorker deletes the report of instance (a clean stop).
func (c *Client) RemoveWorker(ctx context.Context, instance string) error {
	return c.base.RemoveWorker(ctx, instance)
}

// Consumer is one consumer (worker) of the namespace's group.
type Consumer struct {
	Name    string        `json:"name"`
	Pending int64         `json:"pending"` // submissions it holds
	Idle    time.Duration `json:"idle"`    // since its last read or claim
	// Active: it read or claimed within ActiveWithin (a live worker reads
	// every fraction of a second).
	Active bool `json:"active"`
}

// ActiveWithin is how recently a consumer must have read to count as active.
const ActiveWithin = time.Minute

// StaleAfter is how old a worker report may be before Stats marks it stale
// (reports are written every 5 s).
const StaleAfter = 30 * time.Second

// Stats is a namespace's queue at one moment.
type Stats struct {
	Namespace string    `json:"namespace"`
	At        time.Time `json:"at"`
	// GroupExists is false when no worker ever read this namespace: with
	// no active consumer either, submissions wait for nobody (a producer
	// on the wrong namespace, or no worker started).
	GroupExists bool `json:"groupExists"`
	// Backlog counts submissions no worker has read yet; Pending those
	// delivered to a worker and not finished.
	Backlog int64 `json:"backlog"`
	Pending int64 `json:"pending"`
	// OldestWaiting is how long the oldest unread submission has waited (0 = none).
	OldestWaiting time.Duration `json:"oldestWaiting"`
	DeadLetters   int64         `json:"deadLetters"`
	Events        int64         `json:"events"`
	Consumers     []Consumer    `json:"consumers"`
	// ActiveConsumers counts the consumers that read within ActiveWithin.
	ActiveConsumers int `json:"activeConsumers"`
	// Workers are the reports of the workers (fresh and stale, by instance).
	Workers []WorkerStatus `json:"workers"`
	// LiveWorkers counts the fresh reports (cmd/worker writes one every 5 s).
	// On Redis before 7.2 a consumer's idle time resets only when it gets
	// entries, so an idle pool shows no active consumer: LiveWorkers is the
	// better sign that workers run.
	LiveWorkers int `json:"liveWorkers"`
	// InFlightByState sums the fresh reports' owned jobs by state.
	InFlightByState map[workflow.State]int `json:"inFlightByState"`
	// RunpodCalls and RunpodErrors sum the fresh reports' Runpod calls by
	// operation (errors: every outcome but ok), since each worker started.
	RunpodCalls  map[string]uint64 `json:"runpodCalls"`
	RunpodErrors map[string]uint64 `json:"runpodErrors"`
	// Outcomes counts the terminal events in the last Window, by state,
	// and OutcomesPerMinute is their total rate.
	Window            time.Duration          `json:"window"`
	Outcomes          map[workflow.State]int `json:"outcomes"`
	OutcomesPerMinute float64                `json:"outcomesPerMinute"`
	// OutcomesTruncated: the window held more events than Stats reads.
	OutcomesTruncated bool `json:"outcomesTruncated,omitempty"`
	// GPU is the GPU time of finished job runs per Runpod endpoint id,
	// since the namespace's first job: each run counted once, when its
	// outcome is written (docs/operations.md, "GPU time").
	GPU map[string]GPUUsage `json:"gpu"`
}

// GPUUsage is one endpoint's GPU time: Runpod's executionTime summed over
// the finished runs that reached it.
type GPUUsage struct {
	// Seconds sums executionTime, in seconds.
	Seconds float64 `json:"gpuSeconds"`
	// Runs counts the finished runs that reached Runpod.
	Runs int64 `json:"runs"`
}

// WorkerStatus is one worker's report as Stats read it.
type WorkerStatus struct {
	WorkerReport
	Seen  time.Time `json:"seen"`
	Stale bool      `json:"stale"`
}

// StatsOptions tunes Stats.
type StatsOptions struct {
	// Window is the span outcomes are counted over; default 1 minute.
	Window time.Duration
	// MaxEvents bounds the events read to count outcomes; default 10,000.
	MaxEvents int
}

// Stats reads the namespace's queue: backlog, pending, oldest waiting
// submission, dead letters, consumers, the workers' reports and the
// outcomes of the last window. It reads a few keys and at most MaxEvents
// events; it writes nothing.
func (c *Client) Stats(ctx context.Context, opts StatsOptions) (Stats, error) {
	if err := c.checkParts(ctx); err != nil {
		return Stats{}, err
	}
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	now := c.now()
	q, err := c.parts.QueueInfo(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("client: stats: %w", err)
	}
	s := Stats{
		Namespace: c.cfg.Namespace, At: now, GroupExists: q.GroupExists,
		Backlog: q.Backlog, Pending: q.Pending, DeadLetters: q.DeadLetters, Events: q.Events,
		Consumers: []Consumer{}, Workers: []WorkerStatus{}, InFlightByState: map[workflow.State]int{},
		RunpodCalls: map[string]uint64{}, RunpodErrors: map[string]uint64{},
		Window: opts.Window, Outcomes: map[workflow.State]int{},
	}
	if q.OldestWaitingMs > 0 {
		s.OldestWaiting = max(0, now.Sub(time.UnixMilli(q.OldestWaitingMs)))
	}
	for _, cs := range q.Consumers {
		active := cs.Idle < ActiveWithin
		if active {
			s.ActiveConsumers++
		}
		s.Consumers = append(s.Consumers, Consumer{Name: cs.Name, Pending: cs.Pending, Idle: cs.Idle, Active: active})
	}
	reports, err := c.base.WorkerReports(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("client: stats: %w", err)
	}
	for _, r := range reports {
		ws := WorkerStatus{WorkerReport: r, Seen: time.UnixMilli(r.AtMs).UTC()}
		ws.Stale = now.Sub(ws.Seen) > StaleAfter
		s.Workers = append(s.Workers, ws)
		if ws.Stale {
			continue
		}
		s.LiveWorkers++
		for st, n := range r.InFlightByState {
			s.InFlightByState[workflow.State(st)] += n
		}
		for op, outs := range r.RunpodCalls {
			for out, n := range outs {
				s.RunpodCalls[op] += n
				if out != "ok" {
					s.RunpodErrors[op] += n
				}
			}
		}
	}
	counts, truncated, err := c.countEvents(ctx, now.Add(-opts.Window), opts.MaxEvents)
	if err != nil {
		return Stats{}, fmt.Errorf("client: stats: %w", err)
	}
	total := 0
	for typ, st := range map[string]workflow.State{
		streams.EventCompleted: workflow.StateCompleted, streams.EventFailed: workflow.StateFailed,
		streams.EventTimedOut: workflow.StateTimedOut, streams.EventCanceled: workflow.StateCanceled,
	} {
		if n := int(counts[typ]); n > 0 {
			s.Outcomes[st] = n
			total += n
		}
	}
	s.OutcomesPerMinute = float64(total) / opts.Window.Minutes()
	s.OutcomesTruncated = truncated
	// finalize.lua counts GPU time in the finished job's partition.
	s.GPU = map[string]GPUUsage{}
	for _, st := range c.parts.All() {
		gpu, err := st.GPUUsage(ctx)
		if err != nil {
			return Stats{}, fmt.Errorf("client: stats: %w", err)
		}
		for ep, u := range gpu {
			g := s.GPU[ep]
			g.Seconds += float64(u.Ms) / 1000
			g.Runs += u.Runs
			s.GPU[ep] = g
		}
	}
	return s, nil
}

// ListOptions tunes List.
type ListOptions struct {
	// State keeps only jobs in this state ("" = every state).
	State workflow.State
	// Limit caps the jobs returned; default 100.
	Limit int
	// Cursor continues a previous List (its NextCursor); 0 starts.
	Cursor uint64
	// MaxScan bounds the records one call reads (0 = none): past it List
	// returns at the end of a SCAN page with fewer than Limit jobs and a
	// NextCursor to go on. A filter no record matches otherwise reads the
	// whole namespace in one call.
	MaxScan int
}

// ListPage is one page of List.
type ListPage struct {
	Jobs []Job `json:"jobs"`
	// NextCursor continues the listing; 0 when the scan is complete.
	NextCursor uint64 `json:"nextCursor"`
}

// List returns job records of the namespace, optionally in one state, by a
// SCAN of the records (order is Redis's; each record is read once per full
// scan, records changing meanwhile may be missed or seen in either state).
// It reads; it never writes. Cancel stubs are left out.
func (c *Client) List(ctx context.Context, opts ListOptions) (ListPage, error) {
	if err := c.checkParts(ctx); err != nil {
		return ListPage{}, err
	}
	if opts.Limit <= 0 {
		opts.Limit = 100
	}
	if opts.State != "" && !opts.State.Valid() {
		return ListPage{}, fmt.Errorf("client: list: unknown state %q", opts.State)
	}
	page := ListPage{Jobs: []Job{}}
	cursor := opts.Cursor
	scanned := 0
	for {
		st, ids, next, err := c.scanJobs(ctx, cursor)
		if err != nil {
			return ListPage{}, fmt.Errorf("client: list: %w", err)
		}
		scanned += len(ids)
		recs, err := st.GetMany(ctx, ids)
		if err != nil {
			return ListPage{}, fmt.Errorf("client: list: %w", err)
		}
		for _, r := range recs {
			if opts.State == "" || workflow.State(r.State) == opts.State {
				page.Jobs = append(page.Jobs, jobFromRecord(r))
			}
		}
		cursor = next
		if cursor == 0 || len(page.Jobs) >= opts.Limit || (opts.MaxScan > 0 && scanned >= opts.MaxScan) {
			break
		}
	}
	// A SCAN page is not cut in the middle (its cursor would skip the
	// rest), so a page may hold a little more than Limit.
	slices.SortFunc(page.Jobs, func(a, b Job) int { return a.CreatedAt.Compare(b.CreatedAt) })
	page.NextCursor = cursor
	return page, nil
}

// scanJobs runs one SCAN page of the job records. The cursor spans the
// partitions: SCAN cursor × P + partition (with P = 1, SCAN's own cursor);
// it returns the page's partition store and the cursor to continue with (0
// = every partition done).
func (c *Client) scanJobs(ctx context.Context, cursor uint64) (*streams.Store, []string, uint64, error) {
	p := uint64(c.parts.Count())
	part, scan := cursor%p, cursor/p
	if part >= p {
		part = 0
	}
	st := c.parts.At(int(part))
	ids, next, err := st.ScanJobs(ctx, scan, 500)
	if err != nil {
		return nil, nil, 0, err
	}
	switch {
	case next != 0:
		return st, ids, next*p + part, nil
	case part+1 < p:
		return st, ids, part + 1, nil
	}
	return st, ids, 0, nil
}

// countEvents is CountEvents over every partition.
func (c *Client) countEvents(ctx context.Context, since time.Time, limit int) (map[string]int64, bool, error) {
	total, truncated := map[string]int64{}, false
	for _, st := range c.parts.All() {
		counts, tr, err := st.CountEvents(ctx, since, limit)
		if err != nil {
			return nil, false, err
		}
		for k, v := range counts {
			total[k] += v
		}
		truncated = truncated || tr
	}
	return total, truncated, nil
}

// DeadLetter is one dead-letter copy of a submission refused as poison.
type DeadLetter struct {
	// ID is the dead-letter stream's entry id (what DeleteDead-style
	// operations name). Ids are per partition: two partitions' streams may
	// hold entries with the same id, so page with Cursor, not ID.
	ID    string    `json:"id"`
	JobID string    `json:"clientJobId,omitempty"`
	At    time.Time `json:"at"`
	// Reason is why the submission was refused.
	Reason string `json:"reason"`
	// Entry is the submission's own entry id.
	Entry string `json:"entry"`
	// Input is the submission's input field, when it had one.
	Input json.RawMessage `json:"input,omitempty"`
	// Fields are the copy's fields as stored (the submission's own and dead_*).
	Fields map[string]string `json:"fields"`
	// Partition is the partition whose dead-letter stream holds the copy
	// (always 0 with one partition).
	Partition int `json:"partition,omitempty"`
	// Cursor is the position just after this entry, for DeadOptions.After:
	// with one partition the entry's ID; with several, one id per
	// partition, comma-separated (each partition's last entry read up to and
	// including this one), as Subscription.Position.
	Cursor string `json:"cursor"`
}

// DeadOptions tunes Dead.
type DeadOptions struct {
	// After reads after this position: "" from the oldest; a dead-letter
	// id, which applies to every partition; or a DeadLetter.Cursor (with
	// several partitions, one id per partition, comma-separated). Page with
	// the last entry's Cursor: an id alone would skip another partition's
	// entry with the same id.
	After string
	// Limit caps the entries returned; default 100.
	Limit int
}

// deadAfter splits a DeadOptions.After into one id per partition.
func (c *Client) deadAfter(after string) ([]string, error) {
	p := c.parts.Count()
	if after == "" {
		return make([]string, p), nil
	}
	if !streamIDRe.MatchString(after) {
		return nil, fmt.Errorf("client: dead: After %q: want a dead-letter id like 1700000000000-0 or a DeadLetter.Cursor", after)
	}
	if !strings.Contains(after, ",") {
		return slices.Repeat([]string{after}, p), nil
	}
	ids := strings.Split(after, ",")
	if len(ids) != p {
		return nil, fmt.Errorf("client: dead: After %q names %d partitions' positions, the namespace has %d", after, len(ids), p)
	}
	return ids, nil
}

// Dead reads the dead-letter streams, oldest first: every partition's,
// merged by entry id (equal ids in partition order), each from its own
// position in opts.After.
func (c *Client) Dead(ctx context.Context, opts DeadOptions) ([]DeadLetter, error) {
	if err := c.checkParts(ctx); err != nil {
		return nil, err
	}
	if opts.Limit <= 0 {
		opts.Limit = 100
	}
	pos, err := c.deadAfter(opts.After)
	if err != nil {
		return nil, err
	}
	var entries []streams.DeadEntry
	var parts []int
	for i, st := range c.parts.All() {
		es, err := st.ReadDead(ctx, pos[i], int64(opts.Limit))
		if err != nil {
			return nil, fmt.Errorf("client: dead: %w", err)
		}
		entries = append(entries, es...)
		for range es {
			parts = append(parts, i)
		}
	}
	order := make([]int, len(entries))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return compareStreamIDs(entries[a].ID, entries[b].ID) })
	out := make([]DeadLetter, 0, min(len(entries), opts.Limit))
	for _, k := range order[:min(len(order), opts.Limit)] {
		e := entries[k]
		pos[parts[k]] = e.ID
		d := DeadLetter{ID: e.ID, JobID: e.JobID, Reason: e.Reason, Entry: e.Entry, Fields: e.Fields, Partition: parts[k],
			Cursor: deadCursor(pos)}
		if e.Ms > 0 {
			d.At = time.UnixMilli(e.Ms).UTC()
		}
		if in := e.Fields["input"]; in != "" && json.Valid([]byte(in)) {
			d.Input = json.RawMessage(in)
		}
		out = append(out, d)
	}
	return out, nil
}

// deadCursor formats per-partition positions; a partition not read yet is
// "0" (from its oldest) so the cursor always names every partition.
func deadCursor(pos []string) string {
	if len(pos) == 1 {
		return pos[0]
	}
	out := make([]string, len(pos))
	for i, id := range pos {
		out[i] = cmp.Or(id, "0")
	}
	return strings.Join(out, ",")
}

// RetryResult is what Retry did.
type RetryResult struct {
	ClientJobID string `json:"clientJobId"`
	// Run is the new run's number: the first run is 1, each retry adds one.
	Run int `json:"run"`
	// PreviousState is how the previous run ended.
	PreviousState workflow.State `json:"previousState"`
	// FromDeadLetter: the input came from the job's dead-letter copy.
	FromDeadLetter bool `json:"fromDeadLetter,omitempty"`
}

// Retry runs a FAILED, TIMED_OUT or CANCELED job again under the same id,
// as a new run (redrive): it gets a new submission entry, its record starts
// over at SUBMITTED, and its events carry the run (a retried event opens
// it). The guarantee becomes one terminal outcome per run; Audit checks it
// so. A COMPLETED job is refused (ErrCompleted), a job without an outcome
// too (ErrNotFinished). The input is the record's (Config.PersistInput or
// the workers' --persist-input) or, for a job that was dead-lettered, the
// dead-letter copy's; without either it is ErrNoInput. A job that does not
// exist is workflow.ErrJobNotFound.
func (c *Client) Retry(ctx context.Context, id string) (RetryResult, error) {
	if err := c.checkParts(ctx); err != nil {
		return RetryResult{}, err
	}
	// The zero time: the new run's times come from Redis's clock, never ours.
	res, err := c.store(id).Retry(ctx, id, nil, time.Time{})
	fromDead := false
	if errors.Is(err, streams.ErrNoInput) {
		if in, ok, derr := c.deadInput(ctx, id); derr != nil {
			return RetryResult{}, fmt.Errorf("client: retry %q: %w", id, derr)
		} else if ok {
			res, err = c.store(id).Retry(ctx, id, in, time.Time{})
			fromDead = true
		}
	}
	switch {
	case errors.Is(err, streams.ErrNotFound):
		return RetryResult{}, fmt.Errorf("client: retry %q: %w", id, workflow.ErrJobNotFound)
	case errors.Is(err, streams.ErrCompleted):
		return RetryResult{}, fmt.Errorf("client: retry %q: %w", id, ErrCompleted)
	case errors.Is(err, streams.ErrNotFinished):
		return RetryResult{}, fmt.Errorf("client: retry %q: %w", id, ErrNotFinished)
	case errors.Is(err, streams.ErrNoInput):
		return RetryResult{}, fmt.Errorf("client: retry %q: %w", id, ErrNoInput)
	case errors.Is(err, streams.ErrAlias):
		return RetryResult{}, fmt.Errorf("client: retry %q: an alias; retry the job it names: %w", id, ErrNotFinished)
	case err != nil:
		return RetryResult{}, fmt.Errorf("client: retry %q: %w", id, err)
	}
	return RetryResult{ClientJobID: id, Run: res.Run, PreviousState: workflow.State(res.PreviousState), FromDeadLetter: fromDead}, nil
}

// deadInput finds the newest dead-letter copy of job id with an input.
func (c *Client) deadInput(ctx context.Context, id string) ([]byte, bool, error) {
	var found []byte
	after := ""
	for {
		page, err := c.store(id).ReadDead(ctx, after, 1000)
		if err != nil {
			return nil, false, err
		}
		for _, e := range page {
			if e.JobID == id && e.Fields["input"] != "" {
				found = []byte(e.Fields["input"])
			}
		}
		if len(page) < 1000 {
			return found, found != nil, nil
		}
		after = page[len(page)-1].ID
	}
}

// RetryDead retries every job of the dead-letter stream (after opts.After,
// at most opts.Limit entries), each once, and removes the dead-letter
// entries of the jobs it retried. It returns the jobs retried and, per job
// id, why another was not (a COMPLETED job, one already running again, ...).
func (c *Client) RetryDead(ctx context.Context, opts DeadOptions) ([]RetryResult, map[string]error, error) {
	dead, err := c.Dead(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	var done []RetryResult
	skipped := map[string]error{}
	seen := map[string]bool{}
	remove := make([][]string, c.parts.Count())
	for _, d := range dead {
		if d.JobID == "" {
			skipped[d.ID] = errors.New("the entry names no job id")
			continue
		}
		if seen[d.JobID] {
			remove[d.Partition] = append(remove[d.Partition], d.ID)
			continue
		}
		seen[d.JobID] = true
		res, err := c.store(d.JobID).Retry(ctx, d.JobID, []byte(d.Fields["input"]), time.Time{})
		if err != nil {
			skipped[d.JobID] = err
			continue
		}
		done = append(done, RetryResult{ClientJobID: d.JobID, Run: res.Run, PreviousState: workflow.State(res.PreviousState), FromDeadLetter: true})
		remove[d.Partition] = append(remove[d.Partition], d.ID)
	}
	for i, ids := range remove {
		if _, err := c.parts.At(i).DeleteDead(ctx, ids...); err != nil {
			return done, skipped, fmt.Errorf("client: retry dead: %w", err)
		}
	}
	return done, skipped, nil
}

// PurgeOptions tunes Purge.
type PurgeOptions struct {
	// States are the terminal states whose records are deleted; empty =
	// every terminal state. A live job is never deleted.
	States []workflow.State
	// DeadLetters also empties the dead-letter stream.
	DeadLetters bool
}

// PurgeResult is what Purge deleted.
type PurgeResult struct {
	Jobs        int   `json:"jobs"`
	DeadLetters int64 `json:"deadLetters"`
}

// Purge deletes the records of finished jobs (before their result TTL) and,
// with DeadLetters, the dead-letter stream. Live jobs, submissions and
// events are never touched. It scans every record of the namespace.
func (c *Client) Purge(ctx context.Context, opts PurgeOptions) (PurgeResult, error) {
	if err := c.checkParts(ctx); err != nil {
		return PurgeResult{}, err
	}
	states := make([]string, 0, len(opts.States))
	for _, st := range opts.States {
		if !st.Terminal() {
			return PurgeResult{}, fmt.Errorf("client: purge: %q is not a terminal state", st)
		}
		states = append(states, string(st))
	}
	var res PurgeResult
	cursor := uint64(0)
	for {
		st, ids, next, err := c.scanJobs(ctx, cursor)
		if err != nil {
			return res, fmt.Errorf("client: purge: %w", err)
		}
		del, err := st.PurgeFinished(ctx, ids, states)
		if err != nil {
			return res, fmt.Errorf("client: purge: %w", err)
		}
		res.Jobs += len(del)
		cursor = next
		if cursor == 0 {
			break
		}
	}
	for _, st := range c.parts.All() {
		if !opts.DeadLetters {
			break
		}
		for {
			page, err := st.ReadDead(ctx, "", 1000)
			if err != nil {
				return res, fmt.Errorf("client: purge: %w", err)
			}
			if len(page) == 0 {
				break
			}
			ids := make([]string, len(page))
			for i, d := range page {
				ids[i] = d.ID
			}
			n, err := st.DeleteDead(ctx, ids...)
			if err != nil {
				return res, fmt.Errorf("client: purge: %w", err)
			}
			res.DeadLetters += n
		}
	}
	return res, nil
}
