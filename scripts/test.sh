#!/usr/bin/env bash
# `npm test`: installs what a clean clone lacks, type-checks, then runs every spec against real
# redis-server processes (started by jest's global setup on free loopback ports, stopped by pid)
# — on NestJS 12 (native ESM), then the module and health specs on NestJS 11, and beside them the
# failover specs (each starting, failing over and stopping its own topology) — and fails if any
# server it started is still running afterwards.
#
#   npm test                 everything
#   npm test -- health       only specs whose path matches "health" (both passes)
#   SKIP_NEST11=1 npm test   skip the NestJS 11 pass
#   SKIP_FAILOVER=1 npm test skip the failover pass (test/failover: Sentinel and Cluster failovers)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "dependencies"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  echo "node_modules is up to date"
fi
if [ -z "${SKIP_NEST11:-}" ] && [ -f compat/nest11/package.json ]; then
  if [ ! -d compat/nest11/node_modules ] ||
    [ compat/nest11/package-lock.json -nt compat/nest11/node_modules/.package-lock.json ]; then
    npm ci --prefix compat/nest11 --no-audit --no-fund
  fi
fi
bash scripts/ensure-redis.sh

# The lint gate and the compile gates are each mostly one busy core for a minute or more: on a
# 2-core machine they run side by side (about 75 s instead of 140 s). Lint still gates jest: its
# report is printed, and a problem stops the run, before any spec starts.
step "lint and format, in the background (zero problems: eslint with type information, prettier over every file)"
lint_log=$(mktemp "${TMPDIR:-/tmp}/nestjs-redis-infra-lint.XXXXXX")
(
  node_modules/.bin/eslint src test example bench scripts --max-warnings 0 &&
    node_modules/.bin/prettier --check . --log-level warn
) >"$lint_log" 2>&1 &
lint_pid=$!
stop_lint() { # a failed compile step ends the run: stop eslint/prettier (children of the subshell) too
  pkill -P "$lint_pid" 2>/dev/null || true
  kill "$lint_pid" 2>/dev/null || true
  rm -f "$lint_log"
}
trap stop_lint EXIT

step "type-check (ts-jest only transpiles: this is what catches type errors)"
npx tsc -p tsconfig.json --noEmit
if [ -z "${SKIP_NEST11:-}" ] && [ -f tsconfig.nest11-typecheck.json ]; then
  npx tsc -p tsconfig.nest11-typecheck.json
fi

step "build, and compile a consumer against the emitted .d.ts"
rm -rf dist
npx tsc -p tsconfig.build.json
npx tsc -p test/types/tsconfig.json
node scripts/check-doc-snippets.mjs # the TypeScript blocks of README.md and docs/*.md, against dist

step "lint and format: the report"
lint_status=0
wait "$lint_pid" || lint_status=$?
cat "$lint_log"
rm -f "$lint_log"
trap - EXIT
if [ "$lint_status" -ne 0 ]; then
  echo "lint or format failed (exit $lint_status): npx eslint --fix <files>, npx prettier --write <files>" >&2
  exit "$lint_status"
fi
echo "no problems"

# Every server of this run lives under one of two directories, whatever is left there afterwards
# is ours: one for the main passes, whose global setup and teardown sweep it, and one for the
# failover pass, which runs at the same time.
REDIS_INFRA_TEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nestjs-redis-infra-test.XXXXXX")
export REDIS_INFRA_TEST_DIR
failover_dir=$(mktemp -d "${TMPDIR:-/tmp}/nestjs-redis-infra-failover.XXXXXX")
failover_pid="" # the failover pass, while it runs in the background (below)
failover_log=""
cleanup() {
  if [ -n "$failover_pid" ]; then
    kill "$failover_pid" 2>/dev/null || true
    wait "$failover_pid" 2>/dev/null || true
  fi
  [ -z "$failover_log" ] || rm -f "$failover_log"
  for dir in "$REDIS_INFRA_TEST_DIR" "$failover_dir"; do
    node "$root/scripts/redis/cli.mjs" stop --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
  done
}
trap cleanup EXIT

export NODE_OPTIONS="--experimental-vm-modules --disable-warning=ExperimentalWarning ${NODE_OPTIONS:-}"

# The failover pass mostly waits (for Sentinel to notice a dead master, for a cluster to promote a
# replica: about 55 s at under 30 % of one core), so it runs beside the main pass instead of after
# it, its output kept until the main pass is done. It starts its own topologies on free ports.
if [ -z "${SKIP_FAILOVER:-}" ]; then
  failover_log=$(mktemp "${TMPDIR:-/tmp}/nestjs-redis-infra-failover.XXXXXX")
  REDIS_INFRA_TEST_DIR="$failover_dir" node_modules/.bin/jest -c jest.failover.config.js "$@" \
    >"$failover_log" 2>&1 &
  failover_pid=$!
fi

step "jest: NestJS 12 (native ESM), standalone + cluster + sentinel (failover pass running beside it)"
npx jest "$@"

if [ -z "${SKIP_NEST11:-}" ] && [ -f jest.nest11.config.js ]; then
  step "jest: NestJS 11 + Terminus 11 (module and health specs)"
  REDIS_TEST_TOPOLOGIES=standalone npx jest -c jest.nest11.config.js "$@"
fi

if [ -n "$failover_pid" ]; then
  step "jest: failover (Sentinel and Cluster topologies of their own, one spec at a time)"
  failover_status=0
  wait "$failover_pid" || failover_status=$?
  failover_pid=""
  cat "$failover_log"
  if [ "$failover_status" -ne 0 ]; then
    echo "failover pass failed (exit $failover_status)" >&2
    exit "$failover_status"
  fi
fi

step "no redis-server of ours left running"
node --input-type=module -e "
  const { runningServers } = await import('$root/scripts/redis/servers.mjs');
  const left = [
    ...(await runningServers(process.env.REDIS_INFRA_TEST_DIR)),
    ...(await runningServers('$failover_dir')),
  ];
  if (left.length) {
    console.error('still running: ' + left.map((s) => s.pid + ' (' + s.dir + ')').join(', '));
    process.exitCode = 1;
  } else {
    console.log('none');
  }
"
