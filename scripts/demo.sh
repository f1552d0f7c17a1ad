#!/usr/bin/env bash
# npm run demo: run the example app (example/) against Redis.
#
#   1. installs the npm dependencies when they are missing (npm ci, or npm install without a lockfile)
#   2. compiles src/ and example/ to .example-dist/ (tsconfig.example.json)
#   3. unless REDIS_URL (or REDIS_HOST, REDIS_SENTINELS, REDIS_CLUSTER_NODES) is set: makes sure
#      redis-server is installed (scripts/ensure-redis.sh) and starts a throw-away one on a free
#      loopback port in a fresh temporary directory
#   4. runs the app on http://127.0.0.1:${PORT:-3000} until Ctrl-C (or SIGTERM), then stops the
#      app and then the redis-server it started itself (never any other), and removes its directory
#
# Env: PORT (default 3000), REDIS_URL, REDIS_KEY_PREFIX (default demo:), any REDIS_* the library reads.
# Written for bash 3.2 (macOS) as well as Linux.
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf 'demo: %s\n' "$*"; }
fail() {
  printf 'demo: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Cleanup: stop the app, then the Redis this script started. Runs once, on any way out.
# ---------------------------------------------------------------------------------------------
APP_PID=""
REDIS_DIR=""   # set only for a Redis this script started
CLEANED=0

is_running() { # is_running PID: alive and not a zombie
  local stat
  stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  case "$stat" in
    '' | Z*) return 1 ;;
  esac
  return 0
}

stop_app() {
  local pid="$APP_PID" tries=0
  [ -n "$pid" ] || return 0
  APP_PID=""
  if is_running "$pid"; then
    say "stopping the app (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while is_running "$pid"; do
      tries=$((tries + 1))
      if [ "$tries" -ge 100 ]; then
        say "the app did not stop within 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
  fi
  wait "$pid" 2>/dev/null || true
}

stop_redis() {
  local dir="$REDIS_DIR" out
  [ -n "$dir" ] || return 0
  REDIS_DIR=""
  # Stops only the servers whose pidfiles are under our own temporary directory.
  if out="$(node scripts/redis/cli.mjs stop --dir "$dir")"; then
    say "stopped the redis-server it started ($(printf '%s' "$out" | node -e '
      let s = "";
      process.stdin.on("data", (d) => (s += d)).on("end", () => {
        const r = JSON.parse(s);
        const pids = r.stopped.length ? `pid ${r.stopped.join(", ")}` : "it was no longer running";
        console.log(r.removed ? `${pids}; removed ${r.dir}` : pids);
      });'))"
  else
    say "could not stop the redis-server under $dir; stop it with: node scripts/redis/cli.mjs stop --dir '$dir'"
  fi
  # `stop` removes the directory it created; this catches one that `start` never got to use.
  rmdir "$dir" 2>/dev/null || true
}

cleanup() {
  [ "$CLEANED" -eq 0 ] || return 0
  CLEANED=1
  # A second Ctrl-C must not interrupt stopping what we started (both steps are bounded).
  trap '' INT TERM HUP
  stop_app
  stop_redis
}

on_signal() {
  cleanup
  say "bye"
  trap - "$1" EXIT
  kill -s "$1" $$ # die of the same signal, as a well-behaved child of npm / the shell should
}

trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# ---------------------------------------------------------------------------------------------
# 1. Node and the npm dependencies
# ---------------------------------------------------------------------------------------------
command -v node >/dev/null 2>&1 || fail "Node.js >= 20.19 is required (https://nodejs.org), and npm with it."
node -e '
  const [major, minor] = process.versions.node.split(".").map(Number);
  if (major < 20 || (major === 20 && minor < 19)) {
    console.error(`demo: Node.js >= 20.19 is required, this is ${process.version}.`);
    process.exit(1);
  }' || exit 1

missing=""
for pkg in typescript reflect-metadata rxjs ioredis @nestjs/common @nestjs/core @nestjs/config \
  @nestjs/platform-express @nestjs/terminus; do
  [ -f "node_modules/$pkg/package.json" ] || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ -f package-lock.json ]; then
    say "installing the npm dependencies (npm ci; missing:$missing)"
    npm ci --no-audit --no-fund
  else
    say "installing the npm dependencies (npm install; missing:$missing)"
    npm install --no-audit --no-fund
  fi
fi

# ---------------------------------------------------------------------------------------------
# 2. Compile src/ + example/ to .example-dist/
# ---------------------------------------------------------------------------------------------
say "compiling src/ and example/ (tsconfig.example.json -> .example-dist/)"
node_modules/.bin/tsc -p tsconfig.example.json

# ---------------------------------------------------------------------------------------------
# 3. Redis: the one configured in the environment, or a throw-away one on loopback
# ---------------------------------------------------------------------------------------------
if [ -n "${REDIS_URL:-}" ]; then
  # Never print a password: redis://user:secret@host -> redis://user:***@host
  say "using REDIS_URL from the environment: $(printf '%s' "$REDIS_URL" | sed -E 's#^([A-Za-z]+://[^:/@]*):[^@]*@#\1:***@#')"
elif [ -n "${REDIS_HOST:-}${REDIS_SENTINELS:-}${REDIS_CLUSTER_NODES:-}" ]; then
  unset REDIS_URL
  say "using the Redis that REDIS_HOST / REDIS_SENTINELS / REDIS_CLUSTER_NODES point at"
else
  unset REDIS_URL # an empty one counts as unset
  bash scripts/ensure-redis.sh
  tmp="${TMPDIR:-/tmp}"
  REDIS_DIR="$(mktemp -d "${tmp%/}/nestjs-redis-infra-demo.XXXXXX")"
  started="$(node scripts/redis/cli.mjs start standalone --dir "$REDIS_DIR")" ||
    fail "could not start redis-server (see above)"
  REDIS_URL="$(printf '%s' "$started" | node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).url));')"
  export REDIS_URL
  redis_pid="$(printf '%s' "$started" | node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).pid));')"
  say "started redis-server at $REDIS_URL (pid $redis_pid, files in $REDIS_DIR); it is stopped when the demo ends"
fi

# ---------------------------------------------------------------------------------------------
# 4. The app, until Ctrl-C
# ---------------------------------------------------------------------------------------------
export PORT="${PORT:-3000}"
say "starting the example app on http://127.0.0.1:$PORT (Ctrl-C stops it and any Redis the demo started)"
# In the background, so that a signal to this script is handled at once (see on_signal).
node .example-dist/example/main.js &
APP_PID=$!
status=0
wait "$APP_PID" || status=$?
APP_PID=""
[ "$status" -eq 0 ] || say "the app exited with status $status"
exit "$status"
