package streams

import (
	"context"
	"fmt"
	"strings"
)

// Control message kinds.
const (
	ControlCancel  = "cancel"
	ControlHandoff = "handoff"
)

// String renders m as published: "cancel <job id>" or "handoff".
func (m ControlMessage) String() string {
	if m.Kind == ControlCancel {
		return ControlCancel + " " + m.JobID
	}
	return m.Kind
}

// ParseControl parses a control message. Unknown kinds are an error (and
// are skipped by SubscribeControl): they come from a newer peer.
func ParseControl(s string) (ControlMessage, error) {
	switch {
	case s == ControlHandoff:
		return ControlMessage{Kind: ControlHandoff}, nil
	case strings.HasPrefix(s, ControlCancel+" ") && len(s) > len(ControlCancel)+1:
		return ControlMessage{Kind: ControlCancel, JobID: s[len(ControlCancel)+1:]}, nil
	}
	return ControlMessage{}, fmt.Errorf("streams: unknown control message %q", clip(s, 64))
}

// SubscribeControl delivers control messages until ctx is done; the channel
// is closed then. Messages are hints: a missed one delays, never loses, work.
// It returns once the subscription is active, so a message published after
// it returns is delivered. The forwarding goroutine exits when ctx is done.
func (s *Store) SubscribeControl(ctx context.Context) (<-chan ControlMessage, error) {
	ps := s.rdb.Subscribe(ctx, s.keys.Control())
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		_ = ps.Close()
		return nil, fmt.Errorf("streams: subscribe control: %w", err)
	}
	in := ps.Channel()
	out := make(chan ControlMessage)
	go func() {
		defer close(out)
		defer ps.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case msg, ok := <-in:
				if !ok {
					return
				}
				cm, err := ParseControl(msg.Payload)
				if err != nil {
					continue
				}
				select {
				case out <- cm:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
