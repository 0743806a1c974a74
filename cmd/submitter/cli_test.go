package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/streams"
)

// hookWriter is a goroutine-safe buffer that calls onWrite (once) when
// what was written so far contains trigger: the hook at the exact point a
// test wants to interrupt the command.
type hookWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	trigger string
	onWrite func()
	fired   bool
}

func (w *hookWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	n, err := w.buf.Write(p)
	fire := !w.fired && w.onWrite != nil && strings.Contains(w.buf.String(), w.trigger)
	if fire {
		w.fired = true
	}
	w.mu.Unlock()
	if fire {
		w.onWrite()
	}
	return n, err
}

func (w *hookWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// runHooked runs the command with ctx, stdout and stderr given by the test.
func (b *testBundle) runHooked(ctx context.Context, stdout, stderr io.Writer, args ...string) (error, int) {
	c := &cli{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr, getenv: func(string) string { return "" }}
	err := c.run(ctx, append([]string{"--redis-url", b.url, "--namespace", b.ns}, args...))
	return err, code(io.Discard, err)
}

// TestSubmitInterruptedCounts: Ctrl-C during a plain submit says how many
// jobs it submitted (here: exactly one, the interrupt lands right after the
// first line) and exits 130.
func TestSubmitInterruptedCounts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &hookWriter{trigger: "\n", onWrite: cancel}
	err, status := b.runHooked(ctx, out, io.Discard, "submit", "--count", "5", "--prefix", "int", "--input", `{"n":{{i}}}`)
	require.ErrorIs(t, err, errInterrupted)
	require.Equal(t, 130, status)
	require.Contains(t, err.Error(), "submitted 1 of 5 jobs")
	require.Equal(t, 1, strings.Count(out.String(), "\n"))
}

// TestSubmitWaitInterrupted: submit --wait on a namespace no worker reads
// warns so after the first job; Ctrl-C right then (the hook) leaves that job
// still running, said so with how to cancel it, not shown as failed, the
// two others not submitted, and exits 130.
func TestSubmitWaitInterrupted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout hookWriter
	stderr := &hookWriter{trigger: "no worker reads namespace", onWrite: cancel}
	err, status := b.runHooked(ctx, &stdout, stderr, "submit", "--count", "3", "--prefix", "wi", "--input", `{"n":{{i}}}`, "--wait")
	require.ErrorIs(t, err, errInterrupted)
	require.Equal(t, 130, status)
	errText := stderr.String()
	require.Contains(t, errText, "no consumer group reads its submissions stream")
	require.Contains(t, errText, "1 jobs are still running")
	require.Contains(t, errText, "'submitter cancel ID': wi-1")
	require.Contains(t, errText, "submitter cancel ID")
	require.Contains(t, errText, "failed 0", "the progress line does not count them as failed")
	got := lines[outcomeLine](t, stdout.String())
	require.Len(t, got, 3)
	require.Equal(t, "SUBMITTED", string(got[0].Status))
	require.Contains(t, got[0].Error, "still running when the wait was interrupted")
	for _, l := range got[1:] {
		require.Empty(t, l.Status)
		require.Equal(t, "not submitted: interrupted", l.Error)
	}
}

// TestSubmitWaitTimeout: --timeout ends the wait; the jobs are said to be
// still running (exit 1, not 130).
func TestSubmitWaitTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.run(t, "", "submit", "--id", "wt-1", "--input", `{}`, "--wait", "--timeout", "100ms")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "1 jobs are still running")
	require.Contains(t, r.stdout, "still running when the --timeout ran out")
}

// TestSubmitStopsWhenRedisUnreachable: a submit of 1,000 jobs against a
// Redis that does not answer stops at the first failure, saying so, instead
// of failing the jobs one by one.
func TestSubmitStopsWhenRedisUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	r := runWith(t, nil, "", "--redis-url", "redis://"+addr+"/0", "submit", "--count", "1000", "--input", `{"n":{{i}}}`)
	require.Equal(t, 1, r.code)
	// It stops before the first job: the namespace's partition count is
	// read (and checked) before anything is written.
	require.Contains(t, r.stderr, "Redis does not answer")
	require.Empty(t, r.stdout, "no per-job lines: it stopped at once")
}

// TestInputFileLineTooLong: a line over 10 MiB is refused with the limit named.
func TestInputFileLineTooLong(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := filepath.Join(t.TempDir(), "in.jsonl")
	big := `{"x":"` + strings.Repeat("a", client.MaxInputBytesDefault) + `"}`
	require.NoError(t, os.WriteFile(p, []byte("{\"ok\":1}\n"+big+"\n"), 0o600))
	r := b.run(t, "", "submit", "--input-file", p)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "line 2: longer than 10485760 bytes (10 MiB)")
}

// TestSubmitWaitNoWarningWithLiveWorker: an idle pool (its consumers idle
// for long: Redis 7.0 resets idle only on delivered entries) whose workers
// report is not warned about.
func TestSubmitWaitNoWarningWithLiveWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.store.EnsureGroup(t.Context()))
	require.NoError(t, b.store.ReportWorker(t.Context(), streams.WorkerReport{Instance: "idle-w", AtMs: time.Now().UnixMilli()}))
	r := b.run(t, "", "submit", "--id", "nw-1", "--input", `{}`, "--wait", "--timeout", "100ms")
	require.Equal(t, 1, r.code)
	require.NotContains(t, r.stderr, "no worker reads namespace")
}
