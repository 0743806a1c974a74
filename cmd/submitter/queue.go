package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

func parseState(v string) (workflow.State, error) {
	if v == "" {
		return "", nil
	}
	st := workflow.State(strings.ToUpper(v))
	if !st.Valid() {
		return "", usagef("--state %q: want SUBMITTED, QUEUED, IN_PROGRESS, COMPLETED, FAILED, TIMED_OUT or CANCELED", v)
	}
	return st, nil
}

func (c *cli) stats(ctx context.Context, g *globals, args []string) error {
	fs := c.newFlagSet(g, "stats", "", "Show the namespace's queue: submissions not yet read by any worker (backlog) and\n"+
		"their age, delivered ones (pending), dead letters, consumers, each worker's report\n"+
		"(jobs in flight by state, Runpod calls and errors) and outcomes per minute.")
	asJSON := fs.Bool("json", false, "print the stats as one JSON object")
	window := fs.Duration("window", time.Minute, "count outcomes over this `duration`")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("stats: unexpected argument %q", pos[0])
	}
	if *window <= 0 {
		return usagef("stats: --window %v: must be positive", *window)
	}
	cl, closeFn, err := g.connect(client.Config{})
	if err != nil {
		return err
	}
	defer closeFn()
	st, err := cl.Stats(ctx, client.StatsOptions{Window: *window})
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	if *asJSON {
		return writeJSON(c, st)
	}
	w := c.stdout
	fmt.Fprintf(w, "namespace %s\n", st.Namespace)
	fmt.Fprintf(w, "backlog %d (not yet read by a worker), oldest waiting %s\n", st.Backlog, st.OldestWaiting.Round(time.Second))
	fmt.Fprintf(w, "pending %d (delivered to a worker, not finished)\n", st.Pending)
	fmt.Fprintf(w, "in flight by state: %s\n", stateCounts(st.InFlightByState))
	fmt.Fprintf(w, "dead letters %d\n", st.DeadLetters)
	fmt.Fprintf(w, "outcomes in the last %s: %s (%.1f/min)\n", st.Window, stateCounts(st.Outcomes), st.OutcomesPerMinute)
	fmt.Fprintf(w, "runpod calls: %s\n", opCounts(st.RunpodCalls, st.RunpodErrors))
	fmt.Fprintf(w, "gpu time (runpod executionTime of finished runs): %s\n", gpuCounts(st.GPU))
	fmt.Fprintf(w, "consumers %d, active %d\n", len(st.Consumers), st.ActiveConsumers)
	for _, cs := range st.Consumers {
		fmt.Fprintf(w, "  %s pending %d idle %s\n", cs.Name, cs.Pending, cs.Idle.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "workers %d (live %d)\n", len(st.Workers), st.LiveWorkers)
	for _, wk := range st.Workers {
		state := "seen " + st.At.Sub(wk.Seen).Round(time.Second).String() + " ago"
		if wk.Stale {
			state += " (stale: stopped or unreachable)"
		}
		if wk.Fault != "" {
			state += ", FAULT: " + wk.Fault
		}
		fmt.Fprintf(w, "  %s %s in flight %d, %s\n", wk.Instance, wk.Version, wk.InFlight, state)
	}
	if st.ActiveConsumers == 0 && st.LiveWorkers == 0 && st.Backlog > 0 {
		fmt.Fprintf(w, "warning: %d submissions wait and no worker reads namespace %q (is a worker running on this namespace?)\n",
			st.Backlog, st.Namespace)
	}
	return nil
}

func stateCounts(m map[workflow.State]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[workflow.State(k)])
	}
	return strings.Join(parts, ", ")
}

func opCounts(calls, errs map[string]uint64) string {
	if len(calls) == 0 {
		return "none reported"
	}
	parts := []string{}
	for _, op := range sortedKeys(calls) {
		parts = append(parts, fmt.Sprintf("%s %d (errors %d)", op, calls[op], errs[op]))
	}
	return strings.Join(parts, ", ")
}

func (c *cli) list(ctx context.Context, g *globals, args []string) error {
	fs := c.newFlagSet(g, "list", "", "Print job records as JSON lines, oldest first within each page, optionally only\n"+
		"those in one state. It scans the namespace's records (one pass over its keys).")
	state := fs.String("state", "", "only jobs in this `state` (SUBMITTED, QUEUED, IN_PROGRESS, COMPLETED, FAILED, TIMED_OUT, CANCELED)")
	limit := fs.Int("limit", 100, "print at most about `N` jobs")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("list: unexpected argument %q", pos[0])
	}
	st, err := parseState(*state)
	if err != nil {
		return err
	}
	if *limit < 1 {
		return usagef("list: --limit %d: must be at least 1", *limit)
	}
	cl, closeFn, err := g.connect(client.Config{})
	if err != nil {
		return err
	}
	defer closeFn()
	printed := 0
	cursor := uint64(0)
	for printed < *limit {
		page, err := cl.List(ctx, client.ListOptions{State: st, Limit: *limit - printed, Cursor: cursor})
		if err != nil {
			return fmt.Errorf("list: %w", err)
		}
		for _, j := range page.Jobs {
			if printed >= *limit {
				break
			}
			if err := writeJSON(c, j); err != nil {
				return err
			}
			printed++
		}
		if page.NextCursor == 0 {
			break
		}
		cursor = page.NextCursor
	}
	return nil
}

func (c *cli) dead(ctx context.Context, g *globals, args []string) error {
	fs := c.newFlagSet(g, "dead", "", "Print the dead-letter stream ({ns}:dead) as JSON lines, oldest first: each\n"+
		"submission refused as poison, why, and when. Redrive them with 'submitter retry --dead'.")
	after := fs.String("after", "", "start after this `position`: an entry's \"cursor\" (one id per partition) or a dead-letter id")
	limit := fs.Int("limit", 100, "print at most `N` entries")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("dead: unexpected argument %q", pos[0])
	}
	if *limit < 1 {
		return usagef("dead: --limit %d: must be at least 1", *limit)
	}
	cl, closeFn, err := g.connect(client.Config{})
	if err != nil {
		return err
	}
	defer closeFn()
	entries, err := cl.Dead(ctx, client.DeadOptions{After: *after, Limit: *limit})
	if err != nil {
		return fmt.Errorf("dead: %w", err)
	}
	for _, d := range entries {
		if err := writeJSON(c, d); err != nil {
			return err
		}
	}
	return nil
}

func (c *cli) retry(ctx context.Context, g *globals, args []string) error {
	fs := c.newFlagSet(g, "retry", "ID", "Run a FAILED, TIMED_OUT or CANCELED job again under the same id, as a new run:\n"+
		"its events carry the run, and each run has one terminal outcome. A COMPLETED job\n"+
		"is refused. The input is the record's (persisted) or the job's dead-letter copy.\n"+
		"With --dead (and no ID), redrive every job of the dead-letter stream once.")
	all := fs.Bool("dead", false, "retry every job of the dead-letter stream and remove the entries retried")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *all && len(pos) > 0:
		return usagef("retry: --dead takes no job ID")
	case !*all && len(pos) != 1:
		return usagef("retry: want exactly one job ID (or --dead), have %d arguments", len(pos))
	}
	cl, closeFn, err := g.connect(client.Config{})
	if err != nil {
		return err
	}
	defer closeFn()
	if !*all {
		res, err := cl.Retry(ctx, pos[0])
		if errors.Is(err, client.ErrCompleted) {
			return fmt.Errorf("retry: job %s COMPLETED; a completed job is not run again", pos[0])
		}
		if err != nil {
			return fmt.Errorf("retry: %w", err)
		}
		return writeJSON(c, res)
	}
	done, skipped, err := cl.RetryDead(ctx, client.DeadOptions{Limit: 100_000})
	for _, r := range done {
		if werr := writeJSON(c, r); werr != nil {
			return werr
		}
	}
	for _, id := range sortedKeys(skipped) {
		fmt.Fprintf(c.stderr, "submitter: retry --dead: %s not retried: %v\n", id, skipped[id])
	}
	if err != nil {
		return fmt.Errorf("retry --dead: %w", err)
	}
	fmt.Fprintf(c.stderr, "retried %d jobs, %d not retried\n", len(done), len(skipped))
	return nil
}

func (c *cli) purge(ctx context.Context, g *globals, args []string) error {
	fs := c.newFlagSet(g, "purge", "", "Delete the records of finished jobs before their result TTL (all terminal\n"+
		"states, or --state S), and with --dead the dead-letter stream. Live jobs,\n"+
		"submissions and events are never touched. Nothing is deleted without --yes.")
	state := fs.String("state", "", "only finished jobs in this `state` (COMPLETED, FAILED, TIMED_OUT, CANCELED)")
	deadToo := fs.Bool("dead", false, "also empty the dead-letter stream")
	yes := fs.Bool("yes", false, "really delete (the confirmation)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("purge: unexpected argument %q", pos[0])
	}
	st, err := parseState(*state)
	if err != nil {
		return err
	}
	if st != "" && !st.Terminal() {
		return usagef("purge: --state %s: only finished jobs can be purged (COMPLETED, FAILED, TIMED_OUT, CANCELED)", st)
	}
	what := "every finished job's record"
	if st != "" {
		what = "the records of " + string(st) + " jobs"
	}
	if *deadToo {
		what += " and the dead-letter stream"
	}
	if !*yes {
		return usagef("purge: would delete %s in namespace %q; run again with --yes to do it", what, g.namespace)
	}
	cl, closeFn, err := g.connect(client.Config{})
	if err != nil {
		return err
	}
	defer closeFn()
	opts := client.PurgeOptions{DeadLetters: *deadToo}
	if st != "" {
		opts.States = []workflow.State{st}
	}
	res, err := cl.Purge(ctx, opts)
	if err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	return writeJSON(c, res)
}

// gpuCounts renders GPU seconds per endpoint ("" is shown as "(unnamed)").
func gpuCounts(m map[string]client.GPUUsage) string {
	if len(m) == 0 {
		return "none"
	}
	parts := []string{}
	for _, ep := range sortedKeys(m) {
		name := ep
		if name == "" {
			name = "(unnamed)"
		}
		parts = append(parts, fmt.Sprintf("endpoint %s %.1f gpu-s over %d runs", name, m[ep].Seconds, m[ep].Runs))
	}
	return strings.Join(parts, ", ")
}
