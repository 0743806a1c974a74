package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/activities/runpodsim"
	"github.com/yourscope/runpod-orchestrator/client"
	"github.com/yourscope/runpod-orchestrator/internal/dashboard"
	"github.com/yourscope/runpod-orchestrator/workflow"
)

// Environment of TestDashboardInBrowser.
const (
	// envChromium overrides the browser binary (default /usr/bin/chromium,
	// Debian's package).
	envChromium = "DASHBOARD_CHROMIUM"
	// envScreenshot, when set, runs the test with envScreenshotJobs jobs
	// (default 1,000) and copies the overview's screenshot to this path
	// (relative to the repository root): docs/img/dashboard.png is made so.
	envScreenshot     = "DASHBOARD_SCREENSHOT"
	envScreenshotJobs = "DASHBOARD_SCREENSHOT_JOBS"
	// envKeep names a directory to keep the screenshots and results in.
	envKeep    = "DASHBOARD_OUT"
	browserDir = "testdata/browser"
)

// browserPrereqs returns node and chromium, or skips the test with what is
// missing; under CI (env CI set) it fails instead, so CI cannot skip it.
func browserPrereqs(t *testing.T) (node, chromium string) {
	t.Helper()
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node (Debian: apt-get install nodejs npm)")
	}
	chromium = cmpOr(os.Getenv(envChromium), "/usr/bin/chromium")
	if _, err := os.Stat(chromium); err != nil {
		missing = append(missing, chromium+" (Debian: apt-get install chromium)")
	}
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "playwright-core (cd internal/e2e/"+browserDir+" && npm ci)")
	}
	if len(missing) > 0 {
		msg := "dashboard browser test needs " + strings.Join(missing, ", ") + "; scripts/test.sh installs them"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set: not skipped)")
		}
		t.Skip(msg)
	}
	return node, chromium
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// dashboardArgs is what the node script reads (testdata/browser/dashboard.mjs).
type dashboardArgs struct {
	Base         string         `json:"base"`
	Out          string         `json:"out"`
	Chromium     string         `json:"chromium"`
	TimeoutMs    int            `json:"timeoutMs"`
	Counts       map[string]int `json:"counts"`
	CountsAfter  map[string]int `json:"countsAfter"`
	CompletedJob string         `json:"completedJob"`
	DeadJob      string         `json:"deadJob"`
}

type box struct{ X, Y, W, H float64 }

// dashboardResults is what the node script saw.
type dashboardResults struct {
	Errors   []string `json:"errors"`
	Overview struct {
		Counts    map[string]int `json:"counts"`
		Total     int            `json:"total"`
		Backlog   int64          `json:"backlog"`
		Dead      int64          `json:"dead"`
		Consumers []string       `json:"consumers"`
		QueueBox  box            `json:"queueBox"`
		RateBox   box            `json:"rateBox"`
	} `json:"overview"`
	OverviewHTML string `json:"overviewHTML"`
	Job          struct {
		ID       string   `json:"id"`
		State    string   `json:"state"`
		RunpodID string   `json:"runpodId"`
		Output   string   `json:"output"`
		Events   []string `json:"events"`
	} `json:"job"`
	JobHTML    string `json:"jobHTML"`
	DeadBefore struct {
		State string `json:"state"`
	} `json:"deadBefore"`
	Dead struct {
		Flash string `json:"flash"`
		URL   string `json:"url"`
	} `json:"dead"`
	DeadHTML string `json:"deadHTML"`
	Live     struct {
		Marker          int            `json:"marker"`
		Refreshes       int            `json:"refreshes"`
		RefreshesBefore int            `json:"refreshesBefore"`
		Counts          map[string]int `json:"counts"`
	} `json:"live"`
}

// TestDashboardInBrowser runs the dashboard end to end in headless
// Chromium: worker subprocesses on the simulator finish jobs (most
// complete, some fail, one is dead-lettered, one keeps running); the
// dashboard is served over the producer's client; a node script (Playwright's
// playwright-core driving Debian's chromium) opens the overview, a job's
// page and the dead letters, clicks Retry on the dead job, and takes
// screenshots. The test checks that the page showed what the client reads
// (counts by state, dead letters, the job's Runpod id and events), that the
// open overview updated itself after the retry without a reload, and that
// the screenshots have content where the charts are.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	node, chromium := browserPrereqs(t)
	screenshotTo := os.Getenv(envScreenshot)
	nJobs := 30
	interval := 250 * time.Millisecond
	if screenshotTo != "" {
		nJobs = 1000
		if v := os.Getenv(envScreenshotJobs); v != "" {
			n, err := strconv.Atoi(v)
			require.NoError(t, err, envScreenshotJobs)
			nJobs = n
		}
		interval = time.Second
	}
	e := newEnv(t, runpodsim.Config{})
	ctx := context.Background()
	e.startChild(childOpts{ID: "dash-w1"})
	e.startChild(childOpts{ID: "dash-w2"})
	d, err := dashboard.New(dashboard.Config{Client: e.cli, SampleInterval: interval, Logger: testLogger("dashboard")})
	require.NoError(t, err)
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	rctx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(rctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-runDone) })

	// The jobs: every 10th fails, the rest complete after 10 ms to 2 s
	// (1,000-job mode: submitted over about 20 s, so the charts have a shape).
	var ids []string
	for i := range nJobs {
		id := fmt.Sprintf("dash-%04d", i)
		extra := map[string]any{"mock_delay": 10 + (i*37)%400}
		if screenshotTo != "" {
			extra["mock_delay"] = 200 + (i*7919)%2000
		}
		if i%10 == 3 {
			extra["mock_error"] = "CUDA out of memory (simulated)"
		}
		e.submit(id, jobInput(id, extra), 0)
		ids = append(ids, id)
		if screenshotTo != "" && i%50 == 49 {
			time.Sleep(time.Second) // pacing the load, not synchronization
		}
	}
	// A submission of an unknown wire version: dead-lettered with its input,
	// which Retry sends again under the current version (it then completes).
	const deadJob = "dash-dead"
	e.xadd("job_id", deadJob, "input", string(jobInput(deadJob, nil)), "v", "9")
	// One job that runs for as long as the test.
	const longJob = "dash-long"
	e.submit(longJob, jobInput(longJob, map[string]any{"mock_delay": 600_000}), 0)

	recs := e.waitTerminal(append(ids, deadJob), 3*time.Minute)
	require.Equal(t, string(workflow.StateFailed), recs[deadJob].State)
	eventually(t, time.Minute, func() (bool, string) {
		r, err := e.record(longJob)
		return err == nil && r.State == string(workflow.StateInProgress), fmt.Sprintf("%s: %s %v", longJob, r.State, err)
	})
	completed := ""
	for _, id := range ids {
		if recs[id].State == string(workflow.StateCompleted) {
			completed = id
			break
		}
	}
	require.NotEmpty(t, completed)

	// What the client reads: the page must show exactly this.
	counts := e.countByState()
	st, err := e.cli.Stats(ctx, client.StatsOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), st.DeadLetters)
	after := map[string]int{}
	for k, v := range counts {
		after[k] = v
	}
	after[string(workflow.StateFailed)]--
	after[string(workflow.StateCompleted)]++

	out := t.TempDir()
	if dir := os.Getenv(envKeep); dir != "" {
		out = dir
		require.NoError(t, os.MkdirAll(out, 0o755))
	}
	args := dashboardArgs{Base: srv.URL, Out: out, Chromium: chromium, TimeoutMs: 120_000,
		Counts: counts, CountsAfter: after, CompletedJob: completed, DeadJob: deadJob}
	argsFile := filepath.Join(out, "args.json")
	b, err := json.Marshal(args)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(argsFile, b, 0o600))
	nctx, ncancel := context.WithTimeout(ctx, 8*time.Minute)
	defer ncancel()
	cmd := exec.CommandContext(nctx, node, "dashboard.mjs", argsFile)
	cmd.Dir = browserDir
	cmd.Env = append(os.Environ(), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1")
	outText, err := cmd.CombinedOutput()
	require.NoError(t, err, "node dashboard.mjs:\n%s", outText)
	var res dashboardResults
	raw, err := os.ReadFile(filepath.Join(out, "results.json"))
	require.NoError(t, err, "node wrote no results:\n%s", outText)
	require.NoError(t, json.Unmarshal(raw, &res))
	require.Empty(t, res.Errors, "the browser reported errors")

	// The overview showed what the client reads.
	require.Equal(t, counts, res.Overview.Counts, "jobs by state on the page")
	total := 0
	for _, n := range counts {
		total += n
	}
	require.Equal(t, total, res.Overview.Total)
	require.Equal(t, st.DeadLetters, res.Overview.Dead)
	require.Equal(t, st.Backlog, res.Overview.Backlog)
	// The consumers the client lists (a worker becomes one at its first
	// delivery on Redis before 7.2, so not necessarily both).
	var names []string
	for _, c := range st.Consumers {
		names = append(names, c.Name)
	}
	require.NotEmpty(t, names)
	require.ElementsMatch(t, names, res.Overview.Consumers)

	// The job page: its Runpod id and its events.
	rec := recs[completed]
	require.Equal(t, completed, res.Job.ID)
	require.Equal(t, string(workflow.StateCompleted), res.Job.State)
	require.NotEmpty(t, rec.RunpodID)
	require.Equal(t, rec.RunpodID, res.Job.RunpodID)
	_, byJob := e.events()
	var want []string
	for _, ev := range byJob[completed] {
		want = append(want, ev.Type)
	}
	require.Equal(t, want, res.Job.Events, "the job's events, in order")
	require.Contains(t, res.Job.Output, completed, "the output (the simulator echoes the input)")

	// Retry on the dead letter ran the job again; the open overview showed
	// the new counts without being reloaded.
	require.Equal(t, string(workflow.StateFailed), res.DeadBefore.State)
	require.Contains(t, res.Dead.Flash, "retried")
	j, err := e.cli.Get(ctx, deadJob)
	require.NoError(t, err)
	require.Equal(t, 2, j.Run, "Retry started run 2")
	require.Equal(t, workflow.StateCompleted, j.State)
	require.Equal(t, after, res.Live.Counts)
	require.Equal(t, 42, res.Live.Marker, "the overview was never reloaded")
	require.Greater(t, res.Live.Refreshes, res.Live.RefreshesBefore, "the overview refreshed itself")
	require.Equal(t, after, e.countByState())

	// No page carries the Runpod key the workers use.
	for _, html := range []string{res.OverviewHTML, res.JobHTML, res.DeadHTML} {
		require.NotContains(t, html, testAPIKey)
	}

	// The screenshots have content: the charts' boxes hold the plotted
	// lines (pixels in the series' colours), the pages are not blank.
	img := decodePNG(t, filepath.Join(out, "overview.png"))
	requireNotUniform(t, img, img.Bounds(), "overview")
	qb, rb := res.Overview.QueueBox, res.Overview.RateBox
	requireNotUniform(t, img, rect(qb), "queue chart")
	requireNotUniform(t, img, rect(rb), "rate chart")
	// style.css: --pending #2563eb, --completed #16a34a, --failed #dc2626.
	require.Greater(t, countNear(img, rect(qb), color.RGBA{0x25, 0x63, 0xeb, 0xff}), 30, "pending line drawn in the queue chart")
	require.Greater(t, countNear(img, rect(rb), color.RGBA{0x16, 0xa3, 0x4a, 0xff}), 30, "completed line drawn in the rate chart")
	require.Greater(t, countNear(img, rect(rb), color.RGBA{0xdc, 0x26, 0x26, 0xff}), 30, "failed line drawn in the rate chart")
	for _, name := range []string{"job.png", "dead.png", "overview-after.png"} {
		im := decodePNG(t, filepath.Join(out, name))
		requireNotUniform(t, im, im.Bounds(), name)
	}

	if screenshotTo != "" {
		png, err := os.ReadFile(filepath.Join(out, "overview.png"))
		require.NoError(t, err)
		dst := filepath.Join("..", "..", screenshotTo)
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		require.NoError(t, os.WriteFile(dst, png, 0o644))
		t.Logf("overview screenshot after %d jobs written to %s", nJobs, screenshotTo)
	}
}

// countByState counts the namespace's job records by state, as the
// dashboard does (aliases left out), with every state present.
func (e *env) countByState() map[string]int {
	e.t.Helper()
	counts := map[string]int{}
	for _, s := range []workflow.State{workflow.StateSubmitted, workflow.StateQueued, workflow.StateInProgress,
		workflow.StateCompleted, workflow.StateFailed, workflow.StateTimedOut, workflow.StateCanceled} {
		counts[string(s)] = 0
	}
	var cursor uint64
	for {
		pg, err := e.cli.List(context.Background(), client.ListOptions{Limit: 1000, Cursor: cursor})
		require.NoError(e.t, err)
		for _, j := range pg.Jobs {
			if j.AliasOf == "" {
				counts[string(j.State)]++
			}
		}
		if cursor = pg.NextCursor; cursor == 0 {
			return counts
		}
	}
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err, path)
	return img
}

func rect(b box) image.Rectangle {
	return image.Rect(int(b.X), int(b.Y), int(b.X+b.W), int(b.Y+b.H))
}

// requireNotUniform fails unless at least 1 % of r's pixels differ from
// its most common colour.
func requireNotUniform(t *testing.T, img image.Image, r image.Rectangle, what string) {
	t.Helper()
	r = r.Intersect(img.Bounds())
	require.False(t, r.Empty(), "%s: empty region", what)
	hist := map[color.RGBA]int{}
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			hist[rgba(img.At(x, y))]++
		}
	}
	top := 0
	for _, n := range hist {
		top = max(top, n)
	}
	all := r.Dx() * r.Dy()
	require.Greater(t, all-top, all/100, "%s: %d of %d pixels differ from the background", what, all-top, all)
}

// countNear counts r's pixels within 40 per channel of c.
func countNear(img image.Image, r image.Rectangle, c color.RGBA) int {
	n := 0
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			p := rgba(img.At(x, y))
			if near(p.R, c.R) && near(p.G, c.G) && near(p.B, c.B) {
				n++
			}
		}
	}
	return n
}

func near(a, b uint8) bool { return int(a)-int(b) < 40 && int(b)-int(a) < 40 }

func rgba(c color.Color) color.RGBA {
	r, g, b, a := c.RGBA()
	return color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), uint8(a >> 8)}
}
