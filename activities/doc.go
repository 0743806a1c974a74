// Package activities implements the workflow's Runpod activities: a client
// for the Runpod Serverless queue API (docs/runpod-api.md in this repository)
// that the worker uses as a workflow.Runpod.
//
// # Operations
//
// Client speaks /run, /status/{id}, /cancel/{id}, /stream/{id}, /health,
// /purge-queue and /retry/{id} under BaseURL/EndpointID, with
// "Authorization: Bearer <key>". Responses are parsed leniently where
// Runpod's documentation is vague: a job's "error" that is not a JSON string
// is kept as its JSON text, durations may be fractional, and unknown status
// strings are returned verbatim (workflow.RunpodStatus treats them as
// non-terminal).
//
// # Errors
//
// Every failed call returns a *workflow.ActivityError (match it with
// errors.As; use workflow.IsTransient and workflow.RetryAfterHint):
//
//   - transient: network errors, attempt timeouts (ErrAttemptTimeout), 408,
//     429 (with RetryAfter when Runpod sends Retry-After), 5xx, unreadable
//     2xx bodies (ErrBadResponse), local rate limiting (ErrRateLimited) and
//     an open circuit (workflow.ErrCircuitOpen);
//   - permanent: 400, 401/403 (ErrUnauthorized), 404 — on job operations
//     wrapping workflow.ErrRunpodJobNotFound, because Runpod deletes jobs 30
//     minutes after completion or when their TTL expires — and calls refused
//     before sending (ErrInvalidRequest);
//   - uncertain: a /run that may have created a job without us learning its
//     id wraps workflow.ErrSubmitUncertain and is neither retried nor marked
//     transient (see Client.Run for exactly when);
//   - canceled: the caller's context ended; the error matches
//     context.Canceled or context.DeadlineExceeded and is not transient.
//
// The API key travels only in the Authorization header. As a second line of
// defence every error and log text built from foreign text (transport
// errors, response bodies) is scrubbed of the key, and Config and Client
// print without it.
//
// # Retries, circuit breaking and rate limiting
//
// A call makes up to MaxAttempts HTTP attempts, each bounded by
// RequestTimeout, waiting between them with capped exponential backoff and
// full jitter (at least Retry-After when Runpod sends one). A call never
// sleeps past its context's deadline: when the next wait would end after
// it, the last error is returned at once.
//
// Each attempt first waits on the Limiter (by default a token bucket per
// operation sized to Runpod's published limits, see DefaultRateLimits) and
// then passes through the endpoint's circuit breaker (sony/gobreaker/v2),
// once per attempt. BreakerFailures consecutive transient failures open the
// circuit; calls are then rejected with workflow.ErrCircuitOpen without
// being sent until BreakerOpenTimeout has passed, when a single probe is let
// through. Cancellations and 429s do not count; permanent errors count as
// successes because Runpod answered. State changes are logged and reported
// to OnBreakerStateChange; every call's outcome is reported to OnCall.
package activities
