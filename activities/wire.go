package activities

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

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
	if err := json.Unmarshal(body, &w); err != nil {
		return workflow.RunpodJob{}, fmt.Errorf("decode job object: %w", err)
	}
	return w.job(), nil
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
