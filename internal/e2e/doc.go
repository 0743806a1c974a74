// Package e2e holds the end-to-end failure tests of runpod-orchestrator: the
// guarantees of docs/architecture.md proven against a real redis-server and
// the Runpod simulator (activities/runpodsim) served over loopback HTTP, with
// the real activities client and real worker processes in between.
//
// It has no non-test code. The tests re-execute their own binary as worker
// subprocesses (E2E_WORKER=1), so a crash is a real SIGKILL of a real
// process at an exact step of a job's workflow (worker.Config.StepHook), a
// pause is a real SIGSTOP, and a graceful handoff is a real SIGTERM. Every
// test ends with an audit of the events stream: exactly one terminal event
// per job, legal transitions, nothing after the terminal event, and no event
// written under an epoch older than one already seen for that job.
//
// TestDashboardInBrowser runs the web dashboard (internal/dashboard) in
// headless Chromium: Debian's chromium driven by the playwright-core npm
// package (testdata/browser; scripts/test.sh installs both). Without them it
// skips, saying what is missing; with CI set it fails instead.
//
// Run them with:
//
//	go test -race -count=1 ./internal/e2e/ -v
//
// E2E_LOG=debug shows the worker subprocesses' logs on failure in detail.
package e2e
