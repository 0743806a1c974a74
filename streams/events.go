package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Flat field names of an events-stream entry (docs/wire-format.md).
const (
	EventFieldType    = "type"
	EventFieldJobID   = "job_id"
	EventFieldState   = "state"
	EventFieldEpoch   = "epoch"
	EventFieldTS      = "ts"
	EventFieldPayload = "payload"
	// EventFieldRun is the run an event belongs to; absent = run 1. Set on
	// the retried event that opens a new run (retry.lua).
	EventFieldRun = "run"
)

// ReadEvents reads events after id ("0" = from the start, "$" = only new),
// blocking up to block (0 = do not block). Undecodable entries are returned
// with Type "" (and whatever flat fields parse) rather than failing the
// batch. Event.ID is the stream id to resume after.
func (s *Store) ReadEvents(ctx context.Context, after string, count int, block time.Duration) ([]Event, error) {
	if after == "" {
		after = "0"
	}
	args := &redis.XReadArgs{
		Streams: []string{s.keys.Events(), after}, Count: int64(count),
		Block: -1, // go-redis: a negative Block omits BLOCK
	}
	var res []redis.XStream
	var err error
	if block > 0 {
		args.Block = block
		err = s.blocking(ctx, block, func(ctx context.Context) error { res, err = s.rdb.XRead(ctx, args).Result(); return err })
	} else {
		res, err = s.rdb.XRead(ctx, args).Result()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("streams: read events after %s: %w", after, err)
	}
	var out []Event
	for _, st := range res {
		for _, m := range st.Messages {
			out = append(out, DecodeEvent(m))
		}
	}
	return out, nil
}

// DecodeEvent decodes one events-stream entry. It never fails: an entry
// whose payload does not decode (or whose routing fields are malformed) has
// Type "", keeping the ID and whatever flat fields are usable.
func DecodeEvent(m redis.XMessage) Event {
	str := func(k string) string { v, _ := m.Values[k].(string); return v }
	e := Event{ID: m.ID, Type: str(EventFieldType), JobID: str(EventFieldJobID), State: str(EventFieldState)}
	bad := false
	if v := str(EventFieldEpoch); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		e.Epoch, bad = n, bad || err != nil
	}
	if v := str(EventFieldTS); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		e.TS, bad = n, bad || err != nil
	}
	if v := str(EventFieldRun); v != "" {
		n, err := strconv.Atoi(v)
		e.Run, bad = n, bad || err != nil
	}
	p, err := DecodePayload([]byte(str(EventFieldPayload)))
	if err != nil || bad {
		e.Type = ""
		return e
	}
	e.Payload = p
	return e
}

// TrimEvents drops events older than before (XTRIM MINID): trimmed by age,
// never by count, so no unread event is dropped silently. With limit > 0 it
// is one bounded step (MINID ~ LIMIT limit: whole macro nodes only, at most
// about limit entries), to be repeated until it removes nothing; limit 0 is
// the exact trim (MINID =) that removes the few older entries "~" leaves in
// the first node, unbounded, so only for that last step.
func (s *Store) TrimEvents(ctx context.Context, before time.Time, limit int64) (int64, error) {
	return s.trimByAge(ctx, s.keys.Events(), before, limit)
}

// TrimDead drops dead-letter entries older than before, as TrimEvents.
func (s *Store) TrimDead(ctx context.Context, before time.Time, limit int64) (int64, error) {
	return s.trimByAge(ctx, s.keys.Dead(), before, limit)
}

func (s *Store) trimByAge(ctx context.Context, key string, before time.Time, limit int64) (int64, error) {
	minID := strconv.FormatInt(before.UnixMilli(), 10) + "-0"
	var cmd *redis.IntCmd
	if limit > 0 {
		cmd = s.rdb.XTrimMinIDApprox(ctx, key, minID, limit)
	} else {
		cmd = s.rdb.XTrimMinID(ctx, key, minID)
	}
	n, err := cmd.Result()
	if err != nil {
		return 0, fmt.Errorf("streams: trim %s before %s: %w", key, minID, err)
	}
	return n, nil
}

// Time returns Redis's clock (TIME). Stream entry ids, and the record times
// the scripts write, are on that clock, so ages are measured against it.
func (s *Store) Time(ctx context.Context) (time.Time, error) {
	t, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("streams: time: %w", err)
	}
	return t, nil
}

// PruneConsumers removes from the group the consumers that hold no pending
// entry and have been idle at least minIdle (workers that are gone), never
// keep (the caller's own name). One atomic script: a consumer with pending
// entries is never removed. It returns the names removed.
func (s *Store) PruneConsumers(ctx context.Context, minIdle time.Duration, keep string) ([]string, error) {
	v, err := s.runScript(ctx, "prune consumers", scriptPrune, []string{s.keys.Submissions()},
		s.group, minIdle.Milliseconds(), keep)
	if err != nil {
		return nil, err
	}
	return replyStrings("prune consumers", v)
}
