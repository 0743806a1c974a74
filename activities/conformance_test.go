package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Conformance tests pin the client's parsing to the response shapes in
// docs/runpod-api.md (the reference for the real service), independent of our
// simulator. Each fixture is served over HTTP and parsed by the real path.

// The Python worker's error for an uncaught exception: a JSON-encoded
// string (docs/runpod-api.md §4).
const pythonWorkerError = `{"error_type": "<class 'ValueError'>", "error_message": "bad prompt", "error_traceback": "Traceback (most recent call last):\n  File \"handler.py\", line 3\nValueError: bad prompt\n", "hostname": "abcdefghijklmn-64410a1b", "worker_id": "abcdefghijklmn", "runpod_version": "1.7.7"}`

func TestConformanceJobObjects(t *testing.T) {
	t.Parallel()
	pyErr, err := json.Marshal(pythonWorkerError)
	require.NoError(t, err)

	tests := []struct {
		name     string
		body     string
		want     workflow.RunpodJob
		terminal bool
	}{
		{
			// §3 run / §4: queued jobs are just {id, status}.
			name: "IN_QUEUE",
			body: `{"id":"6de99fd1-4474-4565-9243-694ffeb65218-u1","status":"IN_QUEUE"}`,
			want: workflow.RunpodJob{ID: "6de99fd1-4474-4565-9243-694ffeb65218-u1", Status: workflow.RunpodInQueue},
		},
		{
			// §4: delayTime and workerId once picked up, progress output.
			name: "IN_PROGRESS with progress",
			body: `{"id":"j-u1","status":"IN_PROGRESS","delayTime":2140,"workerId":"abcdefghijklmn","output":{"progress":0.4}}`,
			want: workflow.RunpodJob{ID: "j-u1", Status: workflow.RunpodInProgress, DelayTime: 2140,
				WorkerID: "abcdefghijklmn", Output: json.RawMessage(`{"progress":0.4}`)},
		},
		{
			// §3.2 terminal example.
			name: "COMPLETED",
			body: `{"id":"sync-5cd5d7c1-3d46-4b36-a3e4-c1b2f0a7c1a3-u2","status":"COMPLETED","delayTime":12,"executionTime":900,"workerId":"abcdefghijklmn","output":{"image_url":"https://x.test/i.png","seed":42}}`,
			want: workflow.RunpodJob{ID: "sync-5cd5d7c1-3d46-4b36-a3e4-c1b2f0a7c1a3-u2", Status: workflow.RunpodCompleted,
				DelayTime: 12, ExecutionTime: 900, WorkerID: "abcdefghijklmn",
				Output: json.RawMessage(`{"image_url":"https://x.test/i.png","seed":42}`)},
			terminal: true,
		},
		{
			name: "COMPLETED with scalar output",
			body: `{"id":"j-u1","status":"COMPLETED","delayTime":1,"executionTime":2,"workerId":"w","output":"done"}`,
			want: workflow.RunpodJob{ID: "j-u1", Status: workflow.RunpodCompleted, DelayTime: 1, ExecutionTime: 2,
				WorkerID: "w", Output: json.RawMessage(`"done"`)},
			terminal: true,
		},
		{
			// §4: FAILED with the Python worker's JSON-string error, no output.
			name: "FAILED with python worker error",
			body: `{"id":"j-u1","status":"FAILED","delayTime":5,"executionTime":30,"workerId":"abcdefghijklmn","error":` + string(pyErr) + `}`,
			want: workflow.RunpodJob{ID: "j-u1", Status: workflow.RunpodFailed, DelayTime: 5, ExecutionTime: 30,
				WorkerID: "abcdefghijklmn", Error: "ValueError: bad prompt", ErrorJSON: compactJSON(pythonWorkerError)},
			terminal: true,
		},
		{
			// §4: a handler returning {"error": ..., rest...}: error plus output.
			name: "FAILED with handler error and output",
			body: `{"id":"j-u1","status":"FAILED","executionTime":3,"error":"out of memory","output":{"partial":true}}`,
			want: workflow.RunpodJob{ID: "j-u1", Status: workflow.RunpodFailed, ExecutionTime: 3,
				Error: "out of memory", Output: json.RawMessage(`{"partial":true}`)},
			terminal: true,
		},
		{
			// Not documented (a handler returning {"error": {...}}): the
			// object is kept as JSON; with no message key its text too.
			name: "FAILED with object error",
			body: `{"id":"j-u1","status":"FAILED","error":{"code":7,"msg":"x"}}`,
			want: workflow.RunpodJob{ID: "j-u1", Status: workflow.RunpodFailed, Error: `{"code":7,"msg":"x"}`,
				ErrorJSON: json.RawMessage(`{"code":7,"msg":"x"}`)},
			terminal: true,
		},
		{
			// §3.5 cancel answer.
			name:     "CANCELLED",
			body:     `{"id":"j-u1","status":"CANCELLED"}`,
			want:     workflow.RunpodJob{ID: "j-u1", Status: workflow.RunpodCancelled},
			terminal: true,
		},
		{
			name: "TIMED_OUT",
			body: `{"id":"j-u1","status":"TIMED_OUT","delayTime":100,"executionTime":600000,"workerId":"w","error":"job timed out"}`,
			want: workflow.RunpodJob{ID: "j-u1", Status: workflow.RunpodTimedOut, DelayTime: 100, ExecutionTime: 600000,
				WorkerID: "w", Error: "job timed out"},
			terminal: true,
		},
		{
			// §4 retries (Go SDK type) and §13 re-execution.
			name: "re-run job with retries",
			body: `{"id":"j-u1","status":"IN_QUEUE","retries":2}`,
			want: workflow.RunpodJob{ID: "j-u1", Status: workflow.RunpodInQueue, Retries: 2},
		},
		{
			// §5: the API returns IN_PROGRESS, but docs list RUNNING; any
			// unknown status is kept verbatim and is non-terminal.
			name: "unknown status",
			body: `{"id":"j-u1","status":"RUNNING"}`,
			want: workflow.RunpodJob{ID: "j-u1", Status: "RUNNING"},
		},
		{
			// §4: legacy echoed input and unknown keys are ignored; nulls
			// and fractional durations are tolerated.
			name:     "extra keys, nulls, fractions",
			body:     `{"id":"j-u1","status":"COMPLETED","input":{"a":1},"webhookV2":null,"delayTime":12.7,"executionTime":null,"output":null,"error":null}`,
			want:     workflow.RunpodJob{ID: "j-u1", Status: workflow.RunpodCompleted, DelayTime: 12},
			terminal: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, answer(200, tt.body), nil)
			job, err := b.client.Status(context.Background(), "j-u1")
			require.NoError(t, err)
			require.Equal(t, tt.want, job)
			require.Equal(t, tt.terminal, job.Status.Terminal())
		})
	}
}

func TestConformanceHealth(t *testing.T) {
	t.Parallel()
	// §11, with distinct numbers so a swapped field shows.
	b := setup(t, answer(200, `{"jobs":   {"completed":11,"failed":12,"inProgress":13,"inQueue":14,"retried":15},
 "workers":{"idle":1,"initializing":2,"ready":3,"running":4,"throttled":5,"unhealthy":6}}`), nil)
	h, err := b.client.Health(context.Background())
	require.NoError(t, err)
	require.Equal(t, Health{
		Jobs:    HealthJobs{Completed: 11, Failed: 12, InProgress: 13, InQueue: 14, Retried: 15},
		Workers: HealthWorkers{Idle: 1, Initializing: 2, Ready: 3, Running: 4, Throttled: 5, Unhealthy: 6},
	}, h)

	// The docs' short form (only idle/running) parses with zeros elsewhere.
	b = setup(t, answer(200, `{"jobs":{"completed":1,"failed":0,"inProgress":0,"inQueue":2,"retried":0},"workers":{"idle":1,"running":0}}`), nil)
	h, err = b.client.Health(context.Background())
	require.NoError(t, err)
	require.Equal(t, Health{Jobs: HealthJobs{Completed: 1, InQueue: 2}, Workers: HealthWorkers{Idle: 1}}, h)
}

func TestConformanceStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want StreamResult
	}{
		{
			// §10: final call after draining (PY tests).
			name: "completed and drained",
			body: `{"status":"COMPLETED","stream":[]}`,
			want: StreamResult{Status: workflow.RunpodCompleted, Stream: []StreamChunk{}},
		},
		{
			// §10: chunks with extra keys (vLLM metrics), id and delayTime.
			name: "chunks",
			body: `{"id":"j-u1","status":"IN_PROGRESS","delayTime":40,"stream":[{"output":"Hello"},{"output":{"text":" world"},"metrics":{"tokens":2}}]}`,
			want: StreamResult{ID: "j-u1", Status: workflow.RunpodInProgress, DelayTime: 40, Stream: []StreamChunk{
				{Output: json.RawMessage(`"Hello"`), Raw: json.RawMessage(`{"output":"Hello"}`)},
				{Output: json.RawMessage(`{"text":" world"}`), Raw: json.RawMessage(`{"output":{"text":" world"},"metrics":{"tokens":2}}`)},
			}},
		},
		{
			name: "failed generator",
			body: `{"status":"FAILED","stream":[],"error":"handler: boom \ntraceback: ..."}`,
			want: StreamResult{Status: workflow.RunpodFailed, Stream: []StreamChunk{}, Error: "handler: boom \ntraceback: ..."},
		},
		{
			// A missing stream key still yields a non-nil, empty slice.
			name: "no stream key",
			body: `{"status":"IN_QUEUE"}`,
			want: StreamResult{Status: workflow.RunpodInQueue, Stream: []StreamChunk{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, answer(200, tt.body), nil)
			res, err := b.client.Stream(context.Background(), "j-u1")
			require.NoError(t, err)
			require.Equal(t, tt.want, res)
		})
	}
}

func TestConformanceOtherBodies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// §3 purge-queue.
	b := setup(t, answer(200, `{"removed":17,"status":"completed"}`), nil)
	p, err := b.client.PurgeQueue(ctx)
	require.NoError(t, err)
	require.Equal(t, PurgeResult{Removed: 17, Status: "completed"}, p)

	// §3 run and retry: {id, status: IN_QUEUE}.
	b = setup(t, answer(200, `{"id":"6de99fd1-4474-4565-9243-694ffeb65218-u1","status":"IN_QUEUE"}`), nil)
	job, err := b.client.Run(ctx, workflow.RunRequest{Input: json.RawMessage(`{"prompt":"x"}`)})
	require.NoError(t, err)
	require.Equal(t, workflow.RunpodJob{ID: "6de99fd1-4474-4565-9243-694ffeb65218-u1", Status: workflow.RunpodInQueue}, job)
	job, err = b.client.Retry(ctx, "6de99fd1-4474-4565-9243-694ffeb65218-u1")
	require.NoError(t, err)
	require.Equal(t, workflow.RunpodInQueue, job.Status)

	// §3.5 cancel answer may carry delayTime/executionTime (JS/Go types).
	b = setup(t, answer(200, `{"id":"j-u1","status":"CANCELLED","delayTime":3,"executionTime":4}`), nil)
	job, err = b.client.Cancel(ctx, "j-u1")
	require.NoError(t, err)
	require.Equal(t, workflow.RunpodJob{ID: "j-u1", Status: workflow.RunpodCancelled, DelayTime: 3, ExecutionTime: 4}, job)
}

// TestDecodeRejectsBadNumbers: a non-number duration is a bad response,
// not a silent zero.
func TestDecodeRejectsBadNumbers(t *testing.T) {
	t.Parallel()
	_, err := decodeJob([]byte(`{"id":"j","status":"COMPLETED","delayTime":"soon"}`))
	require.Error(t, err)
	b := setup(t, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, `{"id":"j","status":"COMPLETED","executionTime":[1]}`)
	}, func(c *Config) { c.MaxAttempts = 1 })
	_, err = b.client.Status(context.Background(), "j")
	require.ErrorIs(t, err, ErrBadResponse)
}

// compactJSON is s compacted: how the client keeps an error object.
func compactJSON(s string) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		panic(err)
	}
	return b.Bytes()
}
