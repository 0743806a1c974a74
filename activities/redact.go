package activities

import (
	"context"
	"errors"
	"strings"
)

// redactedMarker replaces the API key wherever it would appear in text.
const redactedMarker = "[REDACTED]"

// redactor removes one secret from text. The key travels only in the
// Authorization header, which net/http never puts into errors, so this is a
// second line of defence: every error and log string the client builds from
// text it does not control (transport errors, response bodies, caller ids)
// passes through it.
type redactor struct {
	secret string
}

// String returns s with every occurrence of the secret replaced.
func (r redactor) String(s string) string {
	if r.secret == "" || !strings.Contains(s, r.secret) {
		return s
	}
	return strings.ReplaceAll(s, r.secret, redactedMarker)
}

// Error returns err unchanged if its text does not hold the secret.
// Otherwise it returns an error with the redacted text that does not unwrap
// to err: the original chain could still print the secret, so it is dropped
// (only whether it was a context error is kept).
func (r redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := r.String(msg)
	if clean == msg {
		return err
	}
	e := &redactedError{msg: clean}
	switch {
	case errors.Is(err, context.Canceled):
		e.err = context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		e.err = context.DeadlineExceeded
	}
	return e
}

// redactedError carries the redacted message of an error whose text held
// the secret; err is nil or a context sentinel.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
