package streams

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// HandoffIdle is the idle time Handoff gives released entries: far beyond
// any sensible MinIdle, so the next XAUTOCLAIM anywhere takes them.
const HandoffIdle = 365 * 24 * time.Hour

// MessageHandoff is the control message Handoff publishes.
const MessageHandoff = "handoff"

// Group returns the consumer group name.
func (s *Store) Group() string { return s.group }

// EnsureGroup creates the submissions stream and consumer group if missing.
// The group starts at the beginning of the stream, so entries a raw producer
// wrote before any worker ran are delivered too.
func (s *Store) EnsureGroup(ctx context.Context) error {
	err := s.rdb.XGroupCreateMkStream(ctx, s.keys.Submissions(), s.group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("streams: create group %s: %w", s.group, err)
	}
	return nil
}

// noGroup makes a NOGROUP reply match ErrNoGroup (keeping Redis's text).
func noGroup(err error) error {
	if redis.HasErrorPrefix(err, "NOGROUP") {
		return fmt.Errorf("%w: %w", ErrNoGroup, err)
	}
	return err
}

// Read takes up to count new entries for consumer (XREADGROUP >), blocking
// up to block (0 or less: do not block). It returns no entries and no error
// on timeout.
func (s *Store) Read(ctx context.Context, consumer string, count int, block time.Duration) ([]redis.XMessage, error) {
	args := &redis.XReadGroupArgs{
		Group: s.group, Consumer: consumer, Streams: []string{s.keys.Submissions(), ">"},
		Count: int64(count), Block: -1, // go-redis: a negative Block omits BLOCK
	}
	var res []redis.XStream
	var err error
	if block > 0 {
		args.Block = block
		err = s.blocking(ctx, func() error { res, err = s.rdb.XReadGroup(ctx, args).Result(); return err })
	} else {
		res, err = s.rdb.XReadGroup(ctx, args).Result()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("streams: read submissions as %s: %w", consumer, noGroup(err))
	}
	var out []redis.XMessage
	for _, st := range res {
		out = append(out, st.Messages...)
	}
	return out, nil
}

// WaitNew waits up to block (0 or less: does not wait) for entries no
// consumer of the group has been delivered yet, without taking them, and
// returns how many it saw (at most count). A fetch loop that must spend
// something to read (the pool's admission grants) waits here first, so an
// empty partition holds nothing while it waits. Another consumer may take
// the entries before the caller reads them.
func (s *Store) WaitNew(ctx context.Context, count int, block time.Duration) (int, error) {
	groups, err := s.rdb.XInfoGroups(ctx, s.keys.Submissions()).Result()
	if err != nil {
		if redis.HasErrorPrefix(err, "ERR no such key") {
			err = fmt.Errorf("%w: %w", ErrNoGroup, err)
		}
		return 0, fmt.Errorf("streams: wait for submissions: %w", noGroup(err))
	}
	last := ""
	for _, g := range groups {
		if g.Name == s.group {
			last = g.LastDeliveredID
		}
	}
	if last == "" {
		return 0, fmt.Errorf("streams: wait for submissions: %w: group %s not on %s", ErrNoGroup, s.group, s.keys.Submissions())
	}
	args := &redis.XReadArgs{
		Streams: []string{s.keys.Submissions(), last}, Count: int64(max(1, count)),
		Block: -1, // go-redis: a negative Block omits BLOCK
	}
	var res []redis.XStream
	if block > 0 {
		args.Block = block
		err = s.blocking(ctx, func() error { res, err = s.rdb.XRead(ctx, args).Result(); return err })
	} else {
		res, err = s.rdb.XRead(ctx, args).Result()
	}
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("streams: wait for submissions: %w", err)
	}
	n := 0
	for _, st := range res {
		n += len(st.Messages)
	}
	return n, nil
}

// Claim runs one XAUTOCLAIM page for entries idle at least minIdle, from
// cursor ("0-0" to start). deleted lists pending ids whose entries no longer
// exist (they are acknowledged here). next is "0-0" when the scan is done.
// The claimed entries must go through Admit, which bumps their epoch.
func (s *Store) Claim(ctx context.Context, consumer string, minIdle time.Duration, count int, cursor string) (msgs []redis.XMessage, deleted []string, next string, err error) {
	if cursor == "" {
		cursor = "0-0"
	}
	// go-redis's XAutoClaim drops the deleted-ids part of the reply, so
	// send the command raw and parse all three parts.
	v, err := s.rdb.Do(ctx, "XAUTOCLAIM", s.keys.Submissions(), s.group, consumer,
		minIdle.Milliseconds(), cursor, "COUNT", count).Result()
	if err != nil {
		return nil, nil, "", fmt.Errorf("streams: claim as %s: %w", consumer, noGroup(err))
	}
	msgs, deleted, next, err = parseAutoClaim(v)
	if err != nil {
		return nil, nil, "", fmt.Errorf("streams: claim as %s: %w", consumer, err)
	}
	if len(deleted) > 0 {
		// Redis 7 already drops these from the PEL; the XACK makes it so on
		// servers (and miniredis) that do not.
		if err := s.rdb.XAck(ctx, s.keys.Submissions(), s.group, deleted...).Err(); err != nil {
			return nil, nil, "", fmt.Errorf("streams: ack deleted entries: %w", err)
		}
	}
	return msgs, deleted, next, nil
}

func parseAutoClaim(v any) (msgs []redis.XMessage, deleted []string, next string, err error) {
	arr, ok := v.([]any)
	if !ok || len(arr) < 2 {
		return nil, nil, "", fmt.Errorf("unexpected XAUTOCLAIM reply %T", v)
	}
	next, _ = arr[0].(string)
	entries, _ := arr[1].([]any)
	for _, e := range entries {
		pair, ok := e.([]any)
		if !ok || len(pair) != 2 {
			continue // a nil entry: deleted between scan and reply
		}
		id, _ := pair[0].(string)
		kv, _ := pair[1].([]any)
		vals := make(map[string]any, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			k, _ := kv[i].(string)
			vals[k] = kv[i+1]
		}
		msgs = append(msgs, redis.XMessage{ID: id, Values: vals})
	}
	if len(arr) >= 3 {
		ids, _ := arr[2].([]any)
		for _, x := range ids {
			if id, ok := x.(string); ok {
				deleted = append(deleted, id)
			}
		}
	}
	return msgs, deleted, next, nil
}

// leaseArgs builds the per-lease KEYS and ARGV of heartbeat.lua/handoff.lua.
func (s *Store) leaseArgs(leases []Lease, args []any) ([]string, []any) {
	keys := make([]string, 0, 1+len(leases))
	keys = append(keys, s.keys.Submissions())
	for _, l := range leases {
		keys = append(keys, s.keys.Job(l.JobID))
		args = append(args, l.Entry, strconv.FormatInt(l.Epoch, 10))
	}
	return keys, args
}

// Heartbeat refreshes the idle time of the leases still held by consumer
// (owner and epoch match in the record, and the PEL names consumer) and
// returns those that are lost. It never takes an entry from another consumer.
// Leases sorted by entry id (SortLeases), in batches cut from the sorted
// list, cost one PEL read and one XCLAIM per call rather than per lease;
// any order is correct.
func (s *Store) Heartbeat(ctx context.Context, consumer string, leases []Lease) (lost []Lease, err error) {
	if len(leases) == 0 {
		return nil, nil
	}
	keys, args := s.leaseArgs(leases, []any{s.group, consumer})
	v, err := s.runScript(ctx, "heartbeat", scriptHeartbeat, keys, args...)
	if err != nil {
		return nil, err
	}
	held, err := replyStrings("heartbeat", v)
	if err != nil || len(held) != len(leases) {
		return nil, fmt.Errorf("streams: heartbeat: bad reply %v: %w", v, err)
	}
	for i, h := range held {
		if h != "1" {
			lost = append(lost, leases[i])
		}
	}
	return lost, nil
}

// Handoff marks consumer's still-held leases as long idle and nudges the
// other workers, so the next reclaim anywhere takes them at once. It returns
// how many were handed off.
func (s *Store) Handoff(ctx context.Context, consumer string, leases []Lease) (int, error) {
	if len(leases) == 0 {
		return 0, nil
	}
	keys, args := s.leaseArgs(leases, []any{s.group, consumer, HandoffIdle.Milliseconds(),
		s.keys.Control(), MessageHandoff})
	v, err := s.runScript(ctx, "handoff", scriptHandoff, keys, args...)
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("streams: handoff: unexpected reply %T", v)
	}
	return int(n), nil
}

// Pending returns the number of entries in the group's pending list.
func (s *Store) Pending(ctx context.Context) (int64, error) {
	p, err := s.rdb.XPending(ctx, s.keys.Submissions(), s.group).Result()
	if err != nil {
		return 0, fmt.Errorf("streams: pending of %s: %w", s.group, err)
	}
	return p.Count, nil
}

// SortLeases orders leases by entry id, as the stream orders entries, so a
// batch cut from them spans a narrow id range (see Heartbeat).
func SortLeases(leases []Lease) {
	slices.SortFunc(leases, func(a, b Lease) int { return compareEntryIDs(a.Entry, b.Entry) })
}

// compareEntryIDs compares stream entry ids "<ms>-<seq>" numerically; an id
// that does not parse sorts by its text after every one that does.
func compareEntryIDs(a, b string) int {
	am, as, aok := parseEntryID(a)
	bm, bs, bok := parseEntryID(b)
	switch {
	case aok && bok:
		if c := cmp.Compare(am, bm); c != 0 {
			return c
		}
		return cmp.Compare(as, bs)
	case aok:
		return -1
	case bok:
		return 1
	}
	return strings.Compare(a, b)
}

func parseEntryID(id string) (ms, seq uint64, ok bool) {
	m, s, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(m, 10, 64)
	seq, err2 := strconv.ParseUint(s, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}
