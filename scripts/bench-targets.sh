#!/usr/bin/env bash
# bench-targets.sh: one run of every issue-10 target measurement, one after
# the other on this machine, so docs/performance.md's target table can quote
# figures from one run. Each step's JSON line goes to $OUT/<step>.json and
# stderr (progress) to $OUT/<step>.log. Needs redis-server and valgrind.
#
#   scripts/bench-targets.sh [OUT]        (default OUT=/tmp/bench-targets)
#
# Steps (the letters docs/performance.md uses):
#   A  bench/peers: ours vs asynq, drain, interleaved, median of 3
#   A' bench/peers --callgrind: instructions per job by phase and script
#   B  --hold 10,000 and 100,000 jobs: keep-alive cost
#   C  drain with 1, 2 and 4 workers
#   D  --runpod sim: the HTTP client in the path
#   E  defaults at 1,000 jobs/s offered: submit -> /run latency
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/bench-targets}
mkdir -p "$OUT"
PORT=${BENCH_PORT:-6393}
URL=redis://127.0.0.1:$PORT
step() { echo "== $(date -u +%H:%M:%S) $1 (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }
fresh() {
  redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
  sleep 0.5
  redis-server --port "$PORT" --save '' --appendonly no --daemonize yes >/dev/null
  until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
}
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true' EXIT
go build -o "$OUT/bench" ./cmd/bench
bench() { "$OUT/bench" --redis-url "$URL" --quiet "$@"; }

step "A: peers"
(cd bench/peers && go run . --jobs 20000 --rounds 3 --quiet) >"$OUT/A.txt" 2>"$OUT/A.log"
step "A': callgrind"
(cd bench/peers && go run . --callgrind "$OUT/callgrind" --jobs 2000 --quiet) >"$OUT/A-callgrind.txt" 2>"$OUT/A-callgrind.log"
step "B: hold 10,000"
fresh; bench --jobs 10000 --max-in-flight 10000 --hold --hold-for 30s >"$OUT/B-10k.json" 2>"$OUT/B-10k.log"
step "B': hold 100,000"
fresh; bench --jobs 100000 --max-in-flight 100000 --hold --hold-for 30s >"$OUT/B-100k.json" 2>"$OUT/B-100k.log"
for w in 1 2 4; do
  step "C: $w workers"
  fresh; bench --jobs 20000 --workers "$w" >"$OUT/C-$w.json" 2>"$OUT/C-$w.log"
done
step "D: HTTP simulator"
fresh; bench --jobs 5000 --runpod sim >"$OUT/D.json" 2>"$OUT/D.log"
step "E: defaults, 1,000 jobs/s offered"
fresh; bench --jobs 30000 --prefill=false --rate 1000 --max-in-flight 0 --poll-initial 0 >"$OUT/E.json" 2>"$OUT/E.log"
step "done"
for f in "$OUT"/*.json; do echo "$(basename "$f" .json) $(cat "$f")"; done
