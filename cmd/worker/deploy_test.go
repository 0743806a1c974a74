package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// metricRef finds the project's metric names in PromQL.
var metricRef = regexp.MustCompile(`\b` + metricPrefix + `[a-z_]+\b`)

// checkExpr requires every metric expr names to be one cmd/worker exports.
func checkExpr(t *testing.T, where, expr string) int {
	t.Helper()
	refs := metricRef.FindAllString(expr, -1)
	for _, name := range refs {
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(metricNames, b) {
				base = b
			}
		}
		require.Contains(t, metricNames, base, "%s names %s, which cmd/worker does not export", where, name)
	}
	return len(refs)
}

// TestGrafanaDashboard: deploy/grafana-dashboard.json parses, has panels
// with Prometheus queries, and every metric it names exists.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana-dashboard.json"))
	require.NoError(t, err)
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.NotEmpty(t, dash.Title)
	require.GreaterOrEqual(t, len(dash.Panels), 8)
	refs := 0
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, tg := range p.Targets {
			n := checkExpr(t, "panel "+p.Title, tg.Expr)
			require.Positive(t, n, "panel %q: query %q names no metric of ours", p.Title, tg.Expr)
			refs += n
		}
	}
	// The queue is visible: backlog, oldest waiting, dead letters, in flight by state.
	for _, want := range []string{metricBacklog, metricOldestWaiting, metricDeadLetters, metricInFlightByState, metricWorkerFault} {
		require.Contains(t, string(raw), want)
	}
}

// TestPrometheusAlerts: deploy/prometheus-alerts.yml parses as rule groups,
// every rule has an alert name, an expression and a summary, and every
// metric it names exists, so each alert can fire.
func TestPrometheusAlerts(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus-alerts.yml"))
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &rules))
	require.NotEmpty(t, rules.Groups)
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		require.NotEmpty(t, g.Name)
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], "alert %s", r.Alert)
			require.Positive(t, checkExpr(t, "alert "+r.Alert, r.Expr), "alert %s names no metric of ours", r.Alert)
			alerts[r.Alert] = true
		}
	}
	for _, want := range []string{"RunpodOrchestratorWorkerFault", "RunpodOrchestratorBreakerOpen",
		"RunpodOrchestratorBacklogGrowing", "RunpodOrchestratorNoConsumers", "RunpodOrchestratorDeadLetters"} {
		require.True(t, alerts[want], "missing alert %s", want)
	}
}
