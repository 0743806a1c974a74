package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/internal/syncbuf"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func TestMain(m *testing.M) {
	faultRecheckEvery = 50 * time.Millisecond
	redistest.Main(m)
}

// Distinctive secrets: no output of the command may ever contain them.
const (
	secretKey      = "rpa_SECRETKEY0123456789"
	secretPassword = "pw-SECRET-9876"
)

// env returns a lookupEnv over m only, so tests do not depend on the
// environment they run in.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// started is a run in the background.
type started struct {
	stdout, stderr *syncbuf.Buffer
	cancel         context.CancelFunc
	done           chan error
}

// start runs runEnv(args) in a goroutine until the test stops it (or ends).
func start(t *testing.T, args []string, environ map[string]string) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &started{stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- runEnv(ctx, args, env(environ), s.stdout, s.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			t.Error("run did not return within 30s of cancel")
		}
	})
	return s
}

// stop cancels the run and requires it to return nil within 15s.
func (s *started) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, s.stopErr(t), "run after cancel; stderr:\n%s", s.stderr)
}

// stopErr cancels the run and returns what it returned (within 15s).
func (s *started) stopErr(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- nil // for the cleanup
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("run did not return within 15s of cancel; stderr:\n%s", s.stderr)
	}
	return nil
}

// find waits until re matches w's text and returns the first group.
func find(t *testing.T, w *syncbuf.Buffer, re *regexp.Regexp, s *started) string {
	t.Helper()
	var m []string
	require.Eventually(t, func() bool {
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("run returned early: %v\nstdout:\n%s\nstderr:\n%s", err, s.stdout, s.stderr)
		default:
		}
		m = re.FindStringSubmatch(w.String())
		return m != nil
	}, time.Minute, 10*time.Millisecond, "want %s in the output", re)
	return m[1]
}

// httpClient does not keep connections, so no goroutine outlives a test.
var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := httpClient.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestHelp(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"--help"}, &stdout, &stderr))
	help := stdout.String()
	for _, d := range newFlagTable(defaultOptions()).defs {
		require.Regexp(t, `\n  --`+d.name+`[ \n]`, help, "flag missing from --help")
		require.Contains(t, help, "env "+d.env, "environment variable missing from --help")
	}
	require.Empty(t, stderr.String())

	t.Run("no secret from the environment", func(t *testing.T) {
		t.Parallel()
		var stdout, stderr bytes.Buffer
		for _, args := range [][]string{{"-h"}, {"--help"}, {"--no-such-flag"}} {
			_ = runEnv(context.Background(), args, env(map[string]string{
				"RUNPOD_API_KEY": secretKey,
				"REDIS_URL":      "redis://app:" + secretPassword + "@redis.internal:6380/0",
			}), &stdout, &stderr)
		}
		require.Contains(t, stdout.String(), "--redis-tls-ca-file")
		require.NotContains(t, stdout.String()+stderr.String(), secretKey)
		require.NotContains(t, stdout.String()+stderr.String(), secretPassword)
	})

	t.Run("secret shows as set, never its value", func(t *testing.T) {
		t.Parallel()
		var stdout bytes.Buffer
		require.NoError(t, runEnv(context.Background(), []string{"-h"},
			env(map[string]string{"RUNPOD_API_KEY": secretKey}), &stdout, io.Discard))
		require.Contains(t, stdout.String(), "env RUNPOD_API_KEY; now (set)")
		require.NotContains(t, stdout.String(), secretKey)
	})
}

func TestBadConfiguration(t *testing.T) {
	t.Parallel()
	// Enough to get past "required" checks, so later rules are reached.
	ok := []string{"--runpod-api-key", secretKey, "--runpod-endpoint-id", "ep1"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // the error must contain this
	}{
		{"bad duration", []string{"--min-idle", "abc"}, nil, `--min-idle: invalid duration "abc" (want e.g. 30s`},
		{"bad duration with =", []string{"--poll-initial=5"}, nil, `--poll-initial: invalid duration "5"`},
		{"duration too short", []string{"--min-idle", "10ms"}, nil, `--min-idle: 10ms is too short (want at least 1s)`},
		{"int out of range", []string{"--max-in-flight", "0"}, nil, `--max-in-flight: 0 is out of range (want 1..1000000)`},
		{"not an int", []string{"--concurrency", "many"}, nil, `--concurrency: invalid integer "many"`},
		{"float out of range", []string{"--poll-jitter", "2"}, nil, `--poll-jitter: 2 is out of range (want 0..1)`},
		{"choice", []string{"--log-format", "xml"}, nil, `--log-format: "xml" is not allowed (want one of text, json)`},
		{"bool", []string{"--dedupe=maybe"}, nil, `--dedupe: invalid boolean "maybe"`},
		{"missing value", []string{"--namespace"}, nil, `--namespace: needs a value`},
		{"unknown flag", []string{"--nope"}, nil, `unknown flag --nope`},
		{"positional", append([]string{"extra"}, ok...), nil, `unexpected argument "extra"`},
		{"bad namespace", []string{"--namespace", "a b"}, nil, `--namespace: "a b" is not a valid namespace`},
		{"from environment", nil, map[string]string{"RUNPOD_MIN_IDLE": "soon"}, `RUNPOD_MIN_IDLE (for --min-idle): invalid duration "soon"`},
		{"missing API key", []string{"--runpod-endpoint-id", "ep1"}, nil, `--runpod-api-key: required (or set RUNPOD_API_KEY); use --dev`},
		{"missing endpoint", []string{"--runpod-api-key", secretKey}, nil, `--runpod-endpoint-id: required`},
		{"redis scheme", append([]string{"--redis-url", "http://h:1"}, ok...), nil, `--redis-url: scheme "http" is not supported (want redis://`},
		{"redis unparseable", append([]string{"--redis-url", "redis://u:" + secretPassword + "@h:1:2:x%zz"}, ok...), nil, `--redis-url: not a valid URL`},
		{"redis bad option", append([]string{"--redis-url", "redis://u:" + secretPassword + "@h:6379/0?" + secretPassword + "=1"}, ok...), nil, `--redis-url: redis://u:xxxxx@h:6379/0?xxxxx=1: `},
		{"redis bad db", append([]string{"--redis-url", "redis://u:" + secretPassword + "@h:6379/notadb"}, ok...), nil, `--redis-url: redis://u:xxxxx@h:6379/notadb: `},
		{"heartbeat not under lease (library rule)", append([]string{"--min-idle", "3s", "--heartbeat-interval", "5s"}, ok...), nil, `--heartbeat-interval: 5s must be positive and less than --min-idle 3s`},
		{"poll max under initial (library rule)", append([]string{"--poll-initial", "5s", "--poll-max", "1s"}, ok...), nil, `--poll-max: 1s is less than --poll-initial 5s`},
		{"endpoint id (library rule)", []string{"--runpod-api-key", secretKey, "--runpod-endpoint-id", "bad id!"}, nil, `--runpod-endpoint-id: "bad id!" must match`},
		{"base url (library rule)", append([]string{"--runpod-base-url", "ftp://x/v2"}, ok...), nil, `--runpod-base-url: scheme must be http or https`},
		{"api key (library rule)", []string{"--runpod-api-key", "has space " + secretKey, "--runpod-endpoint-id", "ep1"}, nil, `--runpod-api-key: must be printable ASCII`},
		{"dev with redis url", []string{"--dev", "--redis-url", "redis://localhost:6379"}, nil, `--redis-url: cannot be combined with --dev`},
		{"dev flag without dev", append([]string{"--dev-redis-addr", "127.0.0.1:0"}, ok...), nil, `--dev-redis-addr: only applies with --dev`},
		{"http addr", append([]string{"--http-addr", "256.0.0.1:x"}, ok...), nil, `--http-addr: cannot listen`},
		{"partitions out of range", []string{"--partitions", "0"}, nil, `--partitions: 0 is out of range (want 1..1024)`},
		{"serve partitions not a list", []string{"--serve-partitions", "0;1"}, nil, `--serve-partitions: invalid partition "0;1"`},
		{"serve partitions beyond P (library rule)", append([]string{"--partitions", "3", "--serve-partitions", "0,5"}, ok...), nil, `--serve-partitions: [0 5]: want distinct partitions in 0..2`},
		{"max in flight under the served partitions (library rule)", append([]string{"--partitions", "4", "--max-in-flight", "2"}, ok...), nil, `--max-in-flight: 2 is less than the 4 partitions served`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := runEnv(ctx, tt.args, env(tt.env), &stdout, &stderr)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
			require.Equal(t, 2, exitCode(err), "a configuration mistake exits 2")
			for _, out := range []string{err.Error(), stdout.String(), stderr.String()} {
				require.NotContains(t, out, secretKey)
				require.NotContains(t, out, secretPassword)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	t.Parallel()
	parse := func(args []string, environ map[string]string) (*options, map[string]string) {
		o := defaultOptions()
		src, err := newFlagTable(o).parse(args, env(environ))
		require.NoError(t, err)
		return o, src
	}
	e := map[string]string{"RUNPOD_MAX_IN_FLIGHT": "7", "REDIS_URL": "redis://env:1/0", "RUNPOD_DEDUPE": "true"}

	o, src := parse(nil, nil)
	require.Equal(t, 100000, o.maxInFlight, "default")
	require.Empty(t, src)

	o, src = parse(nil, e)
	require.Equal(t, 7, o.maxInFlight, "environment over default")
	require.Equal(t, "redis://env:1/0", o.redisURL)
	require.True(t, o.dedupe)
	require.Equal(t, "RUNPOD_MAX_IN_FLIGHT", src["max-in-flight"])

	o, src = parse([]string{"--max-in-flight", "9", "--dedupe=false"}, e)
	require.Equal(t, 9, o.maxInFlight, "flag over environment")
	require.False(t, o.dedupe)
	require.Equal(t, sourceFlag, src["max-in-flight"])

	t.Run("dev defaults yield to explicit values", func(t *testing.T) {
		t.Parallel()
		o, src := parse([]string{"--dev"}, nil)
		require.NoError(t, o.check(src))
		require.Equal(t, devPollInitial, o.pollInitial)
		require.Equal(t, devPollMax, o.pollMax)
		require.Equal(t, devHTTPAddrDefault, o.httpAddr)

		o, src = parse([]string{"--dev", "--poll-initial", "3s"}, map[string]string{"RUNPOD_HTTP_ADDR": "127.0.0.1:1"})
		require.NoError(t, o.check(src))
		require.Equal(t, 3*time.Second, o.pollInitial)
		require.Equal(t, 3*time.Second, o.pollMax, "the dev max is raised to the initial")
		require.Equal(t, "127.0.0.1:1", o.httpAddr)
	})

	t.Run("zero means none", func(t *testing.T) {
		t.Parallel()
		o, _ := parse([]string{"--job-timeout", "0", "--event-retention", "0", "--poll-jitter", "0"}, nil)
		cfg := o.workerConfig(placeholderRunpod{}, nil, newMetrics().hooks())
		require.Equal(t, time.Duration(-1), cfg.JobTimeout)
		require.Equal(t, time.Duration(-1), cfg.EventRetention)
		require.Equal(t, -1.0, cfg.Poll.Jitter)
		require.NoError(t, cfg.WithDefaults().Validate())
	})
}

// TestDev runs --dev end to end: a job submitted through the printed Redis
// address completes, /metrics counts it, and cancel stops everything.
func TestDev(t *testing.T) {
	t.Parallel()
	s := start(t, []string{"--dev", "--dev-redis-addr", "127.0.0.1:0", "--dev-runpod-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--log-level", "debug"}, nil)
	redisURL := find(t, s.stdout, regexp.MustCompile(`dev mode: embedded Redis at (redis://127\.0\.0\.1:\d+), Runpod simulator at http://127\.0\.0\.1:\d+/v2 \(endpoint dev-endpoint\)\n`), s)
	base := find(t, s.stdout, regexp.MustCompile(`metrics:  (http://127\.0\.0\.1:\d+)/metrics`), s)
	require.Contains(t, s.stdout.String(),
		"try:  go run ./cmd/submitter submit --redis-url "+redisURL+` --input '{"prompt":"a cat in space"}' --wait`+"\n")

	opt, err := redis.ParseURL(redisURL)
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	c, err := client.New(rdb, client.Config{})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.Submit(ctx, client.SubmitOptions{ClientJobID: "dev-1", Input: map[string]any{"prompt": "a cat in space"}})
	require.NoError(t, err)
	res, err := c.AwaitResult(ctx, "dev-1")
	require.NoError(t, err)
	require.Equal(t, workflow.StateCompleted, res.Status, "error: %s", res.Error)
	require.JSONEq(t, `{"prompt":"a cat in space"}`, string(res.Output), "the simulator echoes the input")

	code, _ := get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	code, body := get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code, body)

	// The outcome is counted once the finalizer returned; scrape until then.
	var fams map[string]*familyValues
	require.Eventually(t, func() bool {
		fams = scrape(t, base+"/metrics")
		return fams[metricJobOutcomes].value(t, "state", "COMPLETED") == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1.0, fams[metricRunpodCalls].value(t, "op", "run", "outcome", "ok"))
	require.GreaterOrEqual(t, fams[metricRunpodCalls].value(t, "op", "status", "outcome", "ok"), 1.0)
	require.Equal(t, 1.0, fams[metricJobTransitions].value(t, "from", "SUBMITTED", "to", "QUEUED"))
	require.Equal(t, 0.0, fams[metricJobOutcomes].value(t, "state", "FAILED"))
	require.Equal(t, 0.0, fams[metricBreakerState].value(t))
	require.Equal(t, 0.0, fams[metricJobsInFlight].value(t))
	require.Equal(t, 0.0, fams[metricPendingEntries].value(t), "the finished job's entry is acknowledged")
	require.Equal(t, 0.0, fams[metricLeaseLosses].value(t))
	for _, name := range metricNames {
		require.Contains(t, fams, name, "every metric is exported")
	}

	// The worker logged the outcome at info with its structured keys.
	require.Regexp(t, `job finished: .*job_id=dev-1 runpod_id=\S+ state=COMPLETED`, s.stderr.String())

	s.stop(t)
}

// familyValues is one scraped metric family.
type familyValues struct {
	samples []sample
}

type sample struct {
	labels map[string]string
	value  float64
}

// value returns the sample whose labels include the given name/value pairs;
// it fails the test when there is none.
func (f *familyValues) value(t *testing.T, kv ...string) float64 {
	t.Helper()
	if f == nil {
		t.Fatalf("metric family missing")
	}
next:
	for _, s := range f.samples {
		for i := 0; i+1 < len(kv); i += 2 {
			if s.labels[kv[i]] != kv[i+1] {
				continue next
			}
		}
		return s.value
	}
	t.Fatalf("no sample with labels %v in %v", kv, f.samples)
	return 0
}

// scrape GETs url and parses it as Prometheus text.
func scrape(t *testing.T, url string) map[string]*familyValues {
	t.Helper()
	code, body := get(t, url)
	require.Equal(t, http.StatusOK, code)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err, "/metrics must parse as Prometheus text")
	out := make(map[string]*familyValues, len(mfs))
	for name, mf := range mfs {
		fv := &familyValues{}
		for _, m := range mf.GetMetric() {
			s := sample{labels: map[string]string{}}
			for _, lp := range m.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.value = m.GetGauge().GetValue()
			case m.Histogram != nil:
				s.value = float64(m.GetHistogram().GetSampleCount())
			case m.Untyped != nil:
				s.value = m.GetUntyped().GetValue()
			}
			fv.samples = append(fv.samples, s)
		}
		out[name] = fv
	}
	return out
}

// TestReadyzFollowsRedis points the worker at its own redis-server, stops
// the server and requires /readyz to turn 503 naming the redis check.
func TestReadyzFollowsRedis(t *testing.T) {
	t.Parallel()
	srv, err := redistest.Start()
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	ns := redistest.Namespace(t)
	// A reachable Runpod, so only Redis is at fault (the start-up check of an
	// unreachable one would open the breaker).
	sim := serveSim(t)
	s := start(t, []string{"--redis-url", "redis://" + srv.Addr + "/0", "--namespace", ns,
		"--runpod-endpoint-id", "ep-good", "--runpod-base-url", sim.URL,
		"--http-addr", "127.0.0.1:0", "--shutdown-timeout", "1s"},
		map[string]string{"RUNPOD_API_KEY": simKey})
	addr := find(t, s.stderr, regexp.MustCompile(`http_addr=(127\.0\.0\.1:\d+)`), s)
	base := "http://" + addr

	require.Eventually(t, func() bool {
		code, _ := get(t, base+"/readyz")
		return code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "ready while Redis answers")
	// The worker starts once the Runpod check at start is over; stopping
	// Redis before it created its group would be a failed start.
	find(t, s.stderr, regexp.MustCompile(`(worker started)`), s)

	srv.Stop()
	var body readyBody
	require.Eventually(t, func() bool {
		code, text := get(t, base+"/readyz")
		if code != http.StatusServiceUnavailable {
			return false
		}
		require.NoError(t, json.Unmarshal([]byte(text), &body))
		return true
	}, 10*time.Second, 20*time.Millisecond, "unready once Redis stops")
	require.Equal(t, "unready", body.Status)
	require.Equal(t, []string{"redis"}, body.Failing)
	code, _ := get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code, "alive even when Redis is not")

	s.stop(t)
	for _, out := range []string{s.stdout.String(), s.stderr.String()} {
		require.NotContains(t, out, secretKey)
	}
}

// TestSecretsStayOut runs against a Redis that refuses the user and password
// in the URL (the worker logs retries) and a Runpod key given by flag, and requires
// neither secret in any output.
func TestSecretsStayOut(t *testing.T) {
	t.Parallel()
	s := start(t, []string{"--redis-url", "redis://nosuchuser:" + secretPassword + "@" + redistest.Addr() + "/0",
		"--runpod-api-key", secretKey, "--runpod-endpoint-id", "ep1", "--runpod-base-url", "http://127.0.0.1:1/v2",
		"--http-addr", "127.0.0.1:0", "--log-level", "trace", "--log-format", "json", "--namespace", redistest.Namespace(t)}, nil)
	addr := find(t, s.stderr, regexp.MustCompile(`"http_addr":"(127\.0\.0\.1:\d+)"`), s)
	// The worker cannot authenticate: it retries and says so.
	find(t, s.stderr, regexp.MustCompile(`(cannot check the namespace's partition count)`), s)
	code, body := get(t, "http://"+addr+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	_, metricsText := get(t, "http://"+addr+"/metrics")
	// It never started, and says so when stopped.
	err := s.stopErr(t)
	require.ErrorContains(t, err, "stopped before it could start")
	for _, out := range []string{s.stdout.String(), s.stderr.String(), body, metricsText, err.Error()} {
		require.NotContains(t, out, secretKey)
		require.NotContains(t, out, secretPassword)
	}
	require.Contains(t, s.stderr.String(), `redis://nosuchuser:xxxxx@`, "the start-up line shows the redacted URL")
}

// TestDevPortInUse: a busy --dev-redis-addr is reported under its flag.
func TestDevPortInUse(t *testing.T) {
	t.Parallel()
	err := runEnv(context.Background(), []string{"--dev", "--dev-redis-addr", redistest.Addr(),
		"--dev-runpod-addr", "127.0.0.1:0", "--http-addr", ""}, env(nil), io.Discard, io.Discard)
	require.Error(t, err)
	require.Contains(t, err.Error(), "--dev-redis-addr: cannot start the embedded Redis on "+redistest.Addr())
	var fe *flagError
	require.True(t, errors.As(err, &fe))
}

// TestExitCode: configuration mistakes exit 2, other failures 1.
func TestExitCode(t *testing.T) {
	t.Parallel()
	require.Equal(t, 2, exitCode(&flagError{Flag: "x", Msg: "y"}))
	require.Equal(t, 2, exitCode(fmt.Errorf("run: %w", &usageError{err: errors.New("unknown flag --x")})))
	require.Equal(t, 1, exitCode(errors.New("worker: boom")))
}

// TestReadyzChecks covers /readyz's answers for each failing check.
func TestReadyzChecks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		pingErr  error
		breaker  string
		wantCode int
		failing  []string
	}{
		{"ready", nil, "closed", http.StatusOK, nil},
		{"half-open is ready", nil, "half-open", http.StatusOK, nil},
		{"breaker open", nil, "open", http.StatusServiceUnavailable, []string{"runpod_breaker"}},
		{"redis down", errors.New("dial tcp: refused " + secretPassword), "closed", http.StatusServiceUnavailable, []string{"redis"}},
		{"both", errors.New("timeout"), "open", http.StatusServiceUnavailable, []string{"redis", "runpod_breaker"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mux := newMux(newMetrics().reg, readiness{
				ping:    func(context.Context) error { return tt.pingErr },
				breaker: func() string { return tt.breaker },
			}, hclog.NewNullLogger())
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			require.Equal(t, tt.wantCode, rec.Code)
			var body readyBody
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
			require.Equal(t, tt.failing, body.Failing)
			require.NotContains(t, rec.Body.String(), secretPassword, "no error text in the body")
		})
	}
}

// TestRedisLogger: go-redis's own log lines go through run's hclog logger.
// Not parallel: it sets the process-wide target that run also sets, and
// sequential tests finish before parallel ones start.
func TestRedisLogger(t *testing.T) {
	var buf bytes.Buffer
	l := hclog.New(&hclog.LoggerOptions{Output: &buf, JSONFormat: true, Name: "x"})
	prev := redisLogTarget.Swap(&l)
	defer redisLogTarget.Store(prev)
	redisLogger{}.Printf(context.Background(), "redis: %s: dial tcp %s", "connection pool", "127.0.0.1:1")
	require.Contains(t, buf.String(), `"@level":"warn","@message":"connection pool: dial tcp 127.0.0.1:1"`)
}
