package streams

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// QueueInfo is what a namespace's streams say about its queue, read in one
// MULTI so the counts agree with each other.
type QueueInfo struct {
	// GroupExists is false when no worker ever read the namespace.
	GroupExists bool
	// Length is the submissions stream's length: every live job's entry
	// (workers delete an entry when its job finishes).
	Length int64
	// Pending counts entries delivered to a worker and not yet finished.
	Pending int64
	// Backlog counts entries no worker has read yet (Length − Pending).
	Backlog int64
	// OldestWaitingMs is the entry-id time (unix ms, the time of the XADD)
	// of the oldest submission no worker has read yet; 0 = none.
	OldestWaitingMs int64
	// DeadLetters is the dead-letter stream's length.
	DeadLetters int64
	// Events is the events stream's length.
	Events int64
	// Consumers are the group's consumers (workers, live or gone).
	Consumers []ConsumerInfo
}

// ConsumerInfo is one consumer of the group.
type ConsumerInfo struct {
	Name    string
	Pending int64         // entries it holds
	Idle    time.Duration // since its last read or claim attempt
}

// QueueInfo reads the queue's counts and consumers.
func (s *Store) QueueInfo(ctx context.Context) (QueueInfo, error) {
	var (
		subLen, deadLen, evLen *redis.IntCmd
		groups                 *redis.XInfoGroupsCmd
		consumers              *redis.XInfoConsumersCmd
	)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		subLen = p.XLen(ctx, s.keys.Submissions())
		deadLen = p.XLen(ctx, s.keys.Dead())
		evLen = p.XLen(ctx, s.keys.Events())
		groups = p.XInfoGroups(ctx, s.keys.Submissions())
		consumers = p.XInfoConsumers(ctx, s.keys.Submissions(), s.group)
		return nil
	})
	// XINFO fails on a stream or group that does not exist yet: that is
	// "no group", not an error.
	if err != nil && subLen.Err() != nil {
		return QueueInfo{}, fmt.Errorf("streams: queue info: %w", err)
	}
	q := QueueInfo{Length: subLen.Val(), DeadLetters: deadLen.Val(), Events: evLen.Val()}
	last := "-"
	if groups.Err() == nil {
		for _, g := range groups.Val() {
			if g.Name == s.group {
				q.GroupExists, q.Pending, last = true, g.Pending, "("+g.LastDeliveredID
			}
		}
	}
	if q.GroupExists && consumers.Err() == nil {
		for _, c := range consumers.Val() {
			q.Consumers = append(q.Consumers, ConsumerInfo{Name: c.Name, Pending: c.Pending, Idle: c.Idle})
		}
	}
	q.Backlog = max(0, q.Length-q.Pending)
	if q.Backlog > 0 {
		// The first entry after the group's last delivered id is the oldest
		// one no worker has read.
		msgs, err := s.rdb.XRangeN(ctx, s.keys.Submissions(), last, "+", 1).Result()
		if err != nil {
			return QueueInfo{}, fmt.Errorf("streams: queue info: oldest waiting entry: %w", err)
		}
		if len(msgs) == 1 {
			q.OldestWaitingMs = entryMs(msgs[0].ID)
		}
	}
	return q, nil
}

// entryMs is the millisecond part of a stream id ("1700000000000-3").
func entryMs(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return n
}

// CountEvents counts, by event type, the events at or after since, reading
// at most limit entries (0 = 10,000). truncated reports that the limit cut
// the count short.
func (s *Store) CountEvents(ctx context.Context, since time.Time, limit int) (counts map[string]int64, truncated bool, err error) {
	if limit <= 0 {
		limit = 10_000
	}
	counts = map[string]int64{}
	start, read := strconv.FormatInt(since.UnixMilli(), 10), 0
	for read < limit {
		page := min(1000, limit-read)
		msgs, err := s.rdb.XRangeN(ctx, s.keys.Events(), start, "+", int64(page)).Result()
		if err != nil {
			return nil, false, fmt.Errorf("streams: count events: %w", err)
		}
		for _, m := range msgs {
			if t, ok := m.Values[EventFieldType].(string); ok {
				counts[t]++
			}
		}
		read += len(msgs)
		if len(msgs) < page {
			return counts, false, nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	return counts, true, nil
}

// WorkerReport is one worker's self-report, stored as JSON under its
// instance id in {ns}:workers: written every few seconds by cmd/worker,
// removed at a clean stop, read by client.Stats.
type WorkerReport struct {
	Instance  string `json:"instance"`
	Version   string `json:"version,omitempty"`
	AtMs      int64  `json:"at_ms"` // when it was written, unix ms
	StartedMs int64  `json:"started_ms,omitempty"`
	// InFlight and InFlightByState (by workflow state) are the jobs it owns.
	InFlight        int            `json:"in_flight"`
	InFlightByState map[string]int `json:"in_flight_by_state,omitempty"`
	// RunpodCalls counts its Runpod calls since it started, by operation
	// and outcome (ok, transient, permanent, ...).
	RunpodCalls map[string]map[string]uint64 `json:"runpod_calls,omitempty"`
	// Outcomes counts the outcomes it wrote, by state.
	Outcomes map[string]uint64 `json:"outcomes,omitempty"`
	// Fault is set while Runpod refuses its key or endpoint.
	Fault string `json:"fault,omitempty"`
}

// ReportWorker stores r under r.Instance in the workers hash.
func (s *Store) ReportWorker(ctx context.Context, r WorkerReport) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("streams: report worker %s: %w", r.Instance, err)
	}
	if err := s.rdb.HSet(ctx, s.keys.Workers(), r.Instance, b).Err(); err != nil {
		return fmt.Errorf("streams: report worker %s: %w", r.Instance, err)
	}
	return nil
}

// RemoveWorker deletes a worker's report (at a clean stop).
func (s *Store) RemoveWorker(ctx context.Context, instance string) error {
	if err := s.rdb.HDel(ctx, s.keys.Workers(), instance).Err(); err != nil {
		return fmt.Errorf("streams: remove worker %s: %w", instance, err)
	}
	return nil
}

// WorkerReports returns every stored worker report, by instance id; one
// that does not decode is left out.
func (s *Store) WorkerReports(ctx context.Context) ([]WorkerReport, error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.Workers()).Result()
	if err != nil {
		return nil, fmt.Errorf("streams: worker reports: %w", err)
	}
	out := make([]WorkerReport, 0, len(m))
	for k, v := range m {
		var r WorkerReport
		if json.Unmarshal([]byte(v), &r) != nil {
			continue
		}
		r.Instance = k
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out, nil
}

// ScanJobs returns up to about count job ids from a SCAN of the namespace's
// job records, and the cursor to continue with (0 = done). On Redis Cluster
// it scans the node the client picks, which holds the namespace's slot.
func (s *Store) ScanJobs(ctx context.Context, cursor uint64, count int64) ([]string, uint64, error) {
	prefix := s.keys.Job("")
	keys, next, err := s.rdb.Scan(ctx, cursor, prefix+"*", count).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("streams: scan jobs: %w", err)
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, strings.TrimPrefix(k, prefix))
	}
	return ids, next, nil
}

// GetMany loads several job records in one round trip; a missing or
// unreadable one is left out.
func (s *Store) GetMany(ctx context.Context, ids []string) ([]Record, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, s.keys.Job(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("streams: get jobs: %w", err)
	}
	out := make([]Record, 0, len(ids))
	for i, c := range cmds {
		m := c.Val()
		if len(m) == 0 || m[recStub] == "1" {
			continue
		}
		if r, err := parseRecord(ids[i], m); err == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// DeadEntry is one dead-letter copy (docs/wire-format.md, "{ns}:dead").
type DeadEntry struct {
	ID     string            // the dead stream's entry id
	JobID  string            // the submission's job_id ("" if it had none)
	Reason string            // dead_reason
	Entry  string            // dead_entry: the submission entry's id
	Ms     int64             // dead_ms
	Fields map[string]string // every field of the copy, the submission's own included
}

// ReadDead reads up to count dead-letter entries after id ("" or "0" = the
// start), oldest first.
func (s *Store) ReadDead(ctx context.Context, after string, count int64) ([]DeadEntry, error) {
	start := "-"
	if after != "" && after != "0" {
		start = "(" + after
	}
	msgs, err := s.rdb.XRangeN(ctx, s.keys.Dead(), start, "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("streams: read dead letters: %w", err)
	}
	out := make([]DeadEntry, 0, len(msgs))
	for _, m := range msgs {
		d := DeadEntry{ID: m.ID, Fields: make(map[string]string, len(m.Values))}
		for k, v := range m.Values {
			if s, ok := v.(string); ok {
				d.Fields[k] = s
			}
		}
		d.JobID, d.Reason, d.Entry = d.Fields["job_id"], d.Fields["dead_reason"], d.Fields["dead_entry"]
		d.Ms, _ = strconv.ParseInt(d.Fields["dead_ms"], 10, 64)
		out = append(out, d)
	}
	return out, nil
}

// DeleteDead removes dead-letter entries by id; it returns how many were deleted.
func (s *Store) DeleteDead(ctx context.Context, ids ...string) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	n, err := s.rdb.XDel(ctx, s.keys.Dead(), ids...).Result()
	if err != nil {
		return 0, fmt.Errorf("streams: delete dead letters: %w", err)
	}
	return n, nil
}
