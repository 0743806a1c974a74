package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/dashboard"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
)

type testBundle struct {
	cli *client.Client
	srv *httptest.Server
	rdb *redis.Client
	ns  string
}

// setup serves a dashboard over a fresh namespace, with Run going.
func setup(t *testing.T, mod ...func(*dashboard.Config)) testBundle {
	t.Helper()
	return setupClient(t, client.Config{PersistInput: true}, mod...)
}

// setupClient is setup with the dashboard's client configured by ccfg
// (its Namespace is the fresh one).
func setupClient(t *testing.T, ccfg client.Config, mod ...func(*dashboard.Config)) testBundle {
	t.Helper()
	rdb, ns := redistest.New(t)
	ccfg.Namespace = ns
	cli, err := client.New(rdb, ccfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	cfg := dashboard.Config{Client: cli, SampleInterval: 50 * time.Millisecond}
	for _, m := range mod {
		m(&cfg)
	}
	d, err := dashboard.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	// Run stops first (cleanups run last-in first-out), ending the
	// /events streams, so the server's Close does not wait for them.
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return testBundle{cli: cli, srv: srv, rdb: rdb, ns: ns}
}

func (b testBundle) submit(t *testing.T, id string, input string) {
	t.Helper()
	_, err := b.cli.Submit(context.Background(), client.SubmitOptions{ClientJobID: id, Input: json.RawMessage(input)})
	require.NoError(t, err)
}

func get(t *testing.T, u string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

// TestOverviewCountsJobs: the overview shows the backlog and the jobs by
// state that the client reads; a fragment request returns the live part only.
func TestOverviewCountsJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 3 {
		b.submit(t, fmt.Sprintf("ov-%d", i), `{"n":1}`)
	}
	code, body := get(t, b.srv.URL+"/")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `<span class="v" id="stat-backlog">3</span>`)
	require.Contains(t, body, `data-count="SUBMITTED">3</td>`)
	require.Contains(t, body, `data-count="COMPLETED">0</td>`)
	require.Contains(t, body, `<html`)

	code, frag := get(t, b.srv.URL+"/", "X-Dashboard-Fragment", "1")
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, frag, "<html")
	require.Contains(t, frag, `id="stat-backlog"`)
}

// TestJobPage: a job's page shows its record, input and events; an unknown
// id is a 404.
func TestJobPage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.submit(t, "jp/1-é", `{"prompt":"hello <b>"}`)
	code, body := get(t, b.srv.URL+"/job?id="+url.QueryEscape("jp/1-é"))
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `id="job-id" class="mono">jp/1-é</span>`)
	require.Contains(t, body, `&#34;prompt&#34;: &#34;hello &lt;b&gt;&#34;`, "input shown, escaped")
	require.Contains(t, body, `data-event-type="submitted"`)

	code, _ = get(t, b.srv.URL+"/job?id=nope")
	require.Equal(t, http.StatusNotFound, code)
}

// TestActionsRefuseCrossOrigin: Retry and Cancel are POST only and refused
// when the browser says the request comes from another site or origin; a
// same-origin cancel is recorded and redirects back to the job.
func TestActionsRefuseCrossOrigin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.submit(t, "co-1", `{}`)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(hdr ...string) *http.Response {
		form := url.Values{"id": {"co-1"}, "op": {"cancel"}, "back": {"job"}}
		req, err := http.NewRequest(http.MethodPost, b.srv.URL+"/action", strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := noRedirect.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		return res
	}
	for _, hdr := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
		{"Origin", "http://evil.example"},
	} {
		res := post(hdr...)
		require.Equal(t, http.StatusForbidden, res.StatusCode, "%v", hdr)
	}
	j, err := b.cli.Get(context.Background(), "co-1")
	require.NoError(t, err)
	require.False(t, j.CancelRequested, "a refused request changed nothing")

	code, _ := get(t, b.srv.URL+"/action?id=co-1&op=cancel")
	require.Equal(t, http.StatusMethodNotAllowed, code, "no write by GET")

	res := post("Sec-Fetch-Site", "same-origin", "Origin", b.srv.URL)
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	require.Contains(t, res.Header.Get("Location"), "/job?")
	require.Contains(t, res.Header.Get("Location"), "done=canceled")
	j, err = b.cli.Get(context.Background(), "co-1")
	require.NoError(t, err)
	require.True(t, j.CancelRequested)
}

// TestHostCheck: a Host that is a DNS name other than localhost and the
// allowed ones is refused (a DNS-rebinding page), IP literals pass.
func TestHostCheck(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *dashboard.Config) { c.AllowedHosts = []string{"ops.internal"} })
	for host, want := range map[string]int{
		"":                  http.StatusOK,
		"localhost:1234":    http.StatusOK,
		"ops.internal:8080": http.StatusOK,
		"[::1]:80":          http.StatusOK,
		"evil.example:80":   http.StatusMisdirectedRequest,
		"evil.example":      http.StatusMisdirectedRequest,
	} {
		req, err := http.NewRequest(http.MethodGet, b.srv.URL+"/assets/style.css", nil)
		require.NoError(t, err)
		if host != "" {
			req.Host = host
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, want, res.StatusCode, "Host %q", host)
	}
}

// TestEventsStream: /events tells the page about a job's events as they
// are written.
func TestEventsStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.srv.URL+"/events", nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	sc := bufio.NewScanner(res.Body)
	next := func() (m struct{ Kind, Job, Type string }) {
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				require.NoError(t, json.Unmarshal([]byte(line), &m))
				return m
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return m
	}
	// A sample is announced after Run positioned its subscription, so the
	// job submitted after one is seen.
	for next().Kind != "sample" {
	}
	_, err = b.cli.Submit(ctx, client.SubmitOptions{ClientJobID: "ev-1", Input: json.RawMessage(`{}`)})
	require.NoError(t, err)
	for {
		m := next()
		if m.Kind == "event" && m.Job == "ev-1" {
			require.Equal(t, "submitted", m.Type)
			return
		}
	}
}

// TestPagesShowNoSecrets: with Redis unreachable through a URL that holds
// a password, every page answers 503 with neither the password nor the
// address: errors are logged, not shown.
func TestPagesShowNoSecrets(t *testing.T) {
	t.Parallel()
	const password = "pw-DASH-SECRET-777"
	port, err := redistest.FreePort()
	require.NoError(t, err)
	opt, err := redis.ParseURL(fmt.Sprintf("redis://user:%s@127.0.0.1:%d/0", password, port))
	require.NoError(t, err)
	opt.MaxRetries = -1
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	cli, err := client.New(rdb, client.Config{Namespace: redistest.Namespace(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	d, err := dashboard.New(dashboard.Config{Client: cli})
	require.NoError(t, err)
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	for _, p := range []string{"/", "/jobs", "/jobs?state=FAILED", "/job?id=x", "/dead"} {
		code, body := get(t, srv.URL+p)
		require.Equal(t, http.StatusServiceUnavailable, code, p)
		require.NotContains(t, body, password, p)
		require.NotContains(t, body, fmt.Sprint(port), p)
		require.Contains(t, body, "Could not read", p)
	}
}
