#!/usr/bin/env bash
# Run a benchmark from bench/: `npm run bench` (overhead), `npm run bench -- overhead [--check]`.
#
# Installs npm dependencies if node_modules is missing, makes sure redis-server is available
# (unless REDIS_URL points at a server), compiles src/ and bench/ to .bench-dist/ and runs
# .bench-dist/bench/<name>.js with the remaining arguments.
# Benchmark settings: see the header of bench/<name>.ts (e.g. BENCH_ROUNDS, BENCH_SLICE_MS).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

available() {
  local f names=""
  for f in bench/*.ts; do
    [ -e "$f" ] || continue
    f="${f#bench/}"
    names="$names ${f%.ts}"
  done
  printf '%s\n' "${names# }"
}

name="overhead"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  name="$1"
  shift
fi
if ! [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || [ ! -f "bench/$name.ts" ]; then
  echo "bench: no benchmark named '$name' (available: $(available))" >&2
  exit 2
fi

if [ ! -d node_modules ]; then
  echo "bench: node_modules missing, running npm ci" >&2
  npm ci
fi

if [ -z "${REDIS_URL:-}" ] && [ -f scripts/ensure-redis.sh ]; then
  bash scripts/ensure-redis.sh
fi

rm -rf .bench-dist
echo "bench: compiling (tsc -p tsconfig.bench.json)" >&2
# A type error fails the run: npm test type-checks the same files, so one here is a real bug.
npx --no-install tsc -p tsconfig.bench.json

# BENCH_NICE=-10 (needs root) runs the benchmark, and the redis-server it starts, at a higher
# scheduling priority: on a machine shared with other work it cuts the noise considerably.
if [ -n "${BENCH_NICE:-}" ]; then
  exec nice -n "$BENCH_NICE" node --expose-gc .bench-dist/bench/"$name".js "$@"
fi
exec node --expose-gc .bench-dist/bench/"$name".js "$@"
