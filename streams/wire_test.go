package streams

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func entry(kv ...any) redis.XMessage {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return redis.XMessage{ID: "1-0", Values: m}
}

func TestDecodeSubmission(t *testing.T) {
	t.Parallel()
	ok := []struct {
		name string
		msg  redis.XMessage
		want Submission
	}{
		{"minimal", entry("job_id", "j1", "input", `{"a":1}`), Submission{JobID: "j1", Input: []byte(`{"a":1}`)}},
		{"all fields", entry("job_id", "j1", "input", `[1]`, "input_hash", "h", "timeout_ms", "500", "v", "1"),
			Submission{JobID: "j1", Input: []byte(`[1]`), InputHash: "h", TimeoutMs: 500}},
		{"unknown fields ignored", entry("job_id", "j1", "input", `1`, "extra", "x"), Submission{JobID: "j1", Input: []byte(`1`)}},
		{"zero timeout", entry("job_id", "j1", "input", `1`, "timeout_ms", "0"), Submission{JobID: "j1", Input: []byte(`1`)}},
		{"max timeout", entry("job_id", "j1", "input", `1`, "timeout_ms", "315360000000"), Submission{JobID: "j1", Input: []byte(`1`), TimeoutMs: MaxTimeoutMs}},
		{"id at limit", entry("job_id", strings.Repeat("a", 256), "input", `1`), Submission{JobID: strings.Repeat("a", 256), Input: []byte(`1`)}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			have, err := DecodeSubmission(tc.msg, 100)
			require.NoError(t, err)
			require.Equal(t, tc.want, have)
		})
	}

	bad := []struct {
		name    string
		msg     redis.XMessage
		jobID   string // the PoisonError names it
		reason  string // substring of the reason
		version bool   // wraps ErrUnknownVersion
	}{
		{"no job id", entry("input", `1`), "", "missing job_id", false},
		{"empty job id", entry("job_id", "", "input", `1`), "", "missing job_id", false},
		{"long job id", entry("job_id", strings.Repeat("a", 257), "input", `1`), "", "257 bytes", false},
		{"space in id", entry("job_id", "a b", "input", `1`), "", "whitespace", false},
		{"control in id", entry("job_id", "a\x00b", "input", `1`), "", "control", false},
		{"bad utf8 id", entry("job_id", "a\xffb", "input", `1`), "", "UTF-8", false},
		{"no input", entry("job_id", "j"), "j", "missing input", false},
		{"bad json", entry("job_id", "j", "input", `{"a":`), "j", "not valid JSON", false},
		{"too big", entry("job_id", "j", "input", `"`+strings.Repeat("x", 100)+`"`), "j", "over the limit of 100", false},
		{"version 2", entry("job_id", "j", "input", `1`, "v", "2"), "j", "unknown wire version", true},
		{"version empty", entry("job_id", "j", "input", `1`, "v", ""), "j", "unknown wire version", true},
		{"negative timeout", entry("job_id", "j", "input", `1`, "timeout_ms", "-1"), "j", "timeout_ms", false},
		{"float timeout", entry("job_id", "j", "input", `1`, "timeout_ms", "1.5"), "j", "timeout_ms", false},
		{"huge timeout", entry("job_id", "j", "input", `1`, "timeout_ms", "99999999999999999999"), "j", "timeout_ms", false},
		{"bad hash", entry("job_id", "j", "input", `1`, "input_hash", "a b"), "j", "input_hash", false},
		{"timeout over max", entry("job_id", "j", "input", `1`, "timeout_ms", "315360000001"), "j", "timeout_ms 315360000001 is over the maximum", false},
		{"timeout int64 max", entry("job_id", "j", "input", `1`, "timeout_ms", "9223372036854775807"), "j", "timeout_ms", false},
		{"timeout 2^53+1", entry("job_id", "j", "input", `1`, "timeout_ms", "9007199254740993"), "j", "timeout_ms", false},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeSubmission(tc.msg, 100)
			var pe *PoisonError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, tc.jobID, pe.JobID)
			require.Contains(t, pe.Reason, tc.reason)
			require.Equal(t, tc.version, errors.Is(err, ErrUnknownVersion))
		})
	}
}

func TestSubmissionValuesRoundTrip(t *testing.T) {
	t.Parallel()
	s := Submission{JobID: "j", Input: []byte(`{"x":[1,2]}`), InputHash: "h", TimeoutMs: 9}
	vals := SubmissionValues(s)
	have, err := DecodeSubmission(entry(vals...), 0)
	require.NoError(t, err)
	require.Equal(t, s, have)
}

// FuzzDecodeSubmission: no panic on any entry, and anything accepted obeys
// the rules and survives a round trip through SubmissionValues.
func FuzzDecodeSubmission(f *testing.F) {
	f.Add("j1", `{"a":1}`, "", "", "1", true)
	f.Add("", `{}`, "h", "10", "", false)
	f.Add("a b", `nope`, "x y", "-1", "2", true)
	f.Add(strings.Repeat("z", 300), `"`+strings.Repeat("q", 300)+`"`, "h", "007", "1", true)
	f.Add("\x00", `[]`, "\xff", "1e3", "1", false)
	f.Fuzz(func(t *testing.T, id, input, hash, timeout, v string, withV bool) {
		kv := []any{"job_id", id, "input", input}
		if hash != "" {
			kv = append(kv, "input_hash", hash)
		}
		if timeout != "" {
			kv = append(kv, "timeout_ms", timeout)
		}
		if withV {
			kv = append(kv, "v", v)
		}
		s, err := DecodeSubmission(entry(kv...), 256)
		if err != nil {
			var pe *PoisonError
			require.ErrorAs(t, err, &pe)
			require.NotEmpty(t, pe.Reason)
			require.LessOrEqual(t, len(pe.Reason), 200, "reasons stay short")
			return
		}
		require.NotEmpty(t, s.JobID)
		require.LessOrEqual(t, len(s.Input), 256)
		require.GreaterOrEqual(t, s.TimeoutMs, int64(0))
		again, err := DecodeSubmission(entry(SubmissionValues(s)...), 256)
		require.NoError(t, err)
		require.Equal(t, s, again)
	})
}

// TestTimeoutOverMax: a timeout_ms over MaxTimeoutMs is refused by
// ValidateSubmission and Submit (nothing written) and poisons a raw entry
// with a reason naming the field, instead of overflowing the deadline.
func TestTimeoutOverMax(t *testing.T) {
	t.Parallel()
	require.EqualValues(t, 315_360_000_000, MaxTimeoutMs)
	err := ValidateSubmission(Submission{JobID: "j", Input: []byte(`1`), TimeoutMs: MaxTimeoutMs + 1}, 0)
	var pe *PoisonError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "j", pe.JobID)
	require.Contains(t, pe.Reason, "timeout_ms")
	require.NoError(t, ValidateSubmission(Submission{JobID: "j", Input: []byte(`1`), TimeoutMs: MaxTimeoutMs}, 0))

	eachBackend(t, func(t *testing.T, b *testBundle) {
		_, err := b.st.Submit(b.ctx, Submission{JobID: "s", Input: []byte(`1`), TimeoutMs: math.MaxInt64}, SubmitOpts{Now: b.now})
		require.ErrorAs(t, err, &pe)
		require.Zero(t, b.xlen(t, b.keys.Submissions()), "Submit writes nothing")

		b.rawAdd(t, "job_id", "big", "input", `1`, "timeout_ms", "9223372036854775807")
		_, res := b.readAdmit(t, "w1", 10, AdmitOpts{ResultTTL: time.Hour})
		require.Equal(t, Poisoned, res[0].Status)
		rec := b.get(t, "big")
		require.Equal(t, "FAILED", rec.State)
		require.Contains(t, rec.Error, "timeout_ms")
		require.Contains(t, rec.Error, "over the maximum")
	})
}
