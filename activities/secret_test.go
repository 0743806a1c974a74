package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/workflow"
)

// TestAPIKeyNeverLeaks drives every error path with a distinctive key —
// including servers that echo the key back and a caller who passes the key
// as a job id, so that it reaches URLs and bodies — and checks that neither
// the errors, nor the trace-level log, nor a printed Config or Client
// contain it.
func TestAPIKeyNeverLeaks(t *testing.T) {
	t.Parallel()
	echoKey := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			// A hostile or buggy server echoing the Authorization header.
			writeJSON(w, status, `{"error":"bad key `+r.Header.Get("Authorization")+`","path":"`+r.URL.Path+`"}`)
		}
	}
	handlers := map[string]http.HandlerFunc{
		"400 echo": echoKey(400),
		"401 echo": echoKey(401),
		"403 echo": echoKey(403),
		"404 echo": echoKey(404),
		"429 echo": func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Retry-After", "120"); echoKey(429)(w, r) },
		"500 echo": echoKey(500),
		"502 echo": echoKey(502),
		"503 echo": echoKey(503),
		"200 garbage": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"id":"`+r.Header.Get("Authorization"))
		},
		"long body":          func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 500, strings.Repeat("x", 250)+testKey) },
		"hung":               hang,
		"dropped":            dropConnection,
		"connection refused": nil,
	}
	for name, h := range handlers {
		answers := h != nil && name != "hung" && name != "dropped"
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, h, func(c *Config) {
				c.MaxAttempts = 2
				// A server that answers must be heard, however loaded the
				// machine (an answer cut off by a short timeout would pass
				// without its echo ever being checked). Only the hung server
				// is ended by the timeout: it never answers, so the timeout's
				// length changes how long its case takes, never what it sees.
				c.RequestTimeout = time.Minute
				if name == "hung" {
					c.RequestTimeout = 100 * time.Millisecond
				}
				c.StreamWait = StreamWaitMin
				if h == nil {
					c.BaseURL = refusedURL(t)
				}
			})
			c := b.client
			ctx := context.Background()
			var errs []error
			collect := func(_ any, err error) { errs = append(errs, err) }
			collect(c.Run(ctx, workflow.RunRequest{Input: json.RawMessage(`{}`)}))
			collect(c.Status(ctx, "job-1"))
			collect(c.Status(ctx, testKey)) // the key in the URL path
			collect(c.Cancel(ctx, testKey+"/x y"))
			collect(c.Stream(ctx, testKey))
			collect(c.Retry(ctx, testKey))
			collect(c.Health(ctx))
			collect(c.PurgeQueue(ctx))
			collect(c.Status(ctx, "\x00"+testKey)) // refused locally
			canceled, cancel := context.WithCancel(ctx)
			cancel()
			collect(c.Status(canceled, testKey))

			for i, err := range errs {
				require.Error(t, err, "call %d", i)
				requireNoKey(t, err.Error())
				requireNoKey(t, fmt.Sprintf("%v %+v %#v", err, err, err))
				// Walk the chain too: no wrapped error may print the key.
				for e := err; e != nil; e = errors.Unwrap(e) {
					requireNoKey(t, e.Error())
				}
				var ae *workflow.ActivityError
				require.ErrorAs(t, err, &ae, "call %d: %v", i, err)
				if i == 0 && answers {
					require.NotZero(t, ae.StatusCode, "the server's answer was heard: %v", err)
				}
			}
			requireNoKey(t, b.logs.String())
		})
	}

	t.Run("printing config and client", func(t *testing.T) {
		t.Parallel()
		cfg := Config{APIKey: testKey, EndpointID: "e"}
		c, err := New(cfg)
		require.NoError(t, err)
		for _, s := range []string{
			fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg),
			fmt.Sprintf("%v %+v %s", c, c, c),
			fmt.Sprint(&cfg),
		} {
			requireNoKey(t, s)
		}
	})
}

// TestRedactor covers the scrubbing helper itself.
func TestRedactor(t *testing.T) {
	t.Parallel()
	r := newRedactor("sekrit")
	require.Equal(t, "a [REDACTED] b [REDACTED]", r.String("a sekrit b sekrit"))
	require.Equal(t, "clean", r.String("clean"))
	require.Equal(t, "x", redactor{}.String("x"))

	plain := errors.New("plain")
	require.Same(t, plain, r.Error(plain), "clean errors keep their identity")
	err := r.Error(fmt.Errorf("dial sekrit: %w", context.DeadlineExceeded))
	require.Equal(t, "dial [REDACTED]: context deadline exceeded", err.Error())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Nil(t, r.Error(nil))
}
