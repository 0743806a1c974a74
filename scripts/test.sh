#!/usr/bin/env bash
# The project's test command (README "Quick start", .ci/run). Installs Debian's
# redis-server when it is missing, then runs gofmt, go vet and the race-enabled
# test suite. Each test package starts its own redis-server on a free loopback
# port (internal/redistest), or uses REDIS_URL when set.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found; installing Debian's redis-server package" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  # The package starts a system service; the tests run their own servers.
  $SUDO systemctl stop redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1 || true
fi
redis-server --version

# internal/failover runs a Sentinel setup (redis-sentinel, Debian's
# redis-sentinel package) and a Cluster (redis-cli, shipped with redis-server).
if ! command -v redis-sentinel >/dev/null 2>&1; then
  echo "redis-sentinel not found; installing Debian's redis-sentinel package" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-sentinel >/dev/null
  $SUDO systemctl stop redis-sentinel >/dev/null 2>&1 || $SUDO service redis-sentinel stop >/dev/null 2>&1 || true
fi

# The dashboard's browser test (internal/e2e TestDashboardInBrowser) drives
# Debian's chromium with the playwright-core npm package; under CI it fails,
# rather than skips, when they are missing.
if [ ! -x /usr/bin/chromium ]; then
  echo "chromium not found; installing Debian's chromium package" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if command -v npm >/dev/null 2>&1; then
  # Exact versions from the committed lock; no browser download.
  (cd internal/e2e/testdata/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
else
  echo "npm not found: the dashboard browser test will skip (or fail under CI)" >&2
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
# bench/peers is its own module (it depends on asynq; the library does not):
# ./... above skips it, so vet it on its own to catch a broken build.
(cd bench/peers && go vet ./...)
go test -race -count=1 -timeout 12m "$@" ./...

# The soak's short run (docs/reliability.md): real redis-server with AOF, the
# simulator and four worker processes, 1,000 jobs under chaos, then 300 more
# over three partitions; one JSON summary line each, non-zero exit on any
# violation. It runs when the script is
# called without arguments (or with SOAK=1); SOAK=0 skips it.
# SOAK_KINDS and SOAK_CHAOS override the job mix and the chaos; by default every
# job kind and every chaos kind runs (docs/reliability.md, "CI").
soak_default=1
[ "$#" -gt 0 ] && soak_default=0
if [ "${SOAK:-$soak_default}" != "0" ]; then
  go run ./cmd/soak --jobs 1000 --seed 1 --rate 25 \
    --chaos "${SOAK_CHAOS:-on}" \
    --kinds "${SOAK_KINDS:-all}"
  # The same invariants over a partitioned namespace on one redis-server:
  # P = 3, every worker serving every partition, the checker and the live
  # reader reading all three (about 25 s).
  go run ./cmd/soak --jobs 300 --seed 2 --rate 30 --partitions 3 \
    --chaos "${SOAK_CHAOS:-on}" \
    --kinds "${SOAK_KINDS:-all}"
fi
