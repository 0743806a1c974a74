package activities

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// StreamResult is the body of /stream/{id} (docs/runpod-api.md §10). Each call
// returns only the chunks not handed out before; a terminal Status with an
// empty Stream means the stream is finished.
type StreamResult struct {
	// ID is the job id, when Runpod includes it.
	ID string
	// Status is the job's status at the time of the call.
	Status workflow.RunpodStatus
	// Stream holds the chunks yielded since the previous call (never nil
	// after a successful call).
	Stream []StreamChunk
	// DelayTime and ExecutionTime are in milliseconds, when present.
	DelayTime, ExecutionTime int64
	// Error is the job's error text, when present, and ErrorJSON the error
	// as a JSON value (see workflow.RunpodError).
	Error     string
	ErrorJSON json.RawMessage
}

// StreamChunk is one value a generator handler yielded.
type StreamChunk struct {
	// Output is the yielded value.
	Output json.RawMessage
	// Raw is the whole chunk object, which may carry keys besides output
	// (a vLLM worker adds "metrics").
	Raw json.RawMessage
}

// Health is the body of /health (docs/runpod-api.md §11).
type Health struct {
	Jobs    HealthJobs
	Workers HealthWorkers
}

// HealthJobs are the endpoint's job counters. InQueue and InProgress are
// live counts; the window behind the others is not documented.
type HealthJobs struct {
	Completed  int64 `json:"completed"`
	Failed     int64 `json:"failed"`
	InProgress int64 `json:"inProgress"`
	InQueue    int64 `json:"inQueue"`
	Retried    int64 `json:"retried"`
}

// HealthWorkers are the endpoint's worker counters by state.
type HealthWorkers struct {
	Idle         int64 `json:"idle"`
	Initializing int64 `json:"initializing"`
	Ready        int64 `json:"ready"`
	Running      int64 `json:"running"`
	Throttled    int64 `json:"throttled"`
	Unhealthy    int64 `json:"unhealthy"`
}

// PurgeResult is the body of /purge-queue.
type PurgeResult struct {
	// Removed is the number of queued jobs removed.
	Removed int64
	// Status is Runpod's status text ("completed").
	Status string
}

// encodeRun returns the /run body of req, {"input":...,"webhook":...,
// "policy":{...}} with json.Marshal's field names and omissions, written by
// hand: json.Marshal validated and compacted the input a second time and
// went through reflection on every /run. The input is sent as given, after
// one validation (its whitespace, if any, is kept).
func encodeRun(req workflow.RunRequest) ([]byte, error) {
	in := req.Input
	if len(in) == 0 {
		return nil, errors.New("input must be valid JSON")
	}
	buf := make([]byte, 0, len(in)+len(req.Webhook)+80)
	buf = append(buf, `{"input":`...)
	if !json.Valid(in) {
		return nil, errors.New("input must be valid JSON")
	}
	buf = append(buf, in...)
	if req.Webhook != "" {
		buf = append(buf, `,"webhook":`...)
		buf = appendJSONString(buf, req.Webhook)
	}
	if p := req.Policy; p != nil {
		buf = append(buf, `,"policy":{`...)
		n := len(buf)
		if p.ExecutionTimeoutMs != 0 {
			buf = append(buf, `"executionTimeout":`...)
			buf = strconv.AppendInt(buf, p.ExecutionTimeoutMs, 10)
		}
		if p.TTLMs != 0 {
			if len(buf) > n {
				buf = append(buf, ',')
			}
			buf = append(buf, `"ttl":`...)
			buf = strconv.AppendInt(buf, p.TTLMs, 10)
		}
		if p.LowPriority {
			if len(buf) > n {
				buf = append(buf, ',')
			}
			buf = append(buf, `"lowPriority":true`...)
		}
		buf = append(buf, '}')
	}
	return append(buf, '}'), nil
}

// appendJSONString appends s as a JSON string: plain printable ASCII as
// is, anything else through json.Marshal (escapes, invalid UTF-8).
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			enc, _ := json.Marshal(s)
			return append(buf, enc...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// wireJob is the job object as sent; it differs from workflow.RunpodJob in
// tolerating a non-string error and fractional durations.
type wireJob struct {
	ID            string                `json:"id"`
	Status        workflow.RunpodStatus `json:"status"`
	DelayTime     lenientInt            `json:"delayTime"`
	ExecutionTime lenientInt            `json:"executionTime"`
	WorkerID      string                `json:"workerId"`
	Output        json.RawMessage       `json:"output"`
	Error         json.RawMessage       `json:"error"`
	Retries       lenientInt            `json:"retries"`
}

func (w wireJob) job() workflow.RunpodJob {
	j := workflow.RunpodJob{
		ID:            w.ID,
		Status:        w.Status,
		DelayTime:     int64(w.DelayTime),
		ExecutionTime: int64(w.ExecutionTime),
		WorkerID:      w.WorkerID,
		Output:        nonNull(w.Output),
		Retries:       int(w.Retries),
	}
	j.Error, j.ErrorJSON = workflow.RunpodError(w.Error)
	return j
}

// decodeJob parses a job object.
func decodeJob(body []byte) (workflow.RunpodJob, error) {
	var w wireJob
	if scanJob(body, &w) {
		return w.job(), nil
	}
	w = wireJob{}
	if err := json.Unmarshal(body, &w); err != nil {
		return workflow.RunpodJob{}, fmt.Errorf("decode job object: %w", err)
	}
	return w.job(), nil
}

// scanJob is json.Unmarshal(body, w) without reflection for the shape
// Runpod sends (FuzzDecodeJob checks that both agree): a valid JSON object
// whose keys are the exact field names or unknown, with string fields
// that are plain strings or null and integer fields that are plain
// integers or null. Anything else (escapes in keys or strings, a key that
// differs from a field name only in case, a float, a type mismatch)
// answers false and leaves w to json.Unmarshal. output and error keep the
// exact bytes of their values, as a RawMessage does; they share body's
// memory, which the caller never reuses.
func scanJob(body []byte, w *wireJob) bool {
	if !json.Valid(body) {
		return false
	}
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return true
	}
	for i < len(body) {
		// A key: valid JSON puts a string here.
		end := stringEnd(body, i)
		key := body[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return false
		}
		i = skipSpace(body, end)
		i = skipSpace(body, i+1) // the colon
		vend := valueEnd(body, i)
		val := body[i:vend]
		switch string(key) {
		case "id":
			if !scanString(val, &w.ID) {
				return false
			}
		case "status":
			st := string(w.Status)
			if !scanString(val, &st) {
				return false
			}
			w.Status = workflow.RunpodStatus(st)
		case "workerId":
			if !scanString(val, &w.WorkerID) {
				return false
			}
		case "delayTime":
			if !scanInt(val, &w.DelayTime) {
				return false
			}
		case "executionTime":
			if !scanInt(val, &w.ExecutionTime) {
				return false
			}
		case "retries":
			if !scanInt(val, &w.Retries) {
				return false
			}
		case "output":
			w.Output = val
		case "error":
			w.Error = val
		default:
			// json.Unmarshal matches field names case-insensitively.
			for _, f := range jobFields {
				if strings.EqualFold(f, string(key)) {
					return false
				}
			}
		}
		i = skipSpace(body, vend)
		if i >= len(body) || body[i] == '}' {
			return true
		}
		i = skipSpace(body, i+1) // the comma
	}
	return true
}

// jobFields are wireJob's JSON names.
var jobFields = [...]string{"id", "status", "delayTime", "executionTime", "workerId", "output", "error", "retries"}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the index just past the JSON value starting at b[i] in
// valid JSON.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	}
	for i < len(b) && !strings.ContainsRune(",}] \t\n\r", rune(b[i])) {
		i++
	}
	return i
}

// scanString sets *dst from a plain JSON string (no escapes, valid UTF-8); null leaves
// it unchanged, as json.Unmarshal does. Anything else: false.
func scanString(val []byte, dst *string) bool {
	if string(val) == "null" {
		return true
	}
	if len(val) < 2 || val[0] != '"' || bytes.IndexByte(val, '\\') >= 0 || !utf8.Valid(val) {
		return false // escapes, or invalid UTF-8 (json.Unmarshal replaces it)
	}
	*dst = string(val[1 : len(val)-1])
	return true
}

// scanInt sets *dst from a JSON integer that fits an int64; null sets 0
// (lenientInt). Anything else (a float, a string, a huge number): false.
func scanInt(val []byte, dst *lenientInt) bool {
	if string(val) == "null" {
		*dst = 0
		return true
	}
	neg := len(val) > 0 && val[0] == '-'
	digits := val
	if neg {
		digits = val[1:]
	}
	if len(digits) == 0 || len(digits) > 18 {
		return false
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	*dst = lenientInt(n)
	return true
}

type wireStream struct {
	ID            string                `json:"id"`
	Status        workflow.RunpodStatus `json:"status"`
	Stream        []json.RawMessage     `json:"stream"`
	DelayTime     lenientInt            `json:"delayTime"`
	ExecutionTime lenientInt            `json:"executionTime"`
	Error         json.RawMessage       `json:"error"`
}

// decodeStream parses a /stream body. Chunks that are not objects are kept
// whole as Output (nothing documented produces them, but losing data would
// be worse than guessing).
func decodeStream(body []byte) (StreamResult, error) {
	var w wireStream
	if err := json.Unmarshal(body, &w); err != nil {
		return StreamResult{}, fmt.Errorf("decode stream body: %w", err)
	}
	r := StreamResult{
		ID:            w.ID,
		Status:        w.Status,
		Stream:        make([]StreamChunk, 0, len(w.Stream)),
		DelayTime:     int64(w.DelayTime),
		ExecutionTime: int64(w.ExecutionTime),
	}
	r.Error, r.ErrorJSON = workflow.RunpodError(w.Error)
	for _, raw := range w.Stream {
		c := StreamChunk{Raw: raw}
		var obj struct {
			Output json.RawMessage `json:"output"`
		}
		if json.Unmarshal(raw, &obj) == nil {
			c.Output = obj.Output
		} else {
			c.Output = raw
		}
		r.Stream = append(r.Stream, c)
	}
	return r, nil
}

// decodeHealth parses a /health body.
func decodeHealth(body []byte) (Health, error) {
	var w struct {
		Jobs    HealthJobs    `json:"jobs"`
		Workers HealthWorkers `json:"workers"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return Health{}, fmt.Errorf("decode health body: %w", err)
	}
	return Health(w), nil
}

// decodePurge parses a /purge-queue body.
func decodePurge(body []byte) (PurgeResult, error) {
	var w struct {
		Removed lenientInt `json:"removed"`
		Status  string     `json:"status"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return PurgeResult{}, fmt.Errorf("decode purge-queue body: %w", err)
	}
	return PurgeResult{Removed: int64(w.Removed), Status: w.Status}, nil
}

// lenientInt is an integer field that tolerates a JSON float (truncated) or
// null; Runpod documents integers, but a fractional duration must not make
// a whole status response unreadable.
type lenientInt int64

func (m *lenientInt) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*m = 0
		return nil
	}
	if i, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		*m = lenientInt(i)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f > math.MaxInt64 || f < math.MinInt64 {
		return fmt.Errorf("not a number: %.40q", b)
	}
	*m = lenientInt(f)
	return nil
}

// nonNull maps an absent or null JSON value to nil.
func nonNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	return raw
}
