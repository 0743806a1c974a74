package streams

import (
	"context"
	"fmt"
)

// LastEventID returns the id of the newest entry of the events stream, or
// "0-0" when it is empty. Reading events after it delivers exactly the
// events written after this call: the "$" of XREAD, but captured up front,
// so a reader can take a position, then read a record, then start reading
// without missing what happened in between. (Added for package client.)
func (s *Store) LastEventID(ctx context.Context) (string, error) {
	msgs, err := s.rdb.XRevRangeN(ctx, s.keys.Events(), "+", "-", 1).Result()
	if err != nil {
		return "", fmt.Errorf("streams: last event id: %w", err)
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}
