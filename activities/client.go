package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/sony/gobreaker/v2"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Outcomes reported to Config.OnCall.
const (
	OutcomeOK          = "ok"           // the call succeeded
	OutcomeTransient   = "transient"    // failed; a later call may succeed
	OutcomePermanent   = "permanent"    // failed; repeating it will not help
	OutcomeCircuitOpen = "circuit_open" // rejected by the breaker, not sent
	OutcomeCanceled    = "canceled"     // the caller's context ended first
	OutcomeUncertain   = "uncertain"    // /run may or may not have created a job
)

// Errors specific to this package; they are wrapped inside a
// *workflow.ActivityError like every other failure.
var (
	// ErrUnauthorized: Runpod answered 401 or 403 (bad key, or a key
	// without rights on this endpoint). Permanent.
	ErrUnauthorized = errors.New("activities: runpod rejected the API key")
	// ErrInvalidRequest: the call was refused before sending (empty job
	// id, missing input). Permanent.
	ErrInvalidRequest = errors.New("activities: invalid request")
	// ErrRateLimited: the local Limiter could not grant a request before
	// the context's deadline. Transient; nothing was sent.
	ErrRateLimited = errors.New("activities: rate limit would exceed the deadline")
	// ErrAttemptTimeout: one HTTP attempt got no complete response within
	// Config.RequestTimeout. Transient.
	ErrAttemptTimeout = errors.New("activities: no response within the request timeout")
	// ErrBadResponse: a 2xx response whose body could not be read or
	// parsed. Transient for reads; on /run it makes the outcome uncertain.
	ErrBadResponse = errors.New("activities: unreadable response")
)

// Client calls one Runpod serverless endpoint. It implements
// workflow.Runpod and is safe for concurrent use. Every call is paced by the
// Limiter, goes through the endpoint's circuit breaker once per HTTP
// attempt, and retries transient failures with capped exponential backoff
// and full jitter within the caller's context. Every failure is a
// (wrapped) *workflow.ActivityError whose text never contains the API key.
type Client struct {
	cfg     Config
	base    string   // BaseURL + "/" + EndpointID
	authHdr []string // {"Bearer <key>"}, shared by every request's header
	http    *http.Client
	// rt is the transport of the client this package built, which the
	// client calls directly (do); nil with a caller's Config.HTTPClient.
	rt      http.RoundTripper
	limiter Limiter
	// shared is the limiter when it is also the pool's breaker; breaker
	// is then nil.
	shared  SharedLimiter
	breaker *gobreaker.CircuitBreaker[struct{}]
	log     hclog.Logger
	redact  redactor
	// traceTrusted: the transport is net/http's, whose httptrace hooks tell
	// reliably whether a request was written. With another RoundTripper a
	// /run failure is uncertain unless it is plainly a dial error.
	traceTrusted bool
	// jitter returns a wait in [0, ceiling]; tests replace it.
	jitter func(ceiling time.Duration) time.Duration
	// now and sleep are the retry loop's clock (the deadline check and the
	// backoff wait); tests replace both with a fake clock.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) bool
	// attemptContext bounds one attempt: d, then cancel with cause
	// ErrAttemptTimeout. Tests replace it to expire an attempt at a chosen
	// point rather than after a real-time delay.
	attemptContext func(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc)
}

var (
	_ workflow.Runpod = (*Client)(nil)
	_ workflow.Pacer  = (*Client)(nil)
)

// New validates cfg (after applying defaults) and returns a Client. Errors
// name the offending field, e.g. "activities: APIKey: must not be empty".
// The caller keeps ownership of cfg.HTTPClient.
func New(cfg Config) (*Client, error) {
	own := cfg.HTTPClient == nil
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		base:    cfg.BaseURL + "/" + cfg.EndpointID,
		authHdr: []string{"Bearer " + cfg.APIKey},
		http:    cfg.HTTPClient,
		limiter: cfg.Limiter,
		log:     cfg.Logger.Named("runpod").With("endpoint_id", cfg.EndpointID),
		redact:  newRedactor(append([]string{cfg.APIKey}, cfg.Secrets...)...),
		now:     time.Now,
		sleep:   sleepCtx,
		attemptContext: func(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
			return context.WithTimeoutCause(ctx, d, ErrAttemptTimeout)
		},
		jitter: func(ceiling time.Duration) time.Duration {
			if ceiling <= 0 {
				return 0
			}
			return rand.N(ceiling + 1)
		},
	}
	switch cfg.HTTPClient.Transport.(type) {
	case nil, *http.Transport:
		c.traceTrusted = true
	}
	if own {
		c.rt = cfg.HTTPClient.Transport
	}
	if sl, ok := cfg.Limiter.(SharedLimiter); ok {
		c.shared = sl
	} else {
		c.breaker = newBreaker(cfg, c.log)
	}
	return c, nil
}

// String describes the client without its key (a *Client printed with %v
// would otherwise dump the Config).
func (c *Client) String() string {
	return fmt.Sprintf("activities.Client{endpoint: %q, base: %q}", c.cfg.EndpointID, c.cfg.BaseURL)
}

// BreakerState returns the endpoint circuit's state: "closed", "open" or
// "half-open". An open circuit whose timeout has passed reports (and
// becomes) "half-open". With a SharedLimiter it is the pool's circuit as
// this process last saw it.
func (c *Client) BreakerState() string {
	if c.shared != nil {
		return c.shared.BreakerState()
	}
	return c.breaker.State().String()
}

// Reserve implements workflow.Pacer with the Limiter's Reserve: it takes
// one call's budget for op (0) or says how long to wait. A call made with
// workflow.WithReserved(ctx) after a 0 does not take the budget again.
func (c *Client) Reserve(ctx context.Context, op string) time.Duration {
	return c.limiter.Reserve(ctx, op)
}

// RedactJSON implements workflow.Redactor: b with the API key and
// Config.Secrets replaced, as every answer of Runpod is before it is decoded.
func (c *Client) RedactJSON(b []byte) []byte { return c.redact.JSON(b) }

var _ workflow.Redactor = (*Client)(nil)

// CloseIdleConnections closes idle keep-alive connections of the HTTP
// client (for shutdown and tests; calls may continue afterwards).
func (c *Client) CloseIdleConnections() {
	c.http.CloseIdleConnections()
}

// Run submits a job with POST /run and returns Runpod's answer
// ({id, status: IN_QUEUE}).
//
// /run has no idempotency key, so it is retried only when Runpod cannot
// have created a job: the connection was never established or the request
// never fully written, or Runpod answered 408, 429 or 503. Once the request
// may have been processed — a timeout or dropped connection after the
// write, the caller's context ending after the write, a 500, 502 or 504
// (the gateway or server may have failed after enqueueing), or a 2xx whose
// body is unreadable or lacks an id — the error wraps
// workflow.ErrSubmitUncertain and is not retried: the workflow's policy
// decides. Such an error is not Transient, so generic retry code does not
// resubmit it by accident.
func (c *Client) Run(ctx context.Context, req workflow.RunRequest) (workflow.RunpodJob, error) {
	body, err := encodeRun(req)
	if err != nil {
		return workflow.RunpodJob{}, c.invalid(OpRun, err.Error())
	}
	var job workflow.RunpodJob
	err = c.call(ctx, &request{
		op: OpRun, method: http.MethodPost, path: "/run", body: body, submit: true,
		decode: func(b []byte) (err error) {
			job, err = decodeJob(b)
			if err == nil && job.ID == "" {
				err = errors.New("response has no job id")
			}
			return err
		},
	})
	return job, err
}

// Status reads the job object with GET /status/{id}. A 404 wraps
// workflow.ErrRunpodJobNotFound: Runpod deletes jobs 30 minutes after
// completion and when their TTL expires. Unknown status strings are
// returned verbatim; workflow.RunpodStatus.Terminal treats them as
// non-terminal.
func (c *Client) Status(ctx context.Context, id string) (workflow.RunpodJob, error) {
	return c.jobCall(ctx, OpStatus, http.MethodGet, id)
}

// Cancel cancels a job with POST /cancel/{id} and returns Runpod's answer
// (usually {id, status: CANCELLED}). A 404 wraps
// workflow.ErrRunpodJobNotFound. Cancelling is idempotent, so it is retried
// like a read.
func (c *Client) Cancel(ctx context.Context, id string) (workflow.RunpodJob, error) {
	return c.jobCall(ctx, OpCancel, http.MethodPost, id)
}

// Retry re-queues a FAILED or TIMED_OUT job under the same id with
// POST /retry/{id}. It is retried on transient errors; note that if an
// attempt timed out after Runpod re-queued the job, the next attempt may be
// refused (the job is no longer FAILED) — check with Status.
func (c *Client) Retry(ctx context.Context, id string) (workflow.RunpodJob, error) {
	return c.jobCall(ctx, OpRetry, http.MethodPost, id)
}

func (c *Client) jobCall(ctx context.Context, op, method, id string) (workflow.RunpodJob, error) {
	if err := checkJobID(id); err != nil {
		return workflow.RunpodJob{}, c.invalid(op, err.Error())
	}
	var job workflow.RunpodJob
	err := c.call(ctx, &request{
		op: op, method: method, path: "/" + op + "/" + url.PathEscape(id), jobScoped: true,
		decode: func(b []byte) (err error) {
			job, err = decodeJob(b)
			return err
		},
	})
	return job, err
}

// Stream drains the chunks a generator job yielded since the previous call
// with GET /stream/{id}?wait=StreamWait. Runpod hands each chunk out once,
// so a response lost to a timeout loses its chunks; the job's aggregate
// output (if the worker enables it) remains available from Status.
func (c *Client) Stream(ctx context.Context, id string) (StreamResult, error) {
	if err := checkJobID(id); err != nil {
		return StreamResult{}, c.invalid(OpStream, err.Error())
	}
	var res StreamResult
	err := c.call(ctx, &request{
		op: OpStream, method: http.MethodGet, jobScoped: true,
		path:  "/stream/" + url.PathEscape(id),
		query: "?wait=" + strconv.FormatInt(c.cfg.StreamWait.Milliseconds(), 10),
		// Runpod may hold the request for the whole wait.
		timeout: c.cfg.RequestTimeout + c.cfg.StreamWait,
		decode: func(b []byte) (err error) {
			res, err = decodeStream(b)
			return err
		},
	})
	return res, err
}

// StreamChunks implements workflow.Streamer with Stream: the chunks'
// outputs and the job's status.
func (c *Client) StreamChunks(ctx context.Context, id string) (workflow.RunpodStream, error) {
	res, err := c.Stream(ctx, id)
	if err != nil {
		return workflow.RunpodStream{}, err
	}
	out := workflow.RunpodStream{Status: res.Status, Outputs: make([]json.RawMessage, len(res.Stream))}
	for i, ch := range res.Stream {
		out.Outputs[i] = ch.Output
	}
	return out, nil
}

var _ workflow.Streamer = (*Client)(nil)

// CheckEndpoint implements workflow.EndpointChecker with GET /health: nil
// when Runpod accepts the key and knows the endpoint, an error wrapping
// workflow.ErrWorkerFault when it refuses either (401/403, or 404), and the
// call's error otherwise (say, Runpod unreachable: nothing is known).
func (c *Client) CheckEndpoint(ctx context.Context) error {
	_, err := c.Health(ctx)
	return err
}

var _ workflow.EndpointChecker = (*Client)(nil)

// Health reads the endpoint's job and worker counters with GET /health.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.call(ctx, &request{
		op: OpHealth, method: http.MethodGet, path: "/health",
		decode: func(b []byte) (err error) {
			h, err = decodeHealth(b)
			return err
		},
	})
	return h, err
}

// PurgeQueue removes every queued (not running) job with POST /purge-queue.
func (c *Client) PurgeQueue(ctx context.Context) (PurgeResult, error) {
	var p PurgeResult
	err := c.call(ctx, &request{
		op: OpPurgeQueue, method: http.MethodPost, path: "/purge-queue",
		decode: func(b []byte) (err error) {
			p, err = decodePurge(b)
			return err
		},
	})
	return p, err
}

// invalid reports a call refused before anything was sent.
func (c *Client) invalid(op, why string) error {
	err := &workflow.ActivityError{Op: op, Err: fmt.Errorf("%w: %s", ErrInvalidRequest, c.redact.String(why))}
	if c.cfg.OnCall != nil {
		c.cfg.OnCall(op, OutcomePermanent, 0)
	}
	return err
}

// checkJobID rejects ids that cannot be a Runpod job id. It does not echo
// the id: a caller passing the wrong variable could pass a secret.
func checkJobID(id string) error {
	if id == "" {
		return errors.New("job id must not be empty")
	}
	for _, r := range id {
		if r < ' ' || r == 0x7f {
			return errors.New("job id must not contain control characters")
		}
	}
	return nil
}
