package main

// --callgrind: the server's instructions per job, counted by valgrind's
// callgrind rather than timed, so a figure repeats from run to run and does
// not move with the machine's load. One redis-server runs under callgrind;
// asynq's enqueue and drain, our submit and drain (internal/bench, as in a
// timed round) and then each of our hot scripts alone
// (bench.ProfileScripts, fixed batches) run on it one after the other, and
// callgrind_control dumps the counters at every phase boundary, so each
// dump holds exactly one phase.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/yourscope/runpod-orchestrator/internal/bench"
)

// phaseCount is one phase's instructions, per job.
type phaseCount struct {
	Phase string `json:"phase"`
	// Instructions: every instruction the server executed in the phase
	// but its timer (serverCron, whose count grows with the wall-clock
	// time, and under valgrind that time is long), per job.
	Instructions float64 `json:"instructions_per_job"`
	// Commands: inside processCommand (parsing excluded, executing
	// included: for EVALSHA the whole script), per job.
	Commands float64 `json:"in_commands_per_job"`
	// Scripts: inside EVAL/EVALSHA (evalGenericCommand), per job, and of
	// that the commands the scripts called (scriptCall): Scripts −
	// ScriptCommands is Lua interpretation and value conversion.
	Scripts        float64 `json:"in_scripts_per_job"`
	ScriptCommands float64 `json:"in_script_commands_per_job"`
	// Reader: inside XREAD, per job: on our side the bench's own outcome
	// reader (an events subscription, as a client's AwaitResult), which
	// asynq's side has no counterpart of.
	Reader float64 `json:"in_xread_per_job"`
	// Cron is serverCron's count, left out of Instructions (total, not
	// per job).
	Cron int64  `json:"cron_total"`
	Dump string `json:"dump"`
}

type callgrindReport struct {
	Jobs   int          `json:"jobs"`
	Batch  int          `json:"profile_batch"`
	Redis  string       `json:"redis"`
	Phases []phaseCount `json:"phases"`
	// Happy path, submit to outcome: ours (submit + drain) and asynq's
	// (enqueue + drain), and their ratio.
	Ours  float64 `json:"ours_instructions_per_job"`
	Asynq float64 `json:"asynq_instructions_per_job"`
	Ratio float64 `json:"ratio_ours_to_asynq"`
}

// dumper dumps callgrind's counters of one process with a label each;
// labels[i] names dump i+1. "-" marks a dump of nothing measured (the
// time between phases).
type dumper struct {
	pid    int
	labels []string
	cur    string
}

func (d *dumper) dump(ctx context.Context, label string) error {
	// The dump's trigger names it by number (a label's spaces and
	// punctuation do not survive callgrind_control's command line).
	out, err := exec.CommandContext(ctx, "callgrind_control", fmt.Sprintf("--dump=phase%d", len(d.labels)+1),
		strconv.Itoa(d.pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("callgrind_control --dump: %w: %s", err, out)
	}
	d.labels = append(d.labels, label)
	return nil
}

// marker returns a phase-mark function: each mark dumps what ran since the
// previous one under the previous phase's name (prefix + phase), then
// starts the next.
func (d *dumper) marker(ctx context.Context, prefix string) func(string) error {
	d.cur = ""
	return func(next string) error {
		label := "-"
		if d.cur != "" {
			label = prefix + d.cur
		}
		if err := d.dump(ctx, label); err != nil {
			return err
		}
		d.cur = next
		return nil
	}
}

func countInstructions(ctx context.Context, o options, stderr io.Writer) (callgrindReport, error) {
	progress := func(format string, a ...any) {
		if !o.quiet {
			fmt.Fprintf(stderr, "peers: "+format+"\n", a...)
		}
	}
	rep := callgrindReport{Jobs: o.jobs, Batch: o.profileBatch}
	dir, err := filepath.Abs(o.callgrind)
	if err != nil {
		return rep, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return rep, err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "callgrind.out*"))
	for _, f := range old {
		os.Remove(f)
	}
	base := filepath.Join(dir, "callgrind.out")
	progress("starting redis-server under callgrind (dumps in %s)", dir)
	srv, err := startRedis(ctx, o.redisServer, base)
	if err != nil {
		return rep, err
	}
	defer srv.stop()
	rep.Redis = srv.version
	d := &dumper{pid: srv.cmd.Process.Pid}
	silent := func(string, ...any) {}

	// Each side first runs a few jobs unmeasured, so its scripts are in the
	// server's cache (compiled once per server, not a cost per job) before
	// its counted phases; FLUSHALL keeps the script cache.
	warm := o
	warm.jobs = 20
	flush := func() error { return srv.rdb.FlushAll(ctx).Err() }
	if err := flush(); err != nil {
		return rep, err
	}
	if !o.scriptsOnly {
		progress("asynq: %d tasks", o.jobs)
		if _, err := runAsynq(ctx, warm, srv, silent, nil); err != nil {
			return rep, fmt.Errorf("asynq: warm-up: %w", err)
		}
		if err := flush(); err != nil {
			return rep, err
		}
		if _, err := runAsynq(ctx, o, srv, silent, d.marker(ctx, "asynq ")); err != nil {
			return rep, fmt.Errorf("asynq: %w", err)
		}
		progress("ours: %d jobs", o.jobs)
		if err := flush(); err != nil {
			return rep, err
		}
		if _, err := runOurs(ctx, warm, srv, silent, nil); err != nil {
			return rep, fmt.Errorf("ours: warm-up: %w", err)
		}
		if err := flush(); err != nil {
			return rep, err
		}
		if _, err := runOurs(ctx, o, srv, silent, d.marker(ctx, "ours ")); err != nil {
			return rep, fmt.Errorf("ours: %w", err)
		}
	}
	progress("ours, script by script: %d jobs in batches of %d", o.jobs, o.profileBatch)
	if err := srv.rdb.FlushAll(ctx).Err(); err != nil {
		return rep, err
	}
	if err := bench.ProfileScripts(ctx, srv.rdb, "peers", o.jobs, o.profileBatch, d.marker(ctx, "script ")); err != nil {
		return rep, fmt.Errorf("scripts: %w", err)
	}

	jf := float64(o.jobs)
	byPhase := map[string]float64{}
	files, err := dumpFiles(base, len(d.labels))
	if err != nil {
		return rep, err
	}
	for i, label := range d.labels {
		if label == "-" {
			continue
		}
		file := files[i]
		c, err := readDump(ctx, file)
		if err != nil {
			return rep, err
		}
		pc := phaseCount{Phase: label, Dump: filepath.Base(file), Cron: c.cron,
			Instructions: round(float64(c.total-c.cron)/jf, 0), Commands: round(float64(c.processCommand)/jf, 0),
			Scripts: round(float64(c.eval)/jf, 0), ScriptCommands: round(float64(c.scriptCall)/jf, 0),
			Reader: round(float64(c.xread)/jf, 0)}
		byPhase[label] = pc.Instructions
		rep.Phases = append(rep.Phases, pc)
	}
	rep.Ours = byPhase["ours submit"] + byPhase["ours drain"]
	rep.Asynq = byPhase["asynq enqueue"] + byPhase["asynq drain"]
	if rep.Asynq > 0 {
		rep.Ratio = round(rep.Ours/rep.Asynq, 2)
	}
	return rep, nil
}

// dumpFiles finds the file of each numbered dump (phase1 … phaseN) by the
// trigger callgrind writes into it, waiting for every one to be written.
func dumpFiles(base string, n int) ([]string, error) {
	trigger := regexp.MustCompile(`(?m)^desc: Trigger: .*phase(\d+)\s*$`)
	files := make([]string, n)
	for try := 0; ; try++ {
		found := 0
		paths, _ := filepath.Glob(base + ".*")
		for _, p := range paths {
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			head := make([]byte, 4096)
			k, _ := io.ReadFull(f, head)
			f.Close()
			if m := trigger.FindSubmatch(head[:k]); m != nil {
				if i, _ := strconv.Atoi(string(m[1])); i >= 1 && i <= n {
					files[i-1] = p
				}
			}
		}
		for _, f := range files {
			if f != "" {
				found++
			}
		}
		if found == n {
			return files, nil
		}
		if try == 600 {
			return nil, fmt.Errorf("callgrind: %d of %d dumps found beside %s", found, n, base)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type dumpCounts struct {
	total, cron, processCommand, eval, scriptCall, xread int64
}

var inclusiveLine = regexp.MustCompile(`^\s*([\d,]+)\s+\([^)]*\)\s+\S*:(\S+)\s`)

// readDump reads a dump's total and, from callgrind_annotate's inclusive
// counts, the functions the report splits by.
func readDump(ctx context.Context, file string) (dumpCounts, error) {
	var c dumpCounts
	// callgrind_control returns once the dump is requested; the file is
	// complete when its totals line is written.
	for i := 0; ; i++ {
		b, err := os.ReadFile(file)
		if err == nil {
			if m := regexp.MustCompile(`(?m)^totals:\s*(\d+)`).FindSubmatch(b); m != nil {
				c.total, _ = strconv.ParseInt(string(m[1]), 10, 64)
				break
			}
		}
		if i == 600 {
			return c, fmt.Errorf("dump %s: no totals line", file)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := exec.CommandContext(ctx, "callgrind_annotate", "--inclusive=yes", "--threshold=100", file).Output()
	if err != nil {
		return c, fmt.Errorf("callgrind_annotate %s: %w", file, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := inclusiveLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		n, _ := strconv.ParseInt(strings.ReplaceAll(m[1], ",", ""), 10, 64)
		switch m[2] {
		case "serverCron":
			c.cron = max(c.cron, n)
		case "processCommand":
			c.processCommand = max(c.processCommand, n)
		case "evalGenericCommand":
			c.eval = max(c.eval, n)
		case "scriptCall":
			c.scriptCall = max(c.scriptCall, n)
		case "xreadCommand":
			c.xread = max(c.xread, n)
		}
	}
	return c, sc.Err()
}

func printInstructions(w io.Writer, r callgrindReport) {
	fmt.Fprintf(w, "\nRedis instructions per job under callgrind, %d jobs, redis %s (serverCron left out); per-script phases in batches of %d\n\n",
		r.Jobs, r.Redis, r.Batch)
	fmt.Fprintf(w, "%-44s %10s %10s %10s %16s %10s\n", "phase", "instr/job", "commands", "scripts", "scripts' cmds", "XREAD")
	for _, p := range r.Phases {
		fmt.Fprintf(w, "%-44s %10.0f %10.0f %10.0f %16.0f %10.0f\n", p.Phase, p.Instructions, p.Commands, p.Scripts,
			p.ScriptCommands, p.Reader)
	}
	if r.Asynq > 0 {
		fmt.Fprintf(w, "\nsubmit to outcome: ours %.0f, asynq %.0f instructions per job: %.2fx\n", r.Ours, r.Asynq, r.Ratio)
	}
}
