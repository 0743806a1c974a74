package activities

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// request describes one client call (possibly several HTTP attempts).
type request struct {
	op     string
	method string
	path   string // after the endpoint base, escaped
	query  string // "" or "?..."
	body   []byte // nil: no body
	// timeout bounds one attempt; 0 means Config.RequestTimeout.
	timeout time.Duration
	// submit marks /run: not retried once the request may have been
	// processed; such failures wrap workflow.ErrSubmitUncertain.
	submit bool
	// jobScoped: a 404 means the job is unknown or expired.
	jobScoped bool
	// decode parses a 2xx body into the caller's result.
	decode func([]byte) error
}

// class is how an attempt's outcome counts for retries, the breaker and
// the OnCall hook.
type class int

const (
	classOK        class = iota
	classTransient       // retry; breaker failure
	classThrottled       // 429: retry; excluded from the breaker
	classPermanent       // do not retry; breaker success (Runpod answered)
	classUncertain       // /run may have created a job: do not retry; breaker failure
	classCanceled        // the caller's context ended; excluded from the breaker
)

// attemptError is what one attempt returns through the breaker: the error
// the caller will see plus how it counts.
type attemptError struct {
	class     class
	err       *workflow.ActivityError
	uncertain bool // wraps ErrSubmitUncertain (also set with classCanceled)
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// classOf returns the class of an attempt's error (nil is classOK).
func classOf(err error) class {
	if err == nil {
		return classOK
	}
	var ae *attemptError
	if errors.As(err, &ae) {
		return ae.class
	}
	return classTransient
}

func (e *attemptError) outcome() string {
	switch {
	case e.uncertain:
		return OutcomeUncertain
	case e.class == classCanceled:
		return OutcomeCanceled
	case e.class == classPermanent:
		return OutcomePermanent
	}
	return OutcomeTransient
}

// call runs r with retries and reports the outcome to Config.OnCall.
func (c *Client) call(ctx context.Context, r *request) error {
	if r.timeout == 0 {
		r.timeout = c.cfg.RequestTimeout
	}
	start := time.Now()
	err, outcome := c.retryLoop(ctx, r)
	if c.cfg.OnCall != nil {
		c.cfg.OnCall(r.op, outcome, time.Since(start))
	}
	if err != nil {
		return err
	}
	return nil
}

// retryLoop makes attempts until one succeeds, fails for good, the
// attempts run out, or the next wait would end past ctx's deadline — in
// which case the last error is returned at once rather than a context
// error after a pointless sleep.
func (c *Client) retryLoop(ctx context.Context, r *request) (*workflow.ActivityError, string) {
	var last *attemptError
	// reserved: the caller took the first attempt's budget and schedules
	// the call itself, so no attempt may wait for budget here.
	reserved := workflow.Reserved(ctx)
	for attempt := 1; ; attempt++ {
		switch {
		case reserved && attempt == 1:
		case reserved:
			if d := c.limiter.Reserve(ctx, r.op); d > 0 {
				// No budget for the retry now: hand the last error back with
				// the wait, so the caller reschedules rather than holds a slot.
				last.err.RetryAfter = max(last.err.RetryAfter, d)
				return last.err, OutcomeTransient
			}
		default:
			if err := c.limiter.Wait(ctx, r.op); err != nil {
				if ctx.Err() != nil {
					return c.canceled(ctx, r, last, attempt-1), OutcomeCanceled
				}
				if errors.Is(err, workflow.ErrCircuitOpen) {
					return &workflow.ActivityError{
						Op: r.op, Transient: true,
						Err: fmt.Errorf("%w: endpoint %s (pool)%s", workflow.ErrCircuitOpen, c.cfg.EndpointID, lastText(last)),
					}, OutcomeCircuitOpen
				}
				return &workflow.ActivityError{
					Op: r.op, Transient: true,
					Err: fmt.Errorf("%w: %s%s", ErrRateLimited, c.redact.String(err.Error()), lastText(last)),
				}, OutcomeTransient
			}
		}

		err := c.guarded(ctx, r)
		if err == nil {
			return nil, OutcomeOK
		}
		if isBreakerRejection(err) {
			return &workflow.ActivityError{
				Op: r.op, Transient: true,
				Err: fmt.Errorf("%w: endpoint %s (%s)%s", workflow.ErrCircuitOpen, c.cfg.EndpointID, err, lastText(last)),
			}, OutcomeCircuitOpen
		}
		var ae *attemptError
		if !errors.As(err, &ae) {
			// Not reachable: attempt returns only *attemptError.
			return &workflow.ActivityError{Op: r.op, Transient: true, Err: c.redact.Error(err)}, OutcomeTransient
		}
		last = ae
		if ae.class != classTransient && ae.class != classThrottled {
			return ae.err, ae.outcome()
		}
		if attempt >= c.cfg.MaxAttempts {
			return ae.err, OutcomeTransient
		}

		wait := c.backoff(attempt)
		if ra := ae.err.RetryAfter; ra > 0 {
			if ra > c.cfg.RetryMaxBackoff {
				// Too long to hold a worker slot; the caller schedules it.
				return ae.err, OutcomeTransient
			}
			wait = max(wait, ra)
		}
		if deadline, ok := ctx.Deadline(); ok && deadline.Sub(c.now()) < wait {
			return ae.err, OutcomeTransient
		}
		c.log.Debug("retrying", "op", r.op, "attempt", attempt, "wait", wait, "error", ae.err.Error())
		if !c.sleep(ctx, wait) {
			return c.canceled(ctx, r, last, attempt), OutcomeCanceled
		}
	}
}

// sleepCtx waits d or until ctx ends; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// guarded makes one attempt through the endpoint's breaker: the local
// gobreaker, or the SharedLimiter, which is told the outcome.
func (c *Client) guarded(ctx context.Context, r *request) error {
	if c.shared == nil {
		_, err := c.breaker.Execute(func() (struct{}, error) {
			if ae := c.attempt(ctx, r); ae != nil {
				return struct{}{}, ae
			}
			return struct{}{}, nil
		})
		return err
	}
	ae := c.attempt(ctx, r)
	a := Attempt{Op: r.op, Outcome: AttemptOK}
	if ae != nil {
		a.RetryAfter = ae.err.RetryAfter
		switch ae.class {
		case classThrottled:
			a.Outcome = AttemptThrottled
		case classTransient, classUncertain:
			a.Outcome = AttemptFailed
		case classCanceled:
			a.Outcome = AttemptCanceled
		}
	}
	c.shared.Observe(a)
	if ae == nil {
		return nil
	}
	return ae
}

// backoff is the full-jitter wait after the given (1-based) failed attempt:
// uniform in [0, min(RetryMaxBackoff, RetryInitialBackoff·2^(attempt-1))].
func (c *Client) backoff(attempt int) time.Duration {
	ceiling := c.cfg.RetryInitialBackoff
	for i := 1; i < attempt && ceiling < c.cfg.RetryMaxBackoff; i++ {
		ceiling *= 2
	}
	return c.jitter(min(ceiling, c.cfg.RetryMaxBackoff))
}

// canceled builds the error for a call whose context ended between
// attempts. It is not transient (the caller gave up) and matches
// context.Canceled / DeadlineExceeded and the context's cause.
func (c *Client) canceled(ctx context.Context, r *request, last *attemptError, attempts int) *workflow.ActivityError {
	return &workflow.ActivityError{
		Op:  r.op,
		Err: fmt.Errorf("%w after %d attempt(s)%s", ctxErr(ctx), attempts, lastText(last)),
	}
}

// ctxErr returns ctx's error, also wrapping its cause when the cause is
// more specific (a worker stopping, say).
func ctxErr(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

func lastText(last *attemptError) string {
	if last == nil {
		return ""
	}
	return "; last error: " + last.err.Error()
}

// attempt sends one HTTP request and classifies what happened.
func (c *Client) attempt(ctx context.Context, r *request) *attemptError {
	actx, cancel := c.attemptContext(ctx, r.timeout)
	defer cancel()

	// wrote is set once the whole request has left this process: from then
	// on Runpod may act on a /run even if we never read the answer. Only a
	// /run needs to know (the trace costs allocations on every call).
	var wrote atomic.Bool
	if r.submit {
		actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
			WroteRequest: func(info httptrace.WroteRequestInfo) {
				if info.Err == nil {
					wrote.Store(true)
				}
			},
		})
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(actx, r.method, c.base+r.path+r.query, body)
	if err != nil {
		return c.fail(r, classPermanent, 0, 0, fmt.Errorf("%w: build request: %w", ErrInvalidRequest, c.redact.Error(err)))
	}
	// The header values are shared by every request (net/http only reads
	// them), so building the header costs one map.
	if r.body != nil {
		req.Header = http.Header{"Authorization": c.authHdr, "Accept": jsonHdr, "Content-Type": jsonHdr}
	} else {
		req.Header = http.Header{"Authorization": c.authHdr, "Accept": jsonHdr}
	}

	resp, err := c.do(req)
	if err != nil {
		return c.transportFailure(ctx, actx, r, err, c.possiblySent(&wrote, err))
	}
	defer resp.Body.Close()

	data, readErr := c.readBody(resp)
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.statusFailure(r, resp.StatusCode, retryAfter, data)
	}
	if readErr != nil {
		// The status line arrived, so Runpod processed the request.
		return c.transportFailure(ctx, actx, r, readErr, true)
	}
	if int64(len(data)) > c.cfg.MaxResponseBytes {
		err := fmt.Errorf("%w: body exceeds %d bytes", ErrBadResponse, c.cfg.MaxResponseBytes)
		if r.submit {
			return c.uncertain(r, classUncertain, resp.StatusCode, err)
		}
		return c.fail(r, classPermanent, resp.StatusCode, 0, err)
	}
	// The one place every answer passes: no secret gets past it into a
	// result, so none reaches a record, an event or a log line.
	data = c.redact.JSON(data)
	if err := r.decode(data); err != nil {
		err = fmt.Errorf("%w: %w (body %s)", ErrBadResponse, err, c.snippet(data))
		if r.submit {
			return c.uncertain(r, classUncertain, resp.StatusCode, err)
		}
		return c.fail(r, classTransient, resp.StatusCode, 0, err)
	}
	return nil
}

// jsonHdr is the value of the Accept and Content-Type headers.
var jsonHdr = []string{"application/json"}

// do sends req. With the client this package built (Config.HTTPClient
// nil) it goes to the transport directly: http.Client.Do would copy the
// header for a redirect it never follows (redirects are not followed) and
// wrap every error once more. A caller's client gets Do, with its
// redirect, cookie and timeout rules.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	if c.rt != nil {
		return c.rt.RoundTrip(req)
	}
	return c.http.Do(req)
}

// presizeMax bounds the buffer readBody allocates before reading, so an
// announced length alone cannot make the client allocate much.
const presizeMax = 1 << 20

// readBody reads at most MaxResponseBytes+1 bytes of resp's body, into a
// buffer of the announced length when there is a small one (one
// allocation, not io.ReadAll's doubling from 512 bytes).
func (c *Client) readBody(resp *http.Response) ([]byte, error) {
	limit := c.cfg.MaxResponseBytes + 1
	if n := resp.ContentLength; n >= 0 && n < limit && n <= presizeMax {
		buf := make([]byte, n)
		k, err := io.ReadFull(resp.Body, buf)
		return buf[:k], err
	}
	return io.ReadAll(io.LimitReader(resp.Body, limit))
}

// possiblySent reports whether a failed request may have reached Runpod
// whole. net/http's trace hook is authoritative for its own transport;
// with another RoundTripper only a dial error proves nothing was sent.
func (c *Client) possiblySent(wrote *atomic.Bool, err error) bool {
	if wrote.Load() {
		return true
	}
	if c.traceTrusted {
		return false
	}
	var op *net.OpError
	return !(errors.As(err, &op) && op.Op == "dial")
}

// transportFailure classifies an error that left no usable response.
func (c *Client) transportFailure(ctx, actx context.Context, r *request, err error, sent bool) *attemptError {
	uncertain := r.submit && sent
	switch {
	case ctx.Err() != nil:
		// The caller's context ended: not Runpod's fault.
		cause := fmt.Errorf("%w (%s)", ctxErr(ctx), c.redact.String(err.Error()))
		if uncertain {
			return c.uncertain(r, classCanceled, 0, cause)
		}
		return c.fail(r, classCanceled, 0, 0, cause)
	case errors.Is(context.Cause(actx), ErrAttemptTimeout):
		err = fmt.Errorf("%w (%s): %s", ErrAttemptTimeout, r.timeout, c.redact.String(err.Error()))
	default:
		err = c.redact.Error(err)
	}
	if uncertain {
		return c.uncertain(r, classUncertain, 0, err)
	}
	return c.fail(r, classTransient, 0, 0, err)
}

// statusFailure classifies a non-2xx answer.
func (c *Client) statusFailure(r *request, code int, retryAfter time.Duration, body []byte) *attemptError {
	detail := fmt.Errorf("%s %s (body %s)", r.method, r.op, c.snippet(body))
	switch {
	case code == http.StatusTooManyRequests:
		// Rate limited: Runpod refused before doing anything, so even /run
		// is safe to repeat.
		return c.fail(r, classThrottled, code, retryAfter, detail)
	case code == http.StatusRequestTimeout || code == http.StatusServiceUnavailable:
		// 408: the server gave up reading the request; 503: the service
		// refused it. Neither created a job.
		return c.fail(r, classTransient, code, retryAfter, detail)
	case code >= 500:
		// 500 is ambiguous (the handler may have enqueued the job and then
		// failed), and 502/504 mean a gateway lost the upstream's answer,
		// which may have been a success: /run cannot tell.
		if r.submit {
			return c.uncertain(r, classUncertain, code, detail)
		}
		return c.fail(r, classTransient, code, retryAfter, detail)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		// The key, not the job: every job would be refused the same way.
		return c.fail(r, classPermanent, code, 0, fmt.Errorf("%w: %w: %w", ErrUnauthorized, workflow.ErrWorkerFault, detail))
	case code == http.StatusNotFound && r.jobScoped:
		return c.fail(r, classPermanent, code, 0, fmt.Errorf("%w: %w", workflow.ErrRunpodJobNotFound, detail))
	case code == http.StatusNotFound:
		return c.fail(r, classPermanent, code, 0, fmt.Errorf("%w: endpoint %s not found: %w", workflow.ErrWorkerFault, c.cfg.EndpointID, detail))
	}
	return c.fail(r, classPermanent, code, 0, detail)
}

func (c *Client) fail(r *request, cl class, code int, retryAfter time.Duration, err error) *attemptError {
	return &attemptError{class: cl, err: &workflow.ActivityError{
		Op: r.op, StatusCode: code, RetryAfter: retryAfter,
		Transient: cl == classTransient || cl == classThrottled,
		Err:       err,
	}}
}

// uncertain reports a /run whose effect is unknown. It is not Transient:
// repeating it may create a second job, so only the workflow's explicit
// policy may do that.
func (c *Client) uncertain(r *request, cl class, code int, err error) *attemptError {
	return &attemptError{class: cl, uncertain: true, err: &workflow.ActivityError{
		Op: r.op, StatusCode: code,
		Err: fmt.Errorf("%w: %w", workflow.ErrSubmitUncertain, err),
	}}
}

// snippetMax bounds how much of a response body goes into an error.
const snippetMax = 256

// snippet quotes the start of a body for an error message, redacted.
func (c *Client) snippet(body []byte) string {
	// Redact before cutting, so a key straddling the cut cannot survive
	// in part; as JSON first, so an escaped key is found too.
	body = c.redact.JSON(body)
	s := string(body[:min(len(body), snippetMax+c.redact.maxLen())])
	s = c.redact.String(s)
	cut := len(s) > snippetMax || len(body) > snippetMax+c.redact.maxLen()
	if len(s) > snippetMax {
		s = s[:snippetMax]
	}
	s = strconv.Quote(strings.ToValidUTF8(s, "?"))
	if cut {
		s += "..."
	}
	return s
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
// Anything else, and dates in the past, give 0 (no hint).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		// Clamp absurd values rather than overflow.
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
