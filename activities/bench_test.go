package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Benchmarks of the client's hot paths: one /run and one /status per job,
// as the worker makes them. Run with
//
//	go test -run '^$' -bench . -benchmem ./activities/
//
// (add -cpuprofile / -memprofile to see where the time goes). The figures
// include the simulator serving the requests in the same process.

// completedBody is a /status answer of a finished job, as the simulator
// and Runpod send it.
var completedBody = []byte(`{"delayTime":12,"executionTime":1043,"id":"sync-8c4c7a4e-4f8e-4bd5-9c51-2a5b0f6e2f11-u1",` +
	`"output":{"job":"bench-1234","text":"a short answer"},"status":"COMPLETED","workerId":"abc123xyz"}`)

// BenchmarkClientRunStatus: a /run and a /status of the job over loopback
// HTTP against the simulator, from parallel goroutines (as executors).
func BenchmarkClientRunStatus(b *testing.B) {
	srv, err := runpodsim.Serve("127.0.0.1:0", runpodsim.Config{
		EndpointID: simEndpoint, APIKey: testKey, GPUWorkers: 100000, MockDelay: time.Millisecond,
		DisableRateLimits: true, Logger: hclog.NewNullLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	c, err := New(Config{APIKey: testKey, EndpointID: simEndpoint, BaseURL: srv.URL,
		Limiter: NewLocalLimiter(map[string]RateLimit{})})
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseIdleConnections()
	ctx := context.Background()
	input := json.RawMessage(`{"job":"bench-1234"}`)
	policy := &workflow.RunPolicy{TTLMs: 86_460_000}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			j, err := c.Run(ctx, workflow.RunRequest{Input: input, Policy: policy})
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := c.Status(ctx, j.ID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDecodeJob: parsing a finished job's /status answer.
func BenchmarkDecodeJob(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeJob(completedBody); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedactJSON: the redaction every answer passes (no secret in
// it: the common case).
func BenchmarkRedactJSON(b *testing.B) {
	r := newRedactor(testKey, "redis-password-0123")
	b.ReportAllocs()
	for b.Loop() {
		r.JSON(completedBody)
	}
}

// BenchmarkEncodeRun: the /run request body.
func BenchmarkEncodeRun(b *testing.B) {
	req := workflow.RunRequest{Input: json.RawMessage(`{"job":"bench-1234","prompt":"hello"}`),
		Webhook: "https://hooks.example.com/runpod/webhook?job=j1&entry=1-0&attempt=1&token=abc",
		Policy:  &workflow.RunPolicy{TTLMs: 86_460_000}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeRun(req); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEncodeRunMatchesMarshal: the hand-written /run body is the JSON
// json.Marshal wrote (same fields, omissions and values), for every shape
// of request.
func TestEncodeRunMatchesMarshal(t *testing.T) {
	t.Parallel()
	for _, req := range []workflow.RunRequest{
		{Input: json.RawMessage(`{"a":1}`)},
		{Input: json.RawMessage(`{"prompt": "two words", "n": [1, 2]}`)},
		{Input: json.RawMessage(`"just a string"`), Webhook: "https://h.example/w?job=j&token=t"},
		{Input: json.RawMessage(`{}`), Webhook: "https://h.example/w?a=<b>&c=\"d\"\\é\x01"},
		{Input: json.RawMessage(`[]`), Policy: &workflow.RunPolicy{}},
		{Input: json.RawMessage(`{}`), Policy: &workflow.RunPolicy{TTLMs: 60000}},
		{Input: json.RawMessage(`{}`), Policy: &workflow.RunPolicy{ExecutionTimeoutMs: 5, LowPriority: true}},
		{Input: json.RawMessage(`{}`), Webhook: "w", Policy: &workflow.RunPolicy{ExecutionTimeoutMs: 5, TTLMs: -7, LowPriority: true}},
	} {
		got, err := encodeRun(req)
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		want, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s is not JSON: %v", got, err)
		}
		_ = json.Unmarshal(want, &w)
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		if string(gj) != string(wj) {
			t.Errorf("encodeRun = %s, json.Marshal = %s", got, want)
		}
	}
	for _, bad := range []string{"", "{", `{"a":}`, "nul"} {
		if _, err := encodeRun(workflow.RunRequest{Input: json.RawMessage(bad)}); err == nil {
			t.Errorf("input %q: no error", bad)
		}
	}
}

// FuzzDecodeJob: whenever the reflection-free scanner accepts a body,
// json.Unmarshal accepts it too and decodes the very same job.
func FuzzDecodeJob(f *testing.F) {
	for _, s := range []string{
		string(completedBody),
		`{"id":"a","status":"IN_QUEUE"}`,
		` { "id" : "a" , "status" : null , "output" : [ 1, {"x": "}"} ] , "retries": -3 } `,
		`{"id":"a","ID":"b"}`, `{"Status":"X"}`, `{"delayTime":1.5}`, `{"delayTime":"1"}`,
		`{"id":"a\u0041"}`, `{"error":{"message":"boom"},"output":null}`, `{"id":null,"id":"z"}`,
		`[]`, `null`, `{}`, `{"executionTime":12345678901234567890}`, `{"ſtatus":"x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast wireJob
		if !scanJob(body, &fast) {
			return
		}
		var slow wireJob
		if err := json.Unmarshal(body, &slow); err != nil {
			t.Fatalf("scanJob accepted %q, json.Unmarshal: %v", body, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: scanJob %+v, json.Unmarshal %+v", body, fast, slow)
		}
	})
}

// FuzzRedactJSON: whatever Runpod sends, no secret survives redaction,
// neither verbatim nor in any string the answer decodes to (escaped, or
// in JSON text inside a string), and valid JSON stays valid.
func FuzzRedactJSON(f *testing.F) {
	const secret = "s3cr3tKEY"
	for _, s := range []string{
		string(completedBody), `{"error":"s3cr3tKEY"}`, `{"output":"s3\u0063r3tKEY"}`,
		`{"error":"{\"m\":\"s3\\u0063r3tKEY\"}"}`, `["a\nb", "s3cr3tKEY"]`, `not json s3cr3tKEY`, `{"k": 1}`,
	} {
		f.Add([]byte(s))
	}
	r := newRedactor(secret)
	var walk func(t *testing.T, v any)
	walk = func(t *testing.T, v any) {
		switch v := v.(type) {
		case string:
			if strings.Contains(v, secret) {
				t.Fatalf("secret in decoded string %q", v)
			}
			var inner any
			if json.Unmarshal([]byte(v), &inner) == nil {
				walk(t, inner)
			}
		case []any:
			for _, x := range v {
				walk(t, x)
			}
		case map[string]any:
			for k, x := range v {
				walk(t, k)
				walk(t, x)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out := r.JSON(b)
		if bytes.Contains(out, []byte(secret)) {
			t.Fatalf("secret verbatim in %q", out)
		}
		if !json.Valid(b) {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("%q redacted to invalid JSON %q", b, out)
		}
		var v any
		if err := json.Unmarshal(out, &v); err == nil {
			walk(t, v)
		}
	})
}
