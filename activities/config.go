package activities

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults and limits of Config. Zero values in Config mean "use the default".
const (
	// BaseURLDefault is Runpod's serverless data-plane base URL.
	BaseURLDefault = "https://api.runpod.ai/v2"
	// RequestTimeoutDefault bounds one HTTP attempt (run, status, cancel, ...).
	RequestTimeoutDefault = 10 * time.Second
	// RetryInitialBackoffDefault is the backoff cap of the first retry.
	RetryInitialBackoffDefault = 250 * time.Millisecond
	// RetryMaxBackoffDefault caps every backoff wait.
	RetryMaxBackoffDefault = 10 * time.Second
	// MaxAttemptsDefault is the number of HTTP attempts one call may make.
	MaxAttemptsDefault = 5
	// BreakerFailuresDefault is the number of consecutive transient
	// failures that opens the circuit.
	BreakerFailuresDefault uint32 = 5
	// BreakerOpenTimeoutDefault is how long the circuit stays open before a
	// single probe is let through.
	BreakerOpenTimeoutDefault = 30 * time.Second
	// StreamWaitDefault is the ?wait sent on /stream: how long Runpod may
	// hold the request when no chunk is buffered.
	StreamWaitDefault = 5 * time.Second
	// StreamWaitMin and StreamWaitMax are Runpod's bounds for ?wait on
	// /stream (docs/runpod-api.md §8).
	StreamWaitMin = time.Second
	StreamWaitMax = 300 * time.Second
	// MaxResponseBytesDefault bounds a response body the client will read.
	MaxResponseBytesDefault int64 = 100 << 20
)

// Config configures a Client. Only APIKey and EndpointID are required.
//
// Config's String method redacts APIKey, so printing or logging a Config
// never shows the key.
type Config struct {
	// APIKey is the Runpod API key, sent as "Authorization: Bearer <key>".
	// Required. It never appears in errors or logs produced by this package.
	APIKey string `json:"-"`
	// Secrets are other secrets (the Redis password, a webhook secret)
	// that, like APIKey, are replaced by "[REDACTED]" in everything Runpod
	// sends back (a job's error, output, progress, stream chunks: before
	// they are decoded, so before any record, event or log line) and in the
	// client's errors and logs. Empty strings are ignored. A short secret
	// also replaces ordinary text that happens to match it.
	Secrets []string `json:"-"`
	// EndpointID is the serverless endpoint id. Required; letters, digits,
	// '_' and '-' (Runpod's public endpoints use slugs, so no stricter rule).
	EndpointID string
	// BaseURL is the data-plane base, without the endpoint id.
	// Defaults to BaseURLDefault.
	BaseURL string
	// HTTPClient sends the requests. The client must not follow redirects
	// to other hosts with the Authorization header (net/http does not).
	// Defaults to a client with bounded dial/TLS timeouts, an idle pool
	// that keeps every connection the calls in flight use (up to 10,000),
	// and redirects disabled; the client then calls its transport
	// directly.
	HTTPClient *http.Client
	// RequestTimeout bounds each HTTP attempt (a /stream attempt gets
	// StreamWait on top). Defaults to RequestTimeoutDefault.
	RequestTimeout time.Duration
	// RetryInitialBackoff is the cap of the first backoff wait; the cap
	// doubles per retry (full jitter: the wait is uniform in [0, cap]).
	// Defaults to RetryInitialBackoffDefault.
	RetryInitialBackoff time.Duration
	// RetryMaxBackoff caps every backoff wait. A Retry-After longer than
	// this is not slept in-process: the call returns the error carrying the
	// hint (workflow.RetryAfterHint) so the caller can schedule the retry.
	// Defaults to RetryMaxBackoffDefault.
	RetryMaxBackoff time.Duration
	// MaxAttempts is the number of HTTP attempts per call, first included.
	// /run is never retried once the request may have been sent.
	// Defaults to MaxAttemptsDefault; 1 disables retries.
	MaxAttempts int
	// BreakerFailures is the number of consecutive transient failures
	// (one per HTTP attempt) that opens the endpoint's circuit.
	// Defaults to BreakerFailuresDefault.
	BreakerFailures uint32
	// BreakerOpenTimeout is how long the circuit stays open before one
	// probe request is let through (half-open).
	// Defaults to BreakerOpenTimeoutDefault.
	BreakerOpenTimeout time.Duration
	// StreamWait is sent as ?wait on /stream (Runpod holds the request up
	// to this long when no chunk is buffered); within StreamWaitMin and
	// StreamWaitMax.
	// Defaults to StreamWaitDefault.
	StreamWait time.Duration
	// MaxResponseBytes bounds the body the client reads from one response.
	// Defaults to MaxResponseBytesDefault.
	MaxResponseBytes int64
	// Limiter paces requests per operation; swap it for a pool-wide one.
	// Defaults to NewLocalLimiter(DefaultRateLimits).
	Limiter Limiter
	// OnCall, if set, is called once per client call (not per attempt)
	// with the operation, its outcome (one of the Outcome* constants) and
	// the call's total duration. It runs on the caller's goroutine and must
	// not block. Defaults to nil (no hook).
	OnCall func(op string, outcome string, d time.Duration)
	// OnBreakerStateChange, if set, is called when the endpoint's circuit
	// changes state ("closed", "open", "half-open"). It is called while
	// the breaker holds its lock: it must not block and must not call the
	// Client. Defaults to nil (state changes are still logged).
	OnBreakerStateChange func(endpointID string, from, to string)
	// Logger receives debug lines about retries and warnings about breaker
	// state changes. Defaults to hclog.NewNullLogger().
	Logger hclog.Logger
}

// endpointIDPattern is deliberately loose: see Config.EndpointID.
var endpointIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// String describes c with the API key redacted.
func (c Config) String() string {
	key := "<empty>"
	if c.APIKey != "" {
		key = redactedMarker
	}
	return fmt.Sprintf("activities.Config{APIKey: %s, EndpointID: %q, BaseURL: %q}", key, c.EndpointID, c.BaseURL)
}

// GoString is String, so %#v cannot print the key either.
func (c Config) GoString() string { return c.String() }

// WithDefaults returns a copy of c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.BaseURL = strings.TrimRight(cmp.Or(c.BaseURL, BaseURLDefault), "/")
	if c.HTTPClient == nil {
		c.HTTPClient = defaultHTTPClient()
	}
	c.RequestTimeout = cmp.Or(c.RequestTimeout, RequestTimeoutDefault)
	c.RetryInitialBackoff = cmp.Or(c.RetryInitialBackoff, RetryInitialBackoffDefault)
	c.RetryMaxBackoff = cmp.Or(c.RetryMaxBackoff, RetryMaxBackoffDefault)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, MaxAttemptsDefault)
	c.BreakerFailures = cmp.Or(c.BreakerFailures, BreakerFailuresDefault)
	c.BreakerOpenTimeout = cmp.Or(c.BreakerOpenTimeout, BreakerOpenTimeoutDefault)
	c.StreamWait = cmp.Or(c.StreamWait, StreamWaitDefault)
	c.MaxResponseBytes = cmp.Or(c.MaxResponseBytes, MaxResponseBytesDefault)
	if c.Limiter == nil {
		c.Limiter = NewLocalLimiter(DefaultRateLimits)
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// validate checks a defaulted Config. Errors name the field and never
// include the API key.
func (c Config) validate() error {
	if c.APIKey == "" {
		return errors.New("activities: APIKey: must not be empty")
	}
	for _, r := range c.APIKey {
		// The key goes into a header: anything else would be rejected by
		// net/http (or worse, split the header).
		if r <= ' ' || r >= 0x7f {
			return errors.New("activities: APIKey: must be printable ASCII without spaces")
		}
	}
	if c.EndpointID == "" {
		return errors.New("activities: EndpointID: must not be empty")
	}
	if !endpointIDPattern.MatchString(c.EndpointID) {
		return fmt.Errorf("activities: EndpointID: %q must match %s", c.EndpointID, endpointIDPattern)
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil {
		return fmt.Errorf("activities: BaseURL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("activities: BaseURL: scheme must be http or https, have %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("activities: BaseURL: must have a host")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("activities: BaseURL: must not carry user info, a query or a fragment")
	}
	switch {
	case c.RequestTimeout < 0:
		return errors.New("activities: RequestTimeout: must not be negative")
	case c.RetryInitialBackoff < 0:
		return errors.New("activities: RetryInitialBackoff: must not be negative")
	case c.RetryMaxBackoff < c.RetryInitialBackoff:
		return errors.New("activities: RetryMaxBackoff: must be at least RetryInitialBackoff")
	case c.MaxAttempts < 0:
		return errors.New("activities: MaxAttempts: must not be negative")
	case c.BreakerOpenTimeout < 0:
		return errors.New("activities: BreakerOpenTimeout: must not be negative")
	case c.StreamWait < StreamWaitMin || c.StreamWait > StreamWaitMax:
		return fmt.Errorf("activities: StreamWait: must be within %s..%s", StreamWaitMin, StreamWaitMax)
	case c.MaxResponseBytes < 0:
		return errors.New("activities: MaxResponseBytes: must not be negative")
	}
	return nil
}

// idleConnsMax bounds the idle keep-alive connections of the default
// client: cmd/worker's largest --concurrency.
const idleConnsMax = 10_000

// defaultHTTPClient returns a client suited to many concurrent calls to one
// host. Per-attempt deadlines come from contexts, so the client itself has
// no overall Timeout.
func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 5 * time.Second
	// Keep every connection a burst of calls opened (as many as the
	// worker's Concurrency, at most 10,000 in cmd/worker): a connection
	// beyond the idle limit is closed when its call ends and the next
	// burst dials it again, a TCP and TLS handshake each (net/http's
	// default is 2 per host; 128 churned at --concurrency 256:
	// TestConnectionsAreReused). Idle ones close after IdleConnTimeout.
	t.MaxIdleConns = idleConnsMax
	t.MaxIdleConnsPerHost = idleConnsMax
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{
		Transport: t,
		// Runpod answers every operation with 200 or an error; a redirect is
		// unexpected and is reported rather than followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
