// Package runpodsim simulates a Runpod Serverless queue-based endpoint
// (https://api.runpod.ai/v2/{endpointId}/...) on loopback, for tests and for
// the worker's --dev mode. It follows docs/runpod-api.md (in this repository); its §16
// ("Simulator must") is the checklist this package is tested against.
//
// # What it imitates
//
//   - All nine operations with Runpod's methods: POST /run and /runsync;
//     GET or POST /status/{id}, /status-sync/{id} and /stream/{id}; POST
//     /cancel/{id}, /retry/{id} and /purge-queue (empty or {} bodies); GET
//     /health. Success is HTTP 200 with JSON.
//   - Auth with "Authorization: Bearer <key>" or the bare key (401 otherwise),
//     404 for another endpoint id or an unknown/deleted job, 400 for a body
//     without input or with policy values out of range, 413 (or 400) for
//     bodies over 10 MB (/run) or 20 MB (/runsync). Error bodies are
//     {"error": "..."} unless Config.ErrorBodyFunc says otherwise.
//   - A GPU queue: Config.GPUWorkers concurrent executions; later jobs wait
//     IN_QUEUE in FIFO order. delayTime (queue wait, including cold starts),
//     executionTime and a 14-character workerId are reported as Runpod does;
//     fields that do not apply to a state are absent.
//   - Ids shaped like Runpod's ("<uuid4>-u1", "sync-<uuid4>-u1"), never reused;
//     identical submissions are two jobs; unknown body keys and any
//     Idempotency-Key header are ignored.
//   - Timers: retention after completion (30 min for /run, 1 min for /runsync)
//     then 404; policy.ttl (default 24 h) deletes a job in any state, even
//     mid-run; policy.executionTimeout (default 600 s) ends a job TIMED_OUT
//     (or FAILED, Config.ExecutionTimeoutOutcome); ?ttl on /status resets the
//     remaining lifespan from now.
//   - Long polls: /runsync (?wait, default 90 s, 1–300 s, clamped) returns the
//     terminal job or {id, status}; the job keeps running if the client leaves.
//     /status-sync (default 90 s) returns the job object when terminal or at
//     the end of the wait. /stream (default 10 s hold) drains: every chunk is
//     delivered once, the "stream" array is always present, and the call after
//     the end returns the terminal status with [].
//   - /cancel for queued jobs (immediate), running jobs (the fake worker is
//     stopped; its late results are dropped) and, configurably, a race that
//     completion wins. /retry re-queues FAILED or TIMED_OUT jobs under the same
//     id. /purge-queue removes queued jobs only. /health reports five job and
//     six worker counters consistent with the queue.
//   - Rate limits per operation in fixed 10-second windows with Runpod's
//     numbers (RateLimitsDefault; /status-sync shares /status's bucket),
//     concurrency caps, an optional per-worker dynamic bonus and an optional
//     queue-size rule, answering 429 with an optional Retry-After.
//   - Webhooks: the job object is POSTed to the submitted webhook URL when the
//     job ends COMPLETED or FAILED (CANCELLED and TIMED_OUT optional); anything
//     but 200 is a failure, retried twice 10 s apart; every attempt is recorded.
//     Faults: WebhookDropProb never sends a job's webhook, WebhookDupProb
//     delivers a successful one twice.
//
// # Job behaviour
//
// Like runpod-workers/mock-worker, the input drives the fake handler:
//
//	mock_delay             execution time in ms (default Config.MockDelay, 100 ms)
//	mock_return            the output (default: the input echoed)
//	mock_error             a string (or true): the job ends FAILED with the
//	                       Python worker's JSON-string error; an object: the
//	                       handler returned {"error": {...}}, so the job's
//	                       error is that object
//	mock_progress          list of progress outputs, shown as output while
//	                       IN_PROGRESS, spread evenly over the run
//	mock_stream            list of outputs yielded as /stream chunks {"output": x}
//	mock_aggregate_stream  true: the final output is the list of yielded
//	                       values; otherwise a generator job's output is []
//	mock_crash             true/1/"always": the worker dies at the end of every
//	                       execution; Runpod re-runs the job Config.CrashRetries
//	                       times (retries++), then it ends FAILED. "once": only
//	                       the first execution crashes, the re-run completes.
//	mock_echo_key          true: every "$RUNPOD_API_KEY" in the input becomes
//	                       the API key, as a handler printing its environment
//	                       would leak it (tests of redaction)
//
// A malformed mock_* value makes the job fail like a handler raising
// ValueError. A huge mock_delay gives a job that never finishes in test time.
//
// # Time
//
// Every Runpod-side duration (mock execution, cold start, retention, TTL,
// execution timeout, long-poll holds, rate-limit windows, webhook retry
// spacing) is simulated time on a Clock. By default the clock is the wall
// clock sped up by Config.TimeScale (10 makes a 30-minute retention last 3
// real minutes and a 100 ms mock_delay last 10 ms); reported delayTime and
// executionTime are simulated milliseconds. Config.Clock = NewManualClock(t)
// stops time entirely: tests call Advance and observe exact sequences. With
// Config.Seed set, job ids, worker ids and every probabilistic draw repeat
// exactly. Fault Latency/Jitter and hung requests are wall-clock time: they
// exist to exercise the client's real timeouts.
//
// # Faults
//
// SetFaults(op, Faults) (or POST /_sim/faults, or the command's --fault flag,
// syntax in ParseFaultSpec) injects per-operation HTTP statuses (429 with or
// without Retry-After, 500, 502, 503, 504 ...) by probability or scripted
// sequence, latency and jitter, hung requests, dropped connections and
// truncated JSON bodies. Faults.After applies a fault after the operation took
// effect: /run creates the job and the client still sees an error, the case a
// client must never resolve by resubmitting.
//
// # Introspection
//
// Stats/GET /_sim/stats (requests per operation, faults, rate limits, jobs
// created/completed/failed/cancelled, webhooks) and Jobs/GET /_sim/jobs
// (every job ever created, deleted ones included, with input, status, times
// and execution counts) let a test prove, for example, that no job was
// submitted twice. GET /_sim/webhooks lists webhook attempts. The /_sim/
// routes need no API key: the simulator serves loopback only by intent.
//
// # Not imitated
//
// The worker-side protocol (job-take, job-done, ping; docs/runpod-api.md §14), the
// management APIs, /openai/*, /requests, /metrics, /batch, s3Config handling,
// webhookV2 and policy.lowPriority (accepted and ignored), per-key scopes
// (one key has full access), chunk splitting at 1 MB, and Runpod's autoscaler
// (the worker count is fixed; ColdStart models initialisation delay only).
// Behaviours docs/runpod-api.md marks unconfirmed are configurable where they
// matter to a client and otherwise take the most plausible default, stated
// on the Config field.
package runpodsim
