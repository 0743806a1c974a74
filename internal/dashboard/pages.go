package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// fragmentHeader asks for the page's live part only (assets/app.js).
const fragmentHeader = "X-Dashboard-Fragment"

// allStates in lifecycle order.
var allStates = []workflow.State{
	workflow.StateSubmitted, workflow.StateQueued, workflow.StateInProgress,
	workflow.StateCompleted, workflow.StateFailed, workflow.StateTimedOut, workflow.StateCanceled,
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05.000Z")
	},
	"dur": func(d time.Duration) string {
		if d <= 0 {
			return "—"
		}
		if d < time.Second {
			return d.Round(time.Millisecond).String()
		}
		return d.Round(100 * time.Millisecond).String()
	},
	"pretty": prettyJSON,
	"lower":  func(s workflow.State) string { return strings.ToLower(string(s)) },
	"trunc": func(n int, s string) string {
		if len(s) <= n {
			return s
		}
		return s[:n] + "…"
	},
	"terminal":  func(s workflow.State) bool { return s.Terminal() },
	"retryable": retryable,
	"query":     url.QueryEscape,
}

// retryable reports whether Retry accepts a job in state s.
func retryable(s workflow.State) bool { return s.Terminal() && s != workflow.StateCompleted }

// parsePages parses layout.html with each page template.
func parsePages(base string) (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range []string{"overview", "jobs", "job", "dead", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).Funcs(template.FuncMap{
			"base": func() string { return base },
		}).ParseFS(assets, "assets/layout.html", "assets/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: parse %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// page is what every template gets.
type page struct {
	Title     string
	Nav       string // the active tab
	Namespace string
	Live      string // what refreshes the live part: "all", "job", "events"
	Job       string // the job a job page follows
	Flash     string
	FlashBad  bool
	Data      any
}

// render writes the page, or only its "live" block for a fragment request.
func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, code int, p page) {
	p.Namespace = s.cli.Namespace()
	var buf bytes.Buffer
	t := s.pages[name]
	var err error
	if r.Header.Get(fragmentHeader) != "" {
		err = t.ExecuteTemplate(&buf, "live", p)
	} else {
		err = t.Execute(&buf, p)
	}
	if err != nil {
		s.log.Error("render", "page", name, "error", err)
		http.Error(w, "dashboard: could not render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// fail shows a page saying Redis could not be read. The error itself is
// logged, never shown: the page must not carry addresses or credentials.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.log.Warn("page failed", "path", r.URL.Path, "reading", what, "error", err)
	s.render(w, r, "error", http.StatusServiceUnavailable, page{Title: "Unavailable",
		Data: "Could not read " + what + " from Redis; the dashboard's log says why."})
}

// stateCount is a count of job records by state.
type stateCount struct {
	By      map[workflow.State]int
	Total   int
	Partial bool // more than MaxScan records: the counts cover the first MaxScan
}

// countStates scans the job records (cached for stateCacheFor).
func (s *Server) countStates(ctx context.Context) (stateCount, error) {
	s.mu.Lock()
	if s.statesValid && time.Since(s.statesAt) < stateCacheFor {
		c := s.states
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	c := stateCount{By: map[workflow.State]int{}}
	var cursor uint64
	for {
		pg, err := s.cli.List(ctx, client.ListOptions{Limit: 1000, Cursor: cursor})
		if err != nil {
			return stateCount{}, err
		}
		for _, j := range pg.Jobs {
			if j.AliasOf != "" {
				continue // an alias's outcome is its target's
			}
			c.By[j.State]++
			c.Total++
		}
		cursor = pg.NextCursor
		if cursor == 0 {
			break
		}
		if c.Total >= s.cfg.MaxScan {
			c.Partial = true
			break
		}
	}
	s.mu.Lock()
	s.states, s.statesAt, s.statesValid = c, time.Now(), true
	s.mu.Unlock()
	return c, nil
}

// invalidateStates drops the cached count (after a Retry or Cancel).
func (s *Server) invalidateStates() {
	s.mu.Lock()
	s.statesValid = false
	s.mu.Unlock()
}

type stateRow struct {
	State workflow.State
	Count int
}

type overviewData struct {
	Stats      client.Stats
	States     []stateRow
	Total      int
	Partial    bool
	InFlight   []stateRow
	QueueChart template.HTML
	RateChart  template.HTML
	Samples    int
	Interval   time.Duration
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st, err := s.cli.Stats(ctx, client.StatsOptions{})
	if err != nil {
		s.fail(w, r, "the queue", err)
		return
	}
	sc, err := s.countStates(ctx)
	if err != nil {
		s.fail(w, r, "the job records", err)
		return
	}
	d := overviewData{Stats: st, Total: sc.Total, Partial: sc.Partial, Interval: s.cfg.SampleInterval}
	for _, state := range allStates {
		d.States = append(d.States, stateRow{state, sc.By[state]})
		if !state.Terminal() && st.InFlightByState[state] > 0 {
			d.InFlight = append(d.InFlight, stateRow{state, st.InFlightByState[state]})
		}
	}
	pts := s.hist.points()
	d.Samples = len(pts)
	d.QueueChart, d.RateChart = queueChart(pts), rateChart(pts, s.cfg.SampleInterval)
	s.render(w, r, "overview", http.StatusOK, page{Title: "Overview", Nav: "overview", Live: "all", Data: d})
}

type jobsData struct {
	State  workflow.State
	States []workflow.State
	Jobs   []client.Job
	Next   uint64
}

func (s *Server) jobs(w http.ResponseWriter, r *http.Request) {
	state := workflow.State(strings.ToUpper(r.URL.Query().Get("state")))
	if state != "" && !state.Valid() {
		s.render(w, r, "error", http.StatusBadRequest, page{Title: "Bad request", Data: "Unknown state."})
		return
	}
	cursor, _ := strconv.ParseUint(r.URL.Query().Get("cursor"), 10, 64)
	// Bounded: the page refreshes live, and a filter on a rare state would
	// read every record of a huge namespace each time.
	pg, err := s.cli.List(r.Context(), client.ListOptions{State: state, Limit: 100, Cursor: cursor, MaxScan: s.cfg.MaxScan})
	if err != nil {
		s.fail(w, r, "the job records", err)
		return
	}
	s.render(w, r, "jobs", http.StatusOK, page{Title: "Jobs", Nav: "jobs", Live: "all",
		Data: jobsData{State: state, States: allStates, Jobs: pg.Jobs, Next: pg.NextCursor}})
}

// jobEventsMax bounds the events one job page shows, jobScanMax the
// events it reads to find them.
const (
	jobEventsMax = 500
	jobScanMax   = 200_000
)

// streamMs is the milliseconds part of a stream entry id.
func streamMs(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return n
}

type jobData struct {
	Job       client.Job
	Events    []client.Event
	Truncated bool
	// Timings derived from the events.
	QueuedAfter time.Duration // submitted → first queued
	RanFor      time.Duration // first queued → terminal
	Total       time.Duration // created → finished
	Delay       time.Duration // Runpod's delayTime of the terminal event
	Execution   time.Duration // Runpod's executionTime
	RunpodIDs   []string      // every Runpod id the events name, in order
	Retryable   bool
	Cancelable  bool
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	j, err := s.cli.Get(r.Context(), id)
	if errors.Is(err, workflow.ErrJobNotFound) || id == "" {
		s.render(w, r, "error", http.StatusNotFound, page{Title: "Not found",
			Data: "No job with this id (never submitted, or expired after its result TTL)."})
		return
	}
	if err != nil {
		s.fail(w, r, "the job", err)
		return
	}
	d := jobData{Job: j, Retryable: retryable(j.State) && j.AliasOf == "", Cancelable: !j.State.Terminal() && j.AliasOf == ""}
	// A job's events are written at or after its record's creation (both
	// on Redis's clock), so the read starts just before it.
	from := client.FromStart
	if !j.CreatedAt.IsZero() {
		from = strconv.FormatInt(max(j.CreatedAt.UnixMilli()-1000, 0), 10)
	}
	// A finished job writes nothing after its current run's terminal
	// event (a retry opens a new run), so the read stops there instead of
	// reading the stream to its end; and it reads at most jobScanMax. A
	// terminal event trimmed away stops it an hour past finished_ms (Redis's
	// clock, like the ids; it was once the finalizing worker's, and a worker
	// minutes behind made the page stop before every event of the job).
	// A job's events are all in its partition: the other partitions are
	// read from their end (nothing of this job is there) and their events
	// skipped, so they neither spend the scan nor stop it early.
	part := s.cli.PartitionOf(id)
	if p := s.cli.Partitions(); p > 1 {
		end, err := s.cli.Position(r.Context())
		if err != nil {
			s.fail(w, r, "the job's events", err)
			return
		}
		ids := strings.Split(end, ",")
		if len(ids) == p {
			ids[part] = from
			from = strings.Join(ids, ",")
		}
	}
	var until int64
	terminal := j.State.Terminal()
	if terminal && !j.FinishedAt.IsZero() {
		until = j.FinishedAt.UnixMilli() + time.Hour.Milliseconds()
	}
	seen := map[string]bool{}
	scanned := 0
	for ev, err := range s.cli.Events(r.Context(), client.EventsOptions{From: from, StopAtEnd: true}) {
		if err != nil {
			s.fail(w, r, "the job's events", err)
			return
		}
		if ev.Partition != part {
			continue
		}
		if scanned++; scanned > jobScanMax || len(d.Events) == jobEventsMax {
			d.Truncated = true
			break
		}
		if until > 0 && streamMs(ev.ID) > until {
			break
		}
		if ev.JobID != id {
			continue
		}
		d.Events = append(d.Events, ev)
		if ev.RunpodID != "" && !seen[ev.RunpodID] {
			seen[ev.RunpodID] = true
			d.RunpodIDs = append(d.RunpodIDs, ev.RunpodID)
		}
		if terminal && ev.Type.Terminal() && max(ev.Run, 1) == max(j.Run, 1) {
			break
		}
	}
	d.timings()
	if j.RunpodID != "" && !seen[j.RunpodID] {
		d.RunpodIDs = append(d.RunpodIDs, j.RunpodID)
	}
	s.render(w, r, "job", http.StatusOK, page{Title: "Job " + id, Nav: "jobs", Live: "job", Job: id,
		Flash: flash(r), FlashBad: r.URL.Query().Get("bad") != "", Data: d})
}

// timings derives the current run's timings from its events: the run
// starts at its submitted (or retried) event.
func (d *jobData) timings() {
	evs := d.Events
	for i := len(evs) - 1; i > 0; i-- {
		if evs[i].Type == client.EventSubmitted || evs[i].Type == client.EventRetried {
			evs = evs[i:]
			break
		}
	}
	if len(evs) == 0 {
		return
	}
	start := evs[0].Time
	var queued time.Time
	for _, ev := range evs {
		switch {
		case ev.Type == client.EventQueued && queued.IsZero():
			queued = ev.Time
			d.QueuedAfter = queued.Sub(start)
		case ev.Type.Terminal():
			if !queued.IsZero() {
				d.RanFor = ev.Time.Sub(queued)
			}
			d.Total = ev.Time.Sub(start)
			d.Delay, d.Execution = ev.Delay, ev.Execution
		}
	}
}

type deadRow struct {
	client.DeadLetter
	State      workflow.State // the job's state now ("" if its record is gone)
	Retryable  bool
	Cancelable bool
}

type deadData struct {
	Rows  []deadRow
	Total int64
	After string
	Next  string
}

const deadPage = 100

func (s *Server) dead(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	after := r.URL.Query().Get("after")
	if after != "" && !validPosition(after) {
		s.render(w, r, "error", http.StatusBadRequest, page{Title: "Bad request", Data: "Bad position."})
		return
	}
	dls, err := s.cli.Dead(ctx, client.DeadOptions{After: after, Limit: deadPage})
	if err != nil {
		s.fail(w, r, "the dead letters", err)
		return
	}
	st, err := s.cli.Stats(ctx, client.StatsOptions{})
	if err != nil {
		s.fail(w, r, "the queue", err)
		return
	}
	d := deadData{Total: st.DeadLetters, After: after}
	for _, dl := range dls {
		row := deadRow{DeadLetter: dl}
		if dl.JobID != "" {
			j, err := s.cli.Get(ctx, dl.JobID)
			switch {
			case err == nil:
				row.State = j.State
				row.Retryable = retryable(j.State) && j.AliasOf == ""
				row.Cancelable = !j.State.Terminal() && j.AliasOf == ""
			case !errors.Is(err, workflow.ErrJobNotFound):
				s.fail(w, r, "a dead letter's job", err)
				return
			}
		}
		d.Rows = append(d.Rows, row)
	}
	if len(dls) == deadPage {
		d.Next = dls[len(dls)-1].Cursor // one position per partition: ids repeat across partitions
	}
	s.render(w, r, "dead", http.StatusOK, page{Title: "Dead letters", Nav: "dead", Live: "events",
		Flash: flash(r), FlashBad: r.URL.Query().Get("bad") != "", Data: d})
}

// validPosition accepts a stream id or one per partition, comma-separated
// (a client.DeadLetter.Cursor).
func validPosition(s string) bool {
	for _, id := range strings.Split(s, ",") {
		if !validStreamID(id) {
			return false
		}
	}
	return true
}

func validStreamID(s string) bool {
	ms, seq, _ := strings.Cut(s, "-")
	if _, err := strconv.ParseUint(ms, 10, 64); err != nil {
		return false
	}
	if seq != "" {
		if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
			return false
		}
	}
	return true
}

// flash is the message of a redirect after an action, chosen from fixed
// texts by code: nothing from the query string is shown as text but the
// job id, which the template escapes.
func flash(r *http.Request) string {
	q := r.URL.Query()
	id := q.Get("job")
	switch q.Get("done") {
	case "retried":
		return fmt.Sprintf("Job %s retried: run %s starts.", id, q.Get("run"))
	case "canceled":
		return fmt.Sprintf("Cancel of job %s recorded (state %s); the outcome follows.", id, q.Get("state"))
	case "refused":
		return fmt.Sprintf("Job %s: %s", id, refusalText[q.Get("why")])
	}
	return ""
}

// refusalText explains an action the client refused.
var refusalText = map[string]string{
	"completed":    "a COMPLETED job is not retried; its outcome stands.",
	"not_finished": "the job has no outcome yet (or is an alias); not retried.",
	"no_input":     "its input was kept nowhere (not persisted, not dead-lettered); submit it anew.",
	"not_found":    "no such job.",
	"terminal":     "the job has finished; nothing to cancel.",
	"error":        "Redis could not be reached; the dashboard's log says why.",
}

// action runs a Retry or Cancel posted by a page's button, then redirects
// back (POST, redirect, GET).
func (s *Server) action(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "dashboard: bad form", http.StatusBadRequest)
		return
	}
	id, op := r.PostForm.Get("id"), r.PostForm.Get("op")
	back := r.PostForm.Get("back")
	if back != "dead" {
		back = "job"
	}
	q := url.Values{"job": {id}}
	switch op {
	case "retry":
		res, err := s.cli.Retry(r.Context(), id)
		switch {
		case err == nil:
			q.Set("done", "retried")
			q.Set("run", strconv.Itoa(res.Run))
			s.log.Info("job retried from the dashboard", "job_id", id, "run", res.Run)
		case errors.Is(err, client.ErrCompleted):
			q.Set("done", "refused")
			q.Set("why", "completed")
		case errors.Is(err, client.ErrNotFinished):
			q.Set("done", "refused")
			q.Set("why", "not_finished")
		case errors.Is(err, client.ErrNoInput):
			q.Set("done", "refused")
			q.Set("why", "no_input")
		case errors.Is(err, workflow.ErrJobNotFound):
			q.Set("done", "refused")
			q.Set("why", "not_found")
		default:
			s.log.Warn("retry from the dashboard", "job_id", id, "error", err)
			q.Set("done", "refused")
			q.Set("why", "error")
		}
	case "cancel":
		rep, err := s.cli.RequestCancel(r.Context(), id)
		switch {
		case err == nil && rep.Requested:
			q.Set("done", "canceled")
			q.Set("state", string(rep.State))
			s.log.Info("job cancel requested from the dashboard", "job_id", id)
		case err == nil:
			q.Set("done", "refused")
			q.Set("why", "terminal")
		case errors.Is(err, workflow.ErrJobNotFound), errors.Is(err, client.ErrCancelPending):
			q.Set("done", "refused")
			q.Set("why", "not_found")
		default:
			s.log.Warn("cancel from the dashboard", "job_id", id, "error", err)
			q.Set("done", "refused")
			q.Set("why", "error")
		}
	default:
		http.Error(w, "dashboard: unknown action", http.StatusBadRequest)
		return
	}
	if q.Get("done") == "refused" {
		q.Set("bad", "1")
	}
	s.invalidateStates()
	target := s.cfg.BasePath + "/dead?" + q.Encode()
	if back == "job" {
		q.Set("id", id)
		target = s.cfg.BasePath + "/job?" + q.Encode()
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// events streams "something changed" messages as server-sent events until
// the client leaves or Run returns.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "dashboard: streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := s.hub.subscribe()
	defer s.hub.unsubscribe(ch)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, "retry: 2000\n: connected\n\n")
	fl.Flush()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.hub.done:
			return
		case <-keep.C:
			_, _ = fmt.Fprint(w, ": keep-alive\n\n")
		case m := <-ch:
			b, _ := json.Marshal(m)
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return
			}
		}
		fl.Flush()
	}
}

// prettyJSON indents raw JSON for display ("" for none).
func prettyJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}
