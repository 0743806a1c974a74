package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Defaults and limits of the submit command.
const (
	waitTimeoutDefault = 15 * time.Minute
	// awaitParallel bounds the AwaitResult calls in flight. They all share
	// the client's one reader; the bound only caps goroutines for huge runs
	// (a job already finished when its turn comes returns at once).
	awaitParallel = 4096
	// maxFileLine is the longest line --input-file accepts (the input cap).
	maxFileLine = client.MaxInputBytesDefault + 1
)

// progressInterval is how often plain progress lines are printed; a
// variable so tests can shorten it.
var progressInterval = 2 * time.Second

// errIncomplete: some job of a --wait run did not complete (exit status 1).
var errIncomplete = errors.New("not every job completed")

// jobSpec is one job to submit.
type jobSpec struct {
	id    string
	input json.RawMessage
	hash  string
}

// outcomeLine is the JSON line printed per job.
type outcomeLine struct {
	ClientJobID  string          `json:"clientJobId"`
	Status       workflow.State  `json:"status,omitempty"`
	RunpodJobID  string          `json:"runpodJobId,omitempty"`
	AnsweredBy   string          `json:"answeredBy,omitempty"` // the job holding the same input hash, when deduplicated
	Existing     bool            `json:"existing,omitempty"`
	Deduplicated bool            `json:"deduplicated,omitempty"`
	Output       json.RawMessage `json:"output,omitempty"`
	Error        string          `json:"error,omitempty"`
}

func (c *cli) submit(ctx context.Context, g *globals, args []string) error {
	fs := c.newFlagSet(g, "submit", "",
		"Submit jobs and print one JSON line per job. With --wait, show progress on stderr\n"+
			"(a bar on a terminal, plain lines otherwise), then print each job's outcome;\n"+
			"the exit status is 1 if any job did not complete.")
	var (
		input       = fs.String("input", "", "the job input as `JSON`; with --count, \"{{i}}\" is replaced by the job number")
		inputFile   = fs.String("input-file", "", "`file` of JSON lines, one job input per line (\"-\" = stdin)")
		count       = fs.Int("count", 1, "submit `N` jobs from the --input template")
		id          = fs.String("id", "", "the clientJobId of a single job (default: a random id)")
		prefix      = fs.String("prefix", "", "id `prefix` for --count and --input-file jobs: <prefix>-<n> (default: a random run id)")
		inputHash   = fs.String("input-hash", "", "dedupe `key` for the job(s); \"auto\" = sha256 of each input")
		dedupe      = fs.Bool("dedupe", false, "answer with a live or completed job holding the same input hash")
		persist     = fs.Bool("persist-input", false, "keep each job's input in its record")
		jobTimeout  = fs.Duration("job-timeout", 0, "per-job `deadline` from creation (0 = the workers' default)")
		wait        = fs.Bool("wait", false, "wait for every job's outcome")
		waitTimeout = fs.Duration("timeout", waitTimeoutDefault, "with --wait, give up waiting after this `duration`")
		durReplicas = fs.Int("durability-replicas", 0, "report a job submitted only once `N` replicas have it (WAIT; as the workers' flag)")
		durTimeout  = fs.Duration("durability-timeout", client.DurabilityTimeoutDefault, "longest durability wait per job")
	)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("submit: unexpected argument %q", pos[0])
	}
	set := flagsSet(fs)
	switch {
	case set["input"] && set["input-file"]:
		return usagef("submit: --input and --input-file are exclusive")
	case !set["input"] && !set["input-file"]:
		return usagef("submit: one of --input or --input-file is required")
	case *count < 1:
		return usagef("submit: --count %d: must be at least 1", *count)
	case set["count"] && set["input-file"]:
		return usagef("submit: --count applies to --input, not --input-file")
	case set["id"] && (*count > 1 || set["input-file"]):
		return usagef("submit: --id names a single job; use --prefix with --count or --input-file")
	case *jobTimeout < 0:
		return usagef("submit: --job-timeout %v: must not be negative", *jobTimeout)
	case *waitTimeout <= 0:
		return usagef("submit: --timeout %v: must be positive", *waitTimeout)
	}
	if *prefix == "" {
		*prefix = randomID()
	}

	var specs []jobSpec
	if set["input-file"] {
		specs, err = c.readInputFile(*inputFile, *prefix)
	} else {
		specs, err = templateJobs(*input, *count, *id, *prefix)
	}
	if err != nil {
		return err
	}
	for i := range specs {
		specs[i].hash = *inputHash
		if *inputHash == "auto" {
			sum := sha256.Sum256(specs[i].input)
			specs[i].hash = "sha256:" + hex.EncodeToString(sum[:])
		}
	}

	if *durReplicas < 0 || *durReplicas > 100 {
		return usagef("submit: --durability-replicas: %d is not in 0..100", *durReplicas)
	}
	cl, closeFn, err := g.connect(client.Config{Dedupe: *dedupe, PersistInput: *persist,
		Durability: client.Durability{Replicas: *durReplicas, Timeout: *durTimeout}})
	if err != nil {
		return err
	}
	defer closeFn()

	if !*wait {
		return c.submitOnly(ctx, cl, specs, *jobTimeout)
	}
	return c.submitAndWait(ctx, cl, specs, *jobTimeout, *waitTimeout)
}

// flagsSet reports which flags were given on the command line.
func flagsSet(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// templateJobs builds count jobs from the --input template.
func templateJobs(tmpl string, count int, id, prefix string) ([]jobSpec, error) {
	if count == 1 && !strings.Contains(tmpl, "{{i}}") {
		if !json.Valid([]byte(tmpl)) {
			return nil, usagef("submit: --input: not valid JSON")
		}
		return []jobSpec{{id: cmpOr(id, prefix), input: json.RawMessage(tmpl)}}, nil
	}
	specs := make([]jobSpec, count)
	for i := range specs {
		n := strconv.Itoa(i + 1)
		in := strings.ReplaceAll(tmpl, "{{i}}", n)
		if !json.Valid([]byte(in)) {
			return nil, usagef("submit: --input: not valid JSON (job %s after {{i}} substitution)", n)
		}
		jid := prefix + "-" + n
		if count == 1 {
			jid = cmpOr(id, prefix)
		}
		specs[i] = jobSpec{id: jid, input: json.RawMessage(in)}
	}
	return specs, nil
}

// readInputFile reads one job input per non-blank line.
func (c *cli) readInputFile(name, prefix string) ([]jobSpec, error) {
	var r io.Reader
	if name == "-" {
		r = c.stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, usagef("submit: --input-file: %v", err)
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxFileLine)
	var specs []jobSpec
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		if !json.Valid([]byte(text)) {
			return nil, usagef("submit: --input-file %s line %d: not valid JSON", name, line)
		}
		specs = append(specs, jobSpec{id: fmt.Sprintf("%s-%d", prefix, len(specs)+1), input: json.RawMessage(text)})
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		return nil, usagef("submit: --input-file %s line %d: longer than %d bytes (10 MiB), the largest input Runpod's /run accepts",
			name, line+1, client.MaxInputBytesDefault)
	} else if err != nil {
		return nil, usagef("submit: --input-file %s: %v", name, err)
	}
	if len(specs) == 0 {
		return nil, usagef("submit: --input-file %s: no job inputs", name)
	}
	return specs, nil
}

func (c *cli) submitOne(ctx context.Context, cl *client.Client, s jobSpec, timeout time.Duration) (client.SubmitResult, outcomeLine, error) {
	res, err := cl.Submit(ctx, client.SubmitOptions{ClientJobID: s.id, Input: s.input, InputHash: s.hash, Timeout: timeout})
	line := outcomeLine{ClientJobID: s.id}
	if err != nil {
		line.Error = err.Error()
		return res, line, err
	}
	line.Status, line.RunpodJobID = res.State, res.RunpodJobID
	line.Existing, line.Deduplicated = res.Existing, res.Deduplicated
	if res.Deduplicated {
		line.AnsweredBy = res.ClientJobID
	}
	return res, line, nil
}

// submitOnly submits and prints one line per job as it goes. Interrupted,
// it says how many it submitted; when Redis stops answering, it stops at
// once rather than failing every remaining job one by one.
func (c *cli) submitOnly(ctx context.Context, cl *client.Client, specs []jobSpec, timeout time.Duration) error {
	enc := json.NewEncoder(c.stdout)
	failed, submitted := 0, 0
	for _, s := range specs {
		if ctx.Err() != nil {
			break
		}
		_, line, err := c.submitOne(ctx, cl, s, timeout)
		if err != nil && ctx.Err() != nil {
			break // interrupted during this submit: not counted either way
		}
		if err != nil {
			if rerr := c.redisDown(ctx, cl); rerr != nil {
				return fmt.Errorf("submit: stopped: %w (submitted %d of %d jobs before)", rerr, submitted, len(specs))
			}
			failed++
		} else {
			submitted++
		}
		if err := enc.Encode(line); err != nil {
			return fmt.Errorf("submit: write: %w", err)
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("submit: interrupted: submitted %d of %d jobs (those run on; 'submitter cancel ID' cancels one): %w",
			submitted, len(specs), errInterrupted)
	}
	if failed > 0 {
		return fmt.Errorf("submit: %d of %d jobs were not submitted", failed, len(specs))
	}
	return nil
}

// errInterrupted: the command was interrupted (SIGINT/SIGTERM): exit 130.
var errInterrupted = errors.New("interrupted")

// redisDown reports, after a failed submit, whether Redis answers at all:
// a PING bounded by 2 s. nil means it does (the failure was the job's).
func (c *cli) redisDown(ctx context.Context, cl *client.Client) error {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		return fmt.Errorf("Redis does not answer: %w", err)
	}
	return nil
}

// warnNoWorker writes a warning when no worker reads the namespace (no
// consumer group, or no consumer active within a minute): the jobs will
// wait until one starts, which is usually a wrong --namespace.
func (c *cli) warnNoWorker(ctx context.Context, cl *client.Client, w io.Writer) bool {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := cl.Stats(sctx, client.StatsOptions{MaxEvents: 1})
	if err != nil || (st.GroupExists && (st.ActiveConsumers > 0 || st.LiveWorkers > 0)) {
		return false
	}
	why := "no consumer group reads its submissions stream"
	if st.GroupExists {
		why = "no worker reported in the last 30 s, and none read its submissions stream for a minute"
	}
	fmt.Fprintf(w, "submitter: warning: no worker reads namespace %q (%s); the jobs wait until a worker "+
		"starts on it. Is --namespace (or RUNPOD_NAMESPACE) the workers' one?\n", cl.Namespace(), why)
	return true
}

// submitAndWait submits every job, waits for all outcomes (one shared
// reader in the client), then prints one line per job in input order.
func (c *cli) submitAndWait(ctx context.Context, cl *client.Client, specs []jobSpec, timeout, waitTimeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()

	lines := make([]outcomeLine, len(specs))
	prog := newProgress(c.stderr, len(specs))
	stopProg := prog.start()

	todo := make(chan int)
	var wg sync.WaitGroup
	for range min(awaitParallel, len(specs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range todo {
				lines[i] = c.await(wctx, ctx, cl, lines[i])
				if lines[i].Status.Terminal() {
					prog.finish(lines[i].Status == workflow.StateCompleted)
				} // else still running on Runpod: neither done nor failed
			}
		}()
	}
	warned := false
	for i, s := range specs {
		if wctx.Err() != nil {
			lines[i] = outcomeLine{ClientJobID: s.id, Error: "not submitted: interrupted"}
			continue
		}
		res, line, err := c.submitOne(wctx, cl, s, timeout)
		lines[i] = line
		if err != nil {
			if wctx.Err() == nil {
				if rerr := c.redisDown(wctx, cl); rerr != nil {
					close(todo)
					wg.Wait()
					stopProg()
					return fmt.Errorf("submit: stopped: %w (submitted %d of %d jobs before)", rerr, i, len(specs))
				}
			}
			prog.finish(false)
			continue
		}
		if !warned {
			warned = true
			c.warnNoWorker(wctx, cl, prog)
		}
		// Await the answering job (the dedupe target, if any).
		lines[i].AnsweredBy = res.ClientJobID
		todo <- i
	}
	close(todo)
	wg.Wait()
	stopProg()

	enc := json.NewEncoder(c.stdout)
	incomplete := 0
	var running []string
	for _, l := range lines {
		if l.AnsweredBy == l.ClientJobID {
			l.AnsweredBy = ""
		}
		if l.Status != workflow.StateCompleted {
			incomplete++
		}
		if l.Status != "" && !l.Status.Terminal() {
			running = append(running, cmpOr(l.AnsweredBy, l.ClientJobID))
		}
		if err := enc.Encode(l); err != nil {
			return fmt.Errorf("submit: write: %w", err)
		}
	}
	if len(running) > 0 {
		c.stillRunning(running)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("submit: interrupted while waiting: %d of %d jobs have no outcome yet: %w",
			incomplete, len(specs), errInterrupted)
	}
	if incomplete > 0 {
		return fmt.Errorf("submit: %d of %d jobs did not complete: %w", incomplete, len(specs), errIncomplete)
	}
	return nil
}

// stillRunning says that the jobs the wait gave up on keep running (on
// Runpod or in the queue) and how to cancel them.
func (c *cli) stillRunning(ids []string) {
	shown := ids[:min(len(ids), 10)]
	more := ""
	if len(ids) > len(shown) {
		more = fmt.Sprintf(" (and %d more)", len(ids)-len(shown))
	}
	fmt.Fprintf(c.stderr, "submitter: %d jobs are still running (on Runpod or waiting for a worker); stopping the wait "+
		"does not stop them. Follow them with 'submitter get ID', cancel one with 'submitter cancel ID': %s%s\n",
		len(ids), strings.Join(shown, " "), more)
}

// await fills line with the outcome of the job answering for it. When the
// wait ends early, the line shows the job's current state and why.
func (c *cli) await(wctx, ctx context.Context, cl *client.Client, line outcomeLine) outcomeLine {
	target := cmpOr(line.AnsweredBy, line.ClientJobID)
	r, err := cl.AwaitResult(wctx, target)
	if err == nil {
		line.Status, line.RunpodJobID, line.Output, line.Error = r.Status, r.RunpodID, r.Output, r.Error
		return line
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		line.Error = "still running when the --timeout ran out"
	case ctx.Err() != nil:
		line.Error = "still running when the wait was interrupted"
	default:
		line.Error = err.Error()
	}
	// Report where the job stands, if Redis still answers quickly.
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if job, gerr := cl.Get(gctx, target); gerr == nil {
		line.Status, line.RunpodJobID = job.State, job.RunpodID
	}
	return line
}

// progress reports a --wait run on stderr: a bar on a terminal, plain
// periodic lines otherwise.
type progress struct {
	w      io.Writer
	total  int
	begin  time.Time
	done   atomic.Int64 // completed
	failed atomic.Int64 // ended otherwise
	bar    *progressbar.ProgressBar
	mu     sync.Mutex // guards bar
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, begin: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("jobs"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("jobs"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	return p
}

// finish counts one job that ended.
func (p *progress) finish(completed bool) {
	if completed {
		p.done.Add(1)
	} else {
		p.failed.Add(1)
	}
	if p.bar != nil {
		p.mu.Lock()
		p.bar.Describe(fmt.Sprintf("jobs (failed %d)", p.failed.Load()))
		_ = p.bar.Add(1)
		p.mu.Unlock()
	}
}

// Write writes to the progress's stream under its lock, so notes and the
// progress lines never interleave.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Write(b)
}

// line renders the plain progress line.
func (p *progress) line() string {
	done, failed := p.done.Load(), p.failed.Load()
	elapsed := time.Since(p.begin).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done+failed) / elapsed
	}
	return fmt.Sprintf("done %d/%d failed %d in-flight %d rate %.1f/s",
		done, p.total, failed, int64(p.total)-done-failed, rate)
}

// start begins periodic plain lines (no bar); the returned function stops
// them and prints the final line.
func (p *progress) start() (stop func()) {
	if p.bar != nil {
		return func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			_ = p.bar.Finish()
		}
	}
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_, _ = p.Write([]byte(p.line() + "\n"))
			case <-quit:
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-exited
		fmt.Fprintln(p.w, p.line())
	}
}

// randomID returns a short random run id for job ids.
func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "run-" + hex.EncodeToString(b[:])
}
