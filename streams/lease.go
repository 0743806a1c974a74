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
		err = s.blocking(ctx, block, func(ctx context.Context) error { res, err = s.rdb.XReadGroup(ctx, args).Result(); return err })
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
		err = s.blocking(ctx, block, func(ctx context.Context) error { res, err = s.rdb.XRead(ctx, args).Result(); return err })
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

// leaseArgs builds the KEYS and ARGV of heartbeat.lua/handoff.lua:
// the submissions stream, consumer's liveness key, then per lease its
// record (KEYS) and entry and epoch (ARGV, after args).
func (s *Store) leaseArgs(consumer string, leases []Lease, args []any) ([]string, []any) {
	keys := make([]string, 0, 2+len(leases))
	keys = append(keys, s.keys.Submissions(), s.keys.Alive(consumer))
	for _, l := range leases {
		keys = append(keys, s.keys.Job(l.JobID))
		args = append(args, l.Entry, strconv.FormatInt(l.Epoch, 10))
	}
	return keys, args
}

// Liveness is what a beat writes to, and expects in, the consumer's
// liveness key (Keys.Alive): the lease as the key's TTL, the token to write
// and the token the key should hold. Every beat writes a new token, so a
// key that holds anything but Expect shows that the key expired or was
// lost or rolled back, that another process uses the same consumer name,
// or that this very call was resent after a lost reply (it holds Token:
// the applied try may have found leases lost). A beat's later batches
// expect its own Token.
type Liveness struct {
	Lease  time.Duration // TTL of the key; 0 = do not write it, check every record
	Token  string        // written by this beat
	Expect string        // the previous beat's token (this beat's in its later batches); "" = check every record; ExpectAbsent on a first beat
}

// ExpectAbsent is Liveness.Expect for a worker's first beat in a partition:
// the key should not exist (it holds another process's token when a process
// with the same consumer name ran within the lease).
const ExpectAbsent = "-"

// BeatResult is what one Beat call found.
type BeatResult struct {
	// Lost lists the leases the consumer no longer holds.
	Lost []Lease
	// Checked is true when every lease's record was read (the liveness key
	// was not as expected, or the caller asked): the caller should send
	// the rest of this beat's batches with Expect "" too.
	Checked bool
}

// Beat refreshes the consumer's liveness key and the idle time of the
// leases it still holds (the PEL names consumer), and returns those that
// are lost. It never takes an entry from another consumer. The leases'
// records (owner, epoch, not terminal) are read only when the liveness key
// was not as lv expects (see heartbeat.lua); otherwise a batch costs a few
// commands whatever its size. Leases sorted by entry id (SortLeases), in
// batches cut from the sorted list, cost one PEL read and one XCLAIM per
// call; any order is correct.
func (s *Store) Beat(ctx context.Context, consumer string, lv Liveness, leases []Lease) (BeatResult, error) {
	if len(leases) == 0 {
		return BeatResult{}, nil
	}
	lease := lv.Lease.Milliseconds()
	if lv.Lease > 0 && lease < 1 {
		lease = 1
	}
	keys, args := s.leaseArgs(consumer, leases, []any{s.group, consumer, lease, lv.Token, lv.Expect})
	v, err := s.runScript(ctx, "heartbeat", scriptHeartbeat, keys, args...)
	if err != nil {
		return BeatResult{}, err
	}
	flags, err := replyStrings("heartbeat", v)
	if err != nil || len(flags) != 1+len(leases) {
		return BeatResult{}, fmt.Errorf("streams: heartbeat: bad reply %v: %w", v, err)
	}
	res := BeatResult{Checked: flags[0] == "1"}
	for i, h := range flags[1:] {
		if h != "1" {
			res.Lost = append(res.Lost, leases[i])
		}
	}
	return res, nil
}

// Heartbeat is Beat with every record checked and the liveness key left
// alone: the lease check of workers before liveness keys (kept for tools
// and tests).
func (s *Store) Heartbeat(ctx context.Context, consumer string, leases []Lease) (lost []Lease, err error) {
	res, err := s.Beat(ctx, consumer, Liveness{}, leases)
	return res.Lost, err
}

// PendingConsumers returns, from XPENDING's summary, every consumer of the
// group holding pending entries and how many: one call whatever the size
// of the pending list.
func (s *Store) PendingConsumers(ctx context.Context) (map[string]int64, error) {
	p, err := s.rdb.XPending(ctx, s.keys.Submissions(), s.group).Result()
	if err != nil {
		return nil, fmt.Errorf("streams: pending consumers of %s: %w", s.group, noGroup(err))
	}
	return p.Consumers, nil
}

// Alive reports, per consumer, whether its liveness key exists in this
// partition (one MGET).
func (s *Store) Alive(ctx context.Context, consumers []string) ([]bool, error) {
	out := make([]bool, len(consumers))
	if len(consumers) == 0 {
		return out, nil
	}
	keys := make([]string, len(consumers))
	for i, c := range consumers {
		keys[i] = s.keys.Alive(c)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("streams: liveness keys: %w", err)
	}
	for i, v := range vals {
		out[i] = v != nil
	}
	return out, nil
}

// ClaimResult is what one ClaimFrom call took.
type ClaimResult struct {
	Msgs    []redis.XMessage // now pending for the taker: admit them (epoch bump)
	Deleted []string         // pending ids whose entries no longer exist (acknowledged)
	More    bool             // the page was full: the consumer may hold more idle entries
	Alive   bool             // the consumer's liveness key exists: nothing taken
}

// ClaimFrom takes up to count entries that consumer from holds and has not
// refreshed for minIdle, for consumer to, unless from's liveness key
// exists (own = true takes them anyway: a worker's own entries it no longer
// holds in memory). See claim.lua. The claimed entries must go through
// Admit, which bumps their epoch.
func (s *Store) ClaimFrom(ctx context.Context, to, from string, minIdle time.Duration, count int, own bool) (ClaimResult, error) {
	ownArg := "0"
	if own {
		ownArg = "1"
	}
	v, err := s.runScript(ctx, "claim", scriptClaim, []string{s.keys.Submissions(), s.keys.Alive(from)},
		s.group, to, from, minIdle.Milliseconds(), count, ownArg)
	if err != nil {
		return ClaimResult{}, fmt.Errorf("streams: claim from %s as %s: %w", from, to, noGroup(err))
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 4 {
		return ClaimResult{}, fmt.Errorf("streams: claim from %s: unexpected reply %v", from, v)
	}
	// The first two parts have XAUTOCLAIM's layout after its cursor.
	msgs, deleted, _, err := parseAutoClaim([]any{"0-0", arr[0], arr[1]})
	if err != nil {
		return ClaimResult{}, fmt.Errorf("streams: claim from %s: %w", from, err)
	}
	found, _ := arr[2].(int64)
	alive, _ := arr[3].(int64)
	return ClaimResult{Msgs: msgs, Deleted: deleted, More: found >= int64(count), Alive: alive == 1}, nil
}

// Handoff marks consumer's still-held leases as long idle, deletes its
// liveness key and nudges the other workers, so the next reclaim anywhere
// takes them at once. It returns how many were handed off.
func (s *Store) Handoff(ctx context.Context, consumer string, leases []Lease) (int, error) {
	if len(leases) == 0 {
		return 0, nil
	}
	keys, args := s.leaseArgs(consumer, leases, []any{s.group, consumer, HandoffIdle.Milliseconds(),
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
