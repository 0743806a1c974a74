package dashboard

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"
)

// Chart geometry, in SVG user units (the SVG scales to its box).
const (
	chartW, chartH = 720, 200
	padL, padR     = 56, 12
	padT, padB     = 12, 28
)

// series is one line of a chart.
type series struct {
	Name  string
	Class string // CSS class giving its colour (assets/style.css)
	Vals  []float64
}

// queueChart plots backlog (not yet read by a worker) and pending
// (delivered, not finished) over the samples.
func queueChart(pts []point) template.HTML {
	backlog, pending := make([]float64, len(pts)), make([]float64, len(pts))
	for i, p := range pts {
		backlog[i], pending[i] = float64(p.Backlog), float64(p.Pending)
	}
	return chart("chart-queue", "Jobs waiting and in flight", pts,
		series{"backlog (not yet read)", "s-backlog", backlog},
		series{"pending (at a worker)", "s-pending", pending})
}

// rateChart plots outcomes per minute over the samples, from the terminal
// events counted between two samples.
func rateChart(pts []point, interval time.Duration) template.HTML {
	done, failed := make([]float64, len(pts)), make([]float64, len(pts))
	for i, p := range pts {
		span := interval
		if i > 0 {
			if d := p.At.Sub(pts[i-1].At); d > 0 {
				span = d
			}
		}
		done[i] = float64(p.Completed) / span.Minutes()
		failed[i] = float64(p.Failed) / span.Minutes()
	}
	return chart("chart-rate", "Outcomes per minute", pts,
		series{"completed/min", "s-completed", done},
		series{"failed, timed out, canceled/min", "s-failed", failed})
}

// chart renders a line chart of ss over the samples' times as inline SVG.
// Every value it writes is a number or one of our fixed strings.
func chart(id, title string, pts []point, ss ...series) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="%s" class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`,
		id, chartW, chartH, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<rect class="plot" x="%d" y="%d" width="%d" height="%d"/>`, padL, padT, chartW-padL-padR, chartH-padT-padB)
	if len(pts) < 2 {
		fmt.Fprintf(&b, `<text class="empty" x="%d" y="%d" text-anchor="middle">collecting samples…</text></svg>`, chartW/2, chartH/2)
		return template.HTML(b.String())
	}
	top := 0.0
	for _, s := range ss {
		for _, v := range s.Vals {
			top = math.Max(top, v)
		}
	}
	top = niceCeil(top)
	plotW, plotH := float64(chartW-padL-padR), float64(chartH-padT-padB)
	t0, t1 := pts[0].At, pts[len(pts)-1].At
	span := t1.Sub(t0).Seconds()
	if span <= 0 {
		span = 1
	}
	x := func(t time.Time) float64 { return padL + plotW*t.Sub(t0).Seconds()/span }
	y := func(v float64) float64 { return padT + plotH*(1-v/top) }
	// Grid and y labels at 0, ¼ … top.
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, chartW-padR, y(v), y(v))
		fmt.Fprintf(&b, `<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-6, y(v)+4, label(v))
	}
	fmt.Fprintf(&b, `<text class="tick" x="%d" y="%d">%s</text>`, padL, chartH-8, t0.UTC().Format("15:04:05"))
	fmt.Fprintf(&b, `<text class="tick" x="%d" y="%d" text-anchor="end">%s UTC</text>`, chartW-padR, chartH-8, t1.UTC().Format("15:04:05"))
	for _, s := range ss {
		fmt.Fprintf(&b, `<polyline class="line %s" points="`, s.Class)
		for i, v := range s.Vals {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", x(pts[i].At), y(v))
		}
		b.WriteString(`"/>`)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func label(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}
