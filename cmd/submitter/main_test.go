package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/redistest"
	"github.com/yourscope/runpod-orchestrator/internal/syncbuf"
	"github.com/yourscope/runpod-orchestrator/streams"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func TestMain(m *testing.M) {
	progressInterval = 20 * time.Millisecond
	redistest.Main(m)
}

// testBundle is one test's Redis namespace and the flags that reach it.
type testBundle struct {
	rdb   *redis.Client
	ns    string
	url   string
	store *streams.Store
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	rdb, ns := redistest.New(t)
	store, err := streams.New(rdb, streams.Config{Namespace: ns})
	require.NoError(t, err)
	return &testBundle{rdb: rdb, ns: ns, url: "redis://" + redistest.Addr() + "/0", store: store}
}

// result is what one command run produced.
type result struct {
	stdout, stderr string
	err            error
	code           int
}

// run runs the command line args with the bundle's connection flags.
func (b *testBundle) run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runWith(t, nil, stdin, append([]string{"--redis-url", b.url, "--namespace", b.ns}, args...)...)
}

func runWith(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := &cli{stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr,
		getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.run(ctx, args)
	var codeOut bytes.Buffer
	code := code(&codeOut, err)
	return result{stdout: stdout.String(), stderr: stderr.String() + codeOut.String(), err: err, code: code}
}

// lines decodes JSON lines.
func lines[T any](t *testing.T, s string) []T {
	t.Helper()
	var out []T
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l == "" {
			continue
		}
		var v T
		require.NoError(t, json.Unmarshal([]byte(l), &v), "line %q", l)
		out = append(out, v)
	}
	return out
}

// startWorker plays the worker pool through package streams: each job ends
// COMPLETED with its input as output, or FAILED with the text of an input
// {"fail": "..."}. It stops when the test ends.
func (b *testBundle) startWorker(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, b.store.EnsureGroup(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			msgs, err := b.store.Read(ctx, "fake", 100, 20*time.Millisecond)
			if err != nil || len(msgs) == 0 {
				continue
			}
			reqs := make([]streams.AdmitRequest, len(msgs))
			for i, m := range msgs {
				reqs[i] = streams.NewAdmitRequest(m, 0)
			}
			res, err := b.store.Admit(ctx, reqs, streams.AdmitOpts{Consumer: "fake"})
			if err != nil {
				continue
			}
			var outs []streams.Outcome
			for i, r := range res {
				if r.Status != streams.Admitted {
					continue
				}
				o := streams.Outcome{JobID: r.Record.JobID, Entry: r.Record.Entry, Owner: r.Record.Owner, Epoch: r.Record.Epoch,
					State: string(workflow.StateCompleted), Output: reqs[i].Sub.Input,
					// As Runpod reports them: 1 s of GPU time per job.
					DelayMs: 20, ExecMs: 1000, RunpodWorkerID: "gpuworker00001", Endpoint: "ep-sub"}
				var in struct{ Fail string }
				if json.Unmarshal(reqs[i].Sub.Input, &in) == nil && in.Fail != "" {
					o.State, o.Output, o.Error = string(workflow.StateFailed), nil, in.Fail
				}
				outs = append(outs, o)
			}
			_, _ = b.store.Finalize(ctx, outs, streams.FinalizeOpts{ResultTTL: time.Hour})
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestUsage(t *testing.T) {
	t.Parallel()

	t.Run("HelpListsCommandsAndEnv", func(t *testing.T) {
		t.Parallel()
		r := runWith(t, nil, "", "help")
		require.NoError(t, r.err)
		for _, want := range []string{"submit", "get", "cancel", "events", "audit", "-redis-url", "-namespace", "REDIS_URL", "RUNPOD_NAMESPACE"} {
			require.Contains(t, r.stdout, want)
		}
	})

	t.Run("CommandHelpListsEveryFlag", func(t *testing.T) {
		t.Parallel()
		r := runWith(t, nil, "", "submit", "--help")
		require.ErrorIs(t, r.err, flag.ErrHelp)
		require.Zero(t, r.code)
		for _, want := range []string{"-input ", "-input-file", "-count", "-id ", "-prefix", "-input-hash", "-dedupe",
			"-persist-input", "-job-timeout", "-wait", "-timeout", "-redis-url", "-namespace", "REDIS_URL"} {
			require.Contains(t, r.stderr, want)
		}
		for _, cmd := range []string{"get", "cancel", "events", "audit"} {
			r := runWith(t, nil, "", "help", cmd)
			require.ErrorIs(t, r.err, flag.ErrHelp)
			require.Contains(t, r.stderr, "usage: submitter "+cmd)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"NoCommand", nil, "no command"},
			{"UnknownCommand", []string{"frobnicate"}, `unknown command "frobnicate"`},
			{"UnknownFlag", []string{"submit", "--bogus"}, "-bogus"},
			{"UnknownGlobalFlag", []string{"--bogus", "get", "x"}, "-bogus"},
			{"MissingInput", []string{"submit"}, "--input"},
			{"BadJSON", []string{"submit", "--input", `{"a":`}, "--input: not valid JSON"},
			{"BadTemplate", []string{"submit", "--count", "2", "--input", `{"a":{{i}`}, "--input: not valid JSON"},
			{"BothInputs", []string{"submit", "--input", "1", "--input-file", "x"}, "exclusive"},
			{"ZeroCount", []string{"submit", "--input", "1", "--count", "0"}, "--count 0"},
			{"IDWithCount", []string{"submit", "--input", "1", "--count", "2", "--id", "x"}, "--id"},
			{"MissingFile", []string{"submit", "--input-file", "/nonexistent/jobs.jsonl"}, "--input-file"},
			{"BadTimeout", []string{"submit", "--input", "1", "--timeout", "0s"}, "--timeout"},
			{"GetWithoutID", []string{"get"}, "exactly one job ID"},
			{"CancelTwoIDs", []string{"cancel", "a", "b"}, "exactly one job ID"},
			{"EventsBadFrom", []string{"events", "--from", "yesterday"}, "--from"},
			{"AuditFromNow", []string{"audit", "--from", "now"}, "--from now"},
			{"BadRedisScheme", []string{"--redis-url", "http://localhost:6379", "get", "x"}, "--redis-url"},
			{"BadNamespace", []string{"--namespace", "a{b}", "get", "x"}, "--namespace"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				r := runWith(t, nil, "", tc.args...)
				require.Error(t, r.err)
				require.Equal(t, 2, r.code, "usage errors exit 2: %v", r.err)
				require.Contains(t, r.stderr, tc.want)
			})
		}
	})

	t.Run("BadInputFileLineIsNamed", func(t *testing.T) {
		t.Parallel()
		r := runWith(t, nil, "{\"ok\":1}\n\n{broken\n", "submit", "--input-file", "-")
		require.Equal(t, 2, r.code)
		require.Contains(t, r.stderr, "--input-file - line 3: not valid JSON")
	})

	t.Run("RedisPasswordIsNeverPrinted", func(t *testing.T) {
		t.Parallel()
		for _, url := range []string{
			"redis://user:s3cretpw@localhost:notaport/0",
			"redis://user:s3cretpw@localhost:6379/notadb",
			"rediss://:s3cretpw@%zz/0",
			"http://user:s3cretpw@localhost:6379",
		} {
			r := runWith(t, nil, "", "--redis-url", url, "get", "x")
			require.Equal(t, 2, r.code, "url %q: %v", url, r.err)
			require.Contains(t, r.stderr, "--redis-url")
			require.NotContains(t, r.stderr, "s3cretpw")
			require.NotContains(t, r.err.Error(), "s3cretpw")
		}
	})

	t.Run("UnreachableRedisFailsWithStatus1", func(t *testing.T) {
		t.Parallel()
		port, err := redistest.FreePort()
		require.NoError(t, err)
		r := runWith(t, nil, "", "--redis-url", fmt.Sprintf("redis://:pw0rd@127.0.0.1:%d/0", port), "get", "x")
		require.Equal(t, 1, r.code)
		require.NotContains(t, r.stderr, "pw0rd")
	})
}

func TestSubmitCommand(t *testing.T) {
	t.Parallel()

	t.Run("WithoutWait", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		r := b.run(t, "", "submit", "--id", "one", "--input", `{"prompt":"x"}`, "--job-timeout", "1m")
		require.NoError(t, r.err)
		out := lines[outcomeLine](t, r.stdout)
		require.Equal(t, []outcomeLine{{ClientJobID: "one", Status: workflow.StateSubmitted}}, out)
		rec, err := b.store.Get(context.Background(), "one")
		require.NoError(t, err)
		require.Equal(t, string(workflow.StateSubmitted), rec.State)
		require.Equal(t, rec.CreatedMs+60_000, rec.DeadlineMs)

		// Again: idempotent, reported as existing.
		r = b.run(t, "", "submit", "--id", "one", "--input", `{"prompt":"x"}`)
		require.NoError(t, r.err)
		require.Equal(t, []outcomeLine{{ClientJobID: "one", Status: workflow.StateSubmitted, Existing: true}},
			lines[outcomeLine](t, r.stdout))
	})

	t.Run("CountTemplateWait", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t)
		r := b.run(t, "", "submit", "--count", "3", "--prefix", "p", "--input", `{"n":{{i}}}`, "--wait")
		require.NoError(t, r.err, r.stderr)
		out := lines[outcomeLine](t, r.stdout)
		require.Len(t, out, 3)
		for i, l := range out {
			require.Equal(t, fmt.Sprintf("p-%d", i+1), l.ClientJobID)
			require.Equal(t, workflow.StateCompleted, l.Status)
			require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i+1), string(l.Output))
			require.Empty(t, l.Error)
		}
		require.Contains(t, r.stderr, "done 3/3 failed 0 in-flight 0 rate ")
	})

	t.Run("InputFileWaitWithAFailure", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t)
		file := filepath.Join(t.TempDir(), "jobs.jsonl")
		require.NoError(t, os.WriteFile(file, []byte("{\"a\":1}\n{\"fail\":\"out of memory\"}\n"), 0o600))
		r := b.run(t, "", "submit", "--input-file", file, "--prefix", "f", "--wait")
		require.ErrorIs(t, r.err, errIncomplete)
		require.Equal(t, 1, r.code)
		require.Contains(t, r.stderr, "1 of 2 jobs did not complete")
		require.Contains(t, r.stderr, "done 1/2 failed 1 in-flight 0")
		out := lines[outcomeLine](t, r.stdout)
		require.Equal(t, []outcomeLine{
			{ClientJobID: "f-1", Status: workflow.StateCompleted, Output: json.RawMessage(`{"a":1}`)},
			{ClientJobID: "f-2", Status: workflow.StateFailed, Error: "out of memory"},
		}, out)
	})

	t.Run("StdinAndAutoHashDedupe", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		r := b.run(t, "{\"x\":1}\n{\"x\":1}\n{\"x\":2}\n", "submit", "--input-file", "-", "--prefix", "s",
			"--input-hash", "auto", "--dedupe")
		require.NoError(t, r.err)
		out := lines[outcomeLine](t, r.stdout)
		require.Len(t, out, 3)
		require.Equal(t, outcomeLine{ClientJobID: "s-2", Status: workflow.StateSubmitted, Deduplicated: true, AnsweredBy: "s-1"}, out[1])
		require.False(t, out[2].Deduplicated)
		rec, err := b.store.Get(context.Background(), "s-1")
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(rec.InputHash, "sha256:"), "hash %q", rec.InputHash)
	})

	t.Run("WaitTimeoutReportsWhereJobsStand", func(t *testing.T) {
		t.Parallel()
		b := setup(t) // no worker: the job never ends
		r := b.run(t, "", "submit", "--id", "slow", "--input", "1", "--wait", "--timeout", "200ms")
		require.ErrorIs(t, r.err, errIncomplete)
		require.Equal(t, 1, r.code)
		out := lines[outcomeLine](t, r.stdout)
		require.Equal(t, []outcomeLine{{ClientJobID: "slow", Status: workflow.StateSubmitted,
			Error: "still running when the --timeout ran out"}}, out)
		require.Contains(t, r.stderr, "done 0/1 failed 0 in-flight 1")
	})

	t.Run("RedisURLFromEnv", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		r := runWith(t, map[string]string{"REDIS_URL": b.url, "RUNPOD_NAMESPACE": b.ns}, "",
			"submit", "--id", "env", "--input", "1")
		require.NoError(t, r.err)
		_, err := b.store.Get(context.Background(), "env")
		require.NoError(t, err, "the job landed in the namespace named by the environment")
	})
}

func TestGetCancelCommands(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.run(t, "", "submit", "--id", "j", "--input", "1").err)

	r := b.run(t, "", "get", "j")
	require.NoError(t, r.err)
	var job struct {
		ClientJobID string `json:"clientJobId"`
		State       string `json:"state"`
		CreatedAt   time.Time
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &job))
	require.Equal(t, "j", job.ClientJobID)
	require.Equal(t, "SUBMITTED", job.State)

	r = b.run(t, "", "cancel", "j")
	require.NoError(t, r.err)
	require.JSONEq(t, `{"clientJobId":"j","state":"SUBMITTED","hintPublished":true,"hintReceivers":0}`, r.stdout)
	rec, err := b.store.Get(context.Background(), "j")
	require.NoError(t, err)
	require.True(t, rec.Cancel)

	// Flags after the positional argument work too.
	r = runWith(t, nil, "", "get", "nope", "--redis-url", b.url, "--namespace", b.ns)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "job not found")
	// An unknown id may be a raw submission not yet admitted: the cancel
	// is kept for it and reported as pending.
	r = b.run(t, "", "cancel", "nope")
	require.Equal(t, 0, r.code, r.stderr)
	require.JSONEq(t, `{"clientJobId":"nope","state":"","pending":true}`, r.stdout)
}

func TestEventsCommand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t)
	require.NoError(t, b.run(t, "", "submit", "--count", "2", "--prefix", "e", "--input", "1", "--wait").err)

	type ev struct {
		ID    string `json:"id"`
		Type  string `json:"type"`
		JobID string `json:"clientJobId"`
		State string `json:"state"`
	}
	r := b.run(t, "", "events")
	require.NoError(t, r.err)
	all := lines[ev](t, r.stdout)
	require.Len(t, all, 4)

	r = b.run(t, "", "events", "--job", "e-2")
	require.NoError(t, r.err)
	got := lines[ev](t, r.stdout)
	require.Len(t, got, 2)
	require.Equal(t, []string{"submitted", "completed"}, []string{got[0].Type, got[1].Type})
	require.Equal(t, "COMPLETED", got[1].State)

	r = b.run(t, "", "events", "--from", all[2].ID)
	require.NoError(t, r.err)
	require.Equal(t, all[3:], lines[ev](t, r.stdout))

	// --follow runs until interrupted, which is a normal end.
	var stdout syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	c := &cli{stdin: strings.NewReader(""), stdout: &stdout, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
	done := make(chan error, 1)
	go func() {
		done <- c.run(ctx, []string{"--redis-url", b.url, "--namespace", b.ns, "events", "--follow", "--from", "now"})
	}()
	require.Eventually(t, func() bool {
		_ = b.run(t, "", "submit", "--input", "1")
		return strings.Contains(stdout.String(), `"type":"submitted"`)
	}, 10*time.Second, 50*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("events --follow did not stop when interrupted")
	}
}

func TestAuditCommand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t)
	require.NoError(t, b.run(t, "", "submit", "--count", "3", "--prefix", "a", "--input", "1", "--wait").err)
	require.NoError(t, b.run(t, "", "submit", "--id", "open", "--input", `{"fail":"x"}`).err)
	require.Eventually(t, func() bool {
		rec, err := b.store.Get(context.Background(), "open")
		return err == nil && rec.State == string(workflow.StateFailed)
	}, 10*time.Second, 10*time.Millisecond)

	r := b.run(t, "", "audit")
	require.NoError(t, r.err)
	require.Contains(t, r.stdout, "events 8 from 0, jobs 4: terminal 4, in flight 0, aliases 0")
	require.Contains(t, r.stdout, "by state: COMPLETED 3, FAILED 1")
	require.Contains(t, r.stdout, "violations: 0")

	// Forge a second outcome for a-1.
	payload, err := streams.EncodePayload(streams.EventPayload{})
	require.NoError(t, err)
	require.NoError(t, b.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "{" + b.ns + "}:events", Values: []any{
		"type", "canceled", "job_id", "a-1", "state", "CANCELED", "epoch", "1", "ts", "1", "payload", string(payload),
	}}).Err())
	r = b.run(t, "", "audit")
	require.ErrorIs(t, r.err, errViolations)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stdout, "violations: 1")
	require.Contains(t, r.stdout, "job a-1 at event ")
	require.Contains(t, r.stdout, "duplicate_terminal")

	r = b.run(t, "", "audit", "--json")
	require.Equal(t, 1, r.code)
	var rep struct {
		Jobs       int
		Violations []struct{ Kind string }
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Equal(t, 4, rep.Jobs)
	require.Equal(t, "duplicate_terminal", rep.Violations[0].Kind)
}

// TestRun drives the real entry point (os.Getenv included).
func TestRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--redis-url", b.url, "--namespace", b.ns, "get", "missing"},
		strings.NewReader(""), &stdout, &stderr)
	require.ErrorContains(t, err, "job not found")
	var codeOut bytes.Buffer
	require.Equal(t, 1, code(&codeOut, err))
	require.Contains(t, codeOut.String(), "submitter: get: ")
}

// TestVersion: --version prints the command's name and version, exit 0,
// and the help spells flags --name.
func TestVersion(t *testing.T) {
	t.Parallel()
	r := runWith(t, nil, "", "--version")
	require.NoError(t, r.err)
	require.Regexp(t, `^submitter \S+ \(go`, r.stdout)
	h := runWith(t, nil, "", "help")
	require.Contains(t, h.stdout, "\n  --redis-url URL\n")
	require.NotRegexp(t, `(?m)^  -[a-z]`, h.stdout, "a single-dash flag in the help")
}
