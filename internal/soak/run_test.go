package soak

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/yourscope/runpod-orchestrator/internal/syncbuf"
)

// TestRunSmoke runs a small soak end to end (real redis-server, simulator,
// worker processes, kills, pauses and a Redis restart) so the soak's own
// process handling runs under the race detector. It checks the soak's
// machinery, not the orchestrator: violations are logged, not failed on
// (scripts/test.sh runs the real gate, cmd/soak's short run).
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not in PATH")
	}
	bin := filepath.Join(t.TempDir(), "worker")
	build := exec.Command("go", "build", "-o", bin, "github.com/yourscope/runpod-orchestrator/cmd/worker")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build cmd/worker: %s", out)

	var progress syncbuf.Buffer
	sum, err := Run(context.Background(), Config{
		Jobs: 60, Workers: 2, Seed: 3, Rate: 30, WorkerBin: bin, MinIdle: time.Second,
		Chaos: []string{ChaosKill, ChaosStop, ChaosRedis, ChaosRunAfter}, ChaosInterval: 300 * time.Millisecond,
		Drain: 2 * time.Minute, Dir: t.TempDir(), Progress: &progress,
	})
	require.NoError(t, err, "progress:\n%s", progress.String())
	require.Equal(t, 60, sum.Submitted)
	require.Equal(t, 60, sum.Jobs)
	require.NotZero(t, sum.FinalEvents)
	require.NotZero(t, sum.WorkerStarts)
	for _, v := range sum.Violations {
		t.Logf("soak violation (reported, not failed on here): %s job %s: %s", v.Kind, v.JobID, v.Detail)
	}
}
