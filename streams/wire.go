package streams

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// Field names of a submission entry (wire format v1, docs/wire-format.md).
// A raw producer writes the same fields with a plain XADD.
const (
	FieldJobID     = "job_id"     // required: the caller's job id (idempotency key)
	FieldInput     = "input"      // required: JSON text, passed to Runpod as "input"
	FieldInputHash = "input_hash" // optional: dedupe key
	FieldTimeoutMs = "timeout_ms" // optional: deadline in ms from creation
	FieldVersion   = "v"          // optional: wire version; "1" if present
)

// WireVersion is the submission wire format version this code writes and
// accepts (field "v").
const WireVersion = "1"

// Limits of the submission wire format.
const (
	// MaxJobIDLen is the longest job id accepted, in bytes.
	MaxJobIDLen = 256
	// MaxInputHashLen is the longest input hash accepted, in bytes.
	MaxInputHashLen = 256
	// MaxSubmissionFields is the most fields (names) a submission entry may
	// have. The wire format defines five; the rest is room for forward
	// compatibility. A larger entry is poison, and its dead-letter copy is
	// cut to this many fields (prelude.lua DEAD_MAX_FIELDS).
	MaxSubmissionFields = 64
	// MaxTimeoutMs is the largest timeout_ms accepted: 10 years (365-day
	// years) in milliseconds. The scripts add it to a unix-ms creation time
	// in Lua numbers (doubles); the cap keeps the deadline an exact integer
	// far below 2^53, where a larger value would overflow to a negative or
	// garbled deadline and time the job out at once.
	MaxTimeoutMs int64 = 10 * 365 * 24 * 60 * 60 * 1000
)

// PoisonError says why a submission entry cannot be run. The entry is
// dead-lettered with Reason; if JobID is non-empty that job ends FAILED.
type PoisonError struct {
	JobID  string // the entry's job id when it names a usable one, else ""
	Reason string // human-readable, stored in the record and the dead stream
	Err    error  // optional cause (ErrUnknownVersion for a bad "v")
}

func (e *PoisonError) Error() string {
	if e.JobID == "" {
		return "streams: poison submission: " + e.Reason
	}
	return fmt.Sprintf("streams: poison submission for job %q: %s", e.JobID, e.Reason)
}

// Unwrap returns the cause, if any.
func (e *PoisonError) Unwrap() error { return e.Err }

// DecodeSubmission validates and decodes a submission entry. maxInput caps
// the input size in bytes (0 or less = no cap). Every refusal is a
// *PoisonError; its JobID is set when the entry carries a valid job id, so
// the caller can fail that job rather than only dead-letter the entry.
// Unknown fields are ignored (forward compatibility).
func DecodeSubmission(msg redis.XMessage, maxInput int) (Submission, error) {
	str := func(name string) (string, bool) {
		v, ok := msg.Values[name]
		if !ok {
			return "", false
		}
		s, ok := v.(string)
		return s, ok
	}
	poison := func(jobID, format string, args ...any) error {
		return &PoisonError{JobID: jobID, Reason: fmt.Sprintf(format, args...)}
	}

	id, ok := str(FieldJobID)
	if !ok || id == "" {
		return Submission{}, poison("", "missing %s", FieldJobID)
	}
	if reason := checkToken(id, MaxJobIDLen); reason != "" {
		return Submission{}, poison("", "%s %s", FieldJobID, reason)
	}
	sub := Submission{JobID: id}

	if len(msg.Values) > MaxSubmissionFields {
		return Submission{}, poison(id, "entry has %d fields, over the limit of %d (MaxSubmissionFields)",
			len(msg.Values), MaxSubmissionFields)
	}

	if v, present := msg.Values[FieldVersion]; present {
		if s, _ := v.(string); s != WireVersion {
			return Submission{}, &PoisonError{JobID: id,
				Reason: fmt.Sprintf("unknown wire version %s=%q (want %q)", FieldVersion, clip(fmt.Sprint(v), 32), WireVersion),
				Err:    ErrUnknownVersion}
		}
	}

	input, ok := str(FieldInput)
	if !ok {
		return Submission{}, poison(id, "missing %s", FieldInput)
	}
	if maxInput > 0 && len(input) > maxInput {
		return Submission{}, poison(id, "%s is %d bytes, over the limit of %d", FieldInput, len(input), maxInput)
	}
	if !json.Valid([]byte(input)) {
		return Submission{}, poison(id, "%s is not valid JSON", FieldInput)
	}
	sub.Input = []byte(input)

	if h, present := msg.Values[FieldInputHash]; present {
		hs, _ := h.(string)
		if hs != "" {
			if reason := checkToken(hs, MaxInputHashLen); reason != "" {
				return Submission{}, poison(id, "%s %s", FieldInputHash, reason)
			}
		}
		sub.InputHash = hs
	}

	if t, present := msg.Values[FieldTimeoutMs]; present {
		ts, _ := t.(string)
		n, err := parseNonNegative(ts)
		if err != nil {
			return Submission{}, poison(id, "%s %q is not a non-negative integer", FieldTimeoutMs, clip(ts, 32))
		}
		if n > MaxTimeoutMs {
			return Submission{}, poison(id, "%s %d is over the maximum of %d (10 years)", FieldTimeoutMs, n, MaxTimeoutMs)
		}
		sub.TimeoutMs = n
	}
	return sub, nil
}

// SubmissionValues returns the flat field/value list a producer XADDs for
// sub (wire format v1). Empty optional fields are left out.
func SubmissionValues(sub Submission) []any {
	vals := []any{FieldJobID, sub.JobID, FieldInput, string(sub.Input)}
	if sub.InputHash != "" {
		vals = append(vals, FieldInputHash, sub.InputHash)
	}
	if sub.TimeoutMs > 0 {
		vals = append(vals, FieldTimeoutMs, strconv.FormatInt(sub.TimeoutMs, 10))
	}
	return append(vals, FieldVersion, WireVersion)
}

// ValidateSubmission applies the checks of DecodeSubmission to a Go value,
// so Submit refuses what a worker would dead-letter.
func ValidateSubmission(sub Submission, maxInput int) error {
	vals := SubmissionValues(sub)
	m := make(map[string]any, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		m[vals[i].(string)] = vals[i+1]
	}
	if sub.TimeoutMs < 0 {
		return &PoisonError{JobID: sub.JobID, Reason: fmt.Sprintf("%s %d is negative", FieldTimeoutMs, sub.TimeoutMs)}
	}
	_, err := DecodeSubmission(redis.XMessage{Values: m}, maxInput)
	return err
}

// checkToken returns why s is not a usable identifier ("" if it is): it
// becomes part of a key name, an event field and log lines, so it must be
// short, valid UTF-8 and free of whitespace and control characters.
func checkToken(s string, maxLen int) string {
	if len(s) > maxLen {
		return fmt.Sprintf("is %d bytes, at most %d allowed", len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return "contains whitespace or control characters"
		}
	}
	return ""
}

var errNotNonNegative = errors.New("not a non-negative integer")

// parseNonNegative accepts only ASCII digits (no sign, no spaces).
func parseNonNegative(s string) (int64, error) {
	if s == "" {
		return 0, errNotNonNegative
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errNotNonNegative
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errNotNonNegative
	}
	return n, nil
}

// clip shortens s for inclusion in a reason, so a hostile entry cannot
// blow up records and logs.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
