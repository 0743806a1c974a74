package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/yourscope/runpod-orchestrator/client"
)

// errViolations: audit found broken invariants (exit status 1).
var errViolations = errors.New("audit found violations")

// oneID parses a command that takes exactly one job id.
func (c *cli) oneID(g *globals, name, summary string, args []string) (string, error) {
	fs := c.newFlagSet(g, name, "ID", summary)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", usagef("%s: want exactly one job ID, have %d arguments", name, len(pos))
	}
	return pos[0], nil
}

func (c *cli) get(ctx context.Context, g *globals, args []string) error {
	id, err := c.oneID(g, "get", "Print the record of job ID as one JSON line.", args)
	if err != nil {
		return err
	}
	cl, closeFn, err := g.connect(client.Config{})
	if err != nil {
		return err
	}
	defer closeFn()
	job, err := cl.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	return writeJSON(c, job)
}

func (c *cli) cancel(ctx context.Context, g *globals, args []string) error {
	id, err := c.oneID(g, "cancel", "Ask for job ID to be cancelled and print its state at that moment.\n"+
		"The outcome follows later (submitter get ID, or the events).", args)
	if err != nil {
		return err
	}
	cl, closeFn, err := g.connect(client.Config{})
	if err != nil {
		return err
	}
	defer closeFn()
	r, err := cl.RequestCancel(ctx, id)
	pending := errors.Is(err, client.ErrCancelPending)
	if err != nil && !pending {
		return fmt.Errorf("cancel: %w", err)
	}
	if r.HintError != "" {
		// The cancel stands; only the nudge failed. Say both, precisely.
		fmt.Fprintf(c.stderr, "submitter: the cancel of %s is recorded, but its hint to the workers was not published (%s);"+
			" the job's worker acts on it at its next check of the record instead of at once\n", id, r.HintError)
	}
	// pending: no job with this id yet; the cancel waits for it.
	// hintPublished/hintReceivers: whether the workers were nudged at once.
	out := struct {
		ClientJobID   string `json:"clientJobId"`
		State         string `json:"state"`
		Pending       bool   `json:"pending,omitempty"`
		HintPublished *bool  `json:"hintPublished,omitempty"`
		HintReceivers *int64 `json:"hintReceivers,omitempty"`
		HintError     string `json:"hintError,omitempty"`
	}{ClientJobID: id, State: string(r.State), Pending: pending, HintError: r.HintError}
	if r.Requested {
		published := r.HintError == ""
		out.HintPublished = &published
		if published {
			out.HintReceivers = &r.HintReceivers
		}
	}
	return writeJSON(c, out)
}

// writeEvent prints ev as one JSON line with "position", the subscription's
// position after it (one id per partition, comma-separated; with one
// partition the event's id): what --from resumes after. An event's id alone
// applies to every partition, and ids repeat across partitions.
func writeEvent(w io.Writer, ev client.Event, position string) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	pos, err := json.Marshal(position)
	if err != nil {
		return err
	}
	line := append(b[:len(b)-1:len(b)-1], `,"position":`...)
	line = append(append(line, pos...), "}\n"...)
	_, err = w.Write(line)
	return err
}

// parseFrom maps the --from flag to a client position.
func parseFrom(flagName, v string) (string, error) {
	switch strings.ToLower(v) {
	case "now", "$":
		return client.FromNow, nil
	case "", "start", "0":
		return client.FromStart, nil
	}
	if (client.EventsOptions{From: v}).Validate() != nil {
		return "", usagef("--%s %q: want 0 (start), now, a stream id like 1700000000000-0, or a printed event's position (one id per partition, comma-separated)", flagName, v)
	}
	return v, nil
}

func (c *cli) events(ctx context.Context, g *globals, args []string) error {
	fs := c.newFlagSet(g, "events", "", "Print events as JSON lines, oldest first. Without --follow, stop at the end\n"+
		"of the stream; with it, keep printing new events until interrupted.")
	from := fs.String("from", "0", "start after this `position`: a printed event's \"position\" (one id per partition), 0 = the beginning, now = only new events")
	follow := fs.Bool("follow", false, "keep waiting for new events")
	job := fs.String("job", "", "only the events of this job `ID`")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("events: unexpected argument %q", pos[0])
	}
	start, err := parseFrom("from", *from)
	if err != nil {
		return err
	}
	opts := client.EventsOptions{From: start, JobID: *job, StopAtEnd: !*follow}
	if err := opts.Validate(); err != nil {
		return usagef("events: --job: %v", err)
	}
	cl, closeFn, err := g.connect(client.Config{})
	if err != nil {
		return err
	}
	defer closeFn()
	sub, err := cl.NewSubscription(ctx, opts)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	err = sub.Run(ctx, func(ev client.Event) error { return writeEvent(c.stdout, ev, sub.Position()) })
	if *follow && errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil // interrupted: the normal end of --follow
	}
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return nil
}

func (c *cli) audit(ctx context.Context, g *globals, args []string) error {
	fs := c.newFlagSet(g, "audit", "", "Replay the events stream, rebuild every job's history and check that each job\n"+
		"has at most one terminal event, nothing after it, legal state transitions, and\n"+
		"(from the start) a submitted event first. Print a summary; the exit status is 1\n"+
		"if any invariant is broken. Jobs without a terminal event yet are in flight.")
	from := fs.String("from", "0", "replay after this stream `id` (0 = the beginning); jobs first seen mid-history are not faulted")
	asJSON := fs.Bool("json", false, "print the full report as JSON instead of a summary")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("audit: unexpected argument %q", pos[0])
	}
	start, err := parseFrom("from", *from)
	if err != nil {
		return err
	}
	if start == client.FromNow {
		return usagef("--from now: an audit replays existing events; give 0 or a stream id")
	}
	cl, closeFn, err := g.connect(client.Config{})
	if err != nil {
		return err
	}
	defer closeFn()
	rep, err := cl.Audit(ctx, client.AuditOptions{From: start})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if *asJSON {
		if err := writeJSON(c, rep); err != nil {
			return err
		}
	} else {
		printSummary(c, rep)
	}
	if !rep.OK() {
		return fmt.Errorf("audit: %d violations: %w", len(rep.Violations), errViolations)
	}
	return nil
}

// inFlightShown caps the in-flight ids listed in a summary.
const inFlightShown = 20

func printSummary(c *cli, r client.AuditReport) {
	w := c.stdout
	fmt.Fprintf(w, "events %d from %s, jobs %d: terminal %d, in flight %d, aliases %d\n",
		r.Events, r.From, r.Jobs, r.Terminal, len(r.InFlight), r.Aliases)
	states := make(map[string]int, len(r.ByState))
	for st, n := range r.ByState {
		states[string(st)] = n
	}
	parts := []string{}
	for _, st := range sortedKeys(states) {
		parts = append(parts, fmt.Sprintf("%s %d", st, states[st]))
	}
	fmt.Fprintf(w, "by state: %s\n", strings.Join(parts, ", "))
	if r.Undecodable+r.Unattributed > 0 {
		fmt.Fprintf(w, "undecodable events %d, events without a job %d\n", r.Undecodable, r.Unattributed)
	}
	if n := len(r.InFlight); n > 0 {
		shown := r.InFlight[:min(n, inFlightShown)]
		more := ""
		if n > len(shown) {
			more = fmt.Sprintf(" (and %d more)", n-len(shown))
		}
		fmt.Fprintf(w, "in flight: %s%s\n", strings.Join(shown, " "), more)
	}
	if r.PossibleDuplicateGPUJobs > 0 {
		// Not violations: the documented /run windows (an uncertain answer,
		// a takeover inside the window), each a Runpod job that may run
		// untracked.
		shown := r.UncertainJobs[:min(len(r.UncertainJobs), inFlightShown)]
		fmt.Fprintf(w, "possible duplicate GPU jobs: %d (uncertain /run attempts; jobs: %s)\n",
			r.PossibleDuplicateGPUJobs, strings.Join(shown, " "))
	}
	fmt.Fprintf(w, "violations: %d\n", len(r.Violations))
	for _, v := range r.Violations {
		fmt.Fprintf(w, "  %s\n", v)
	}
}

func writeJSON(c *cli, v any) error {
	if err := json.NewEncoder(c.stdout).Encode(v); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
