package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
)

// redactedMarker replaces a secret wherever it would appear in text.
const redactedMarker = "[REDACTED]"

// redactor removes the configured secrets (the API key and Config.Secrets)
// from text. The key travels only in the Authorization header, which
// net/http never puts into errors, so for errors this is a second line of
// defence: every error and log string the client builds from text it does
// not control (transport errors, response bodies, caller ids) passes through
// it. Response bodies pass through JSON before they are decoded, so nothing
// Runpod sends back (a job's error, its output or progress, stream chunks)
// carries a secret into a record, an event or a log line.
type redactor struct {
	secrets []string // non-empty, longest first
	bytes   [][]byte // secrets as bytes, for anyIn
}

func newRedactor(secrets ...string) redactor {
	var r redactor
	for _, s := range secrets {
		if s != "" && !contains(r.secrets, s) {
			r.secrets = append(r.secrets, s)
		}
	}
	// Longest first, so a secret that contains another is replaced whole.
	sort.SliceStable(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	for _, s := range r.secrets {
		r.bytes = append(r.bytes, []byte(s))
	}
	return r
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// maxLen is the length of the longest secret.
func (r redactor) maxLen() int {
	if len(r.secrets) == 0 {
		return 0
	}
	return len(r.secrets[0])
}

// String returns s with every occurrence of every secret replaced.
func (r redactor) String(s string) string {
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, redactedMarker)
		}
	}
	return s
}

// JSON returns the JSON text b with every secret replaced inside its string
// literals (keys included), however the literal escapes it; a number or
// literal token holding a secret becomes the string "[REDACTED]"; a string
// literal whose text is JSON is redacted as JSON too (a secret escaped
// inside the inner JSON is found). Anything
// without a secret is returned byte for byte, so outputs keep their exact
// form. b that is not valid JSON is redacted as plain text.
func (r redactor) JSON(b []byte) []byte {
	if len(r.secrets) == 0 {
		return b
	}
	// Fast path, before any parsing (every answer passes here): no escape
	// sequence can hide a secret and none appears verbatim, so neither the
	// JSON nor the plain-text redaction below would change a byte.
	if bytes.IndexByte(b, '\\') < 0 && !r.anyIn(b) {
		return b
	}
	if !json.Valid(b) {
		return []byte(r.String(string(b)))
	}
	var out []byte // nil until the first change
	last := 0      // b[last:] not yet copied to out
	replace := func(start, end int, with []byte) {
		out = append(out, b[last:start]...)
		out = append(out, with...)
		last = end
	}
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			end := stringEnd(b, i)
			lit := b[i:end]
			if inner := lit[1 : len(lit)-1]; bytes.IndexByte(inner, '\\') < 0 && !r.anyIn(inner) {
				// Its text is its bytes (no escape), and holds no secret, nor
				// can JSON inside it (it has no escaped quote, so no string).
				i = end
				continue
			}
			var s string
			if json.Unmarshal(lit, &s) == nil {
				clean := s
				if t := strings.TrimSpace(s); t != "" && (t[0] == '{' || t[0] == '[' || t[0] == '"') && json.Valid([]byte(t)) {
					// JSON text inside a string (Runpod's error often is one,
					// and workflow.RunpodError decodes it again): a secret
					// escaped at the inner level is not in s verbatim.
					clean = string(r.JSON([]byte(s)))
				}
				if clean = r.String(clean); clean != s {
					enc, _ := json.Marshal(clean)
					replace(i, end, enc)
				}
			}
			i = end
		case c == '{' || c == '}' || c == '[' || c == ']' || c == ',' || c == ':' ||
			c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		default: // a number, true, false or null
			end := i
			for end < len(b) && !strings.ContainsRune("{}[],: \t\n\r\"", rune(b[end])) {
				end++
			}
			if r.anyIn(b[i:end]) {
				replace(i, end, []byte(`"`+redactedMarker+`"`))
			}
			i = end
		}
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}

// anyIn reports whether b holds any secret verbatim.
func (r redactor) anyIn(b []byte) bool {
	for _, sec := range r.bytes {
		if bytes.Contains(b, sec) {
			return true
		}
	}
	return false
}

// stringEnd returns the index just past the string literal starting at
// b[start] (a quote) in valid JSON.
func stringEnd(b []byte, start int) int {
	for i := start + 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// Error returns err unchanged if its text holds no secret. Otherwise it
// returns an error with the redacted text that does not unwrap to err: the
// original chain could still print the secret, so it is dropped (only
// whether it was a context error is kept).
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
// a secret; err is nil or a context sentinel.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
