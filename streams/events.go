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
	if block <= 0 {
		block = -1 // go-redis: a negative Block omits BLOCK
	}
	res, err := s.rdb.XRead(ctx, &redis.XReadArgs{
		Streams: []string{s.keys.Events(), after}, Count: int64(count), Block: block,
	}).Result()
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

// TrimEvents drops events older than before (XTRIM MINID ~): trimmed by age,
// never by count, so no unread event is dropped silently. "~" lets Redis
// trim whole macro nodes only, so a few older entries may remain.
func (s *Store) TrimEvents(ctx context.Context, before time.Time) (int64, error) {
	minID := strconv.FormatInt(before.UnixMilli(), 10) + "-0"
	n, err := s.rdb.XTrimMinIDApprox(ctx, s.keys.Events(), minID, 0).Result()
	if err != nil {
		return 0, fmt.Errorf("streams: trim events before %s: %w", minID, err)
	}
	return n, nil
}
