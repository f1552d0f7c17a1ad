#!/usr/bin/env bash
# npm run demo: run the example app (example/) against Redis.
#
#   1. installs the npm dependencies when they are missing (npm ci, or npm install without a lockfile)
#   2. compiles src/ and example/ to .example-dist/ (tsconfig.example.json), unless already up to date
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

# Output must never decide whether the clean-up runs: when whoever reads our output is gone (a
# closed pipe, a closed terminal), a failed write is ignored instead of ending the script.
say() { printf 'demo: %s\n' "$*" 2>/dev/null || true; }
fail() {
  printf 'demo: %s\n' "$*" >&2 2>/dev/null || true
  exit 1
}

# The fields of the one-line JSON that scripts/redis/cli.mjs prints, read without starting another
# process (not even a subshell: the clean-up runs on busy machines too).
# json_field JSON NAME sets JSON_VALUE to the raw value of "NAME": a number, true/false, [1,2] or
# a string (without its quotes); returns 1 if there is no such field.
JSON_VALUE=""
json_field() {
  local re="\"$2\":(\"[^\"]*\"|\\[[^]]*\\]|[^,}]*)"
  JSON_VALUE=""
  [[ $1 =~ $re ]] || return 1
  JSON_VALUE="${BASH_REMATCH[1]}"
  JSON_VALUE="${JSON_VALUE#\"}"
  JSON_VALUE="${JSON_VALUE%\"}"
}

# ---------------------------------------------------------------------------------------------
# Cleanup: stop the app, then the Redis this script started. Runs once, on any way out.
#
# Ctrl-C in a terminal, or `kill -INT -PGID`, signals every process of the group at once: npm,
# this script and the app. npm waits for this script (package.json runs it with `exec`: a `sh -c`
# in between dies at once on SIGTERM, and npm with it, which would leave this clean-up orphaned
# and cut short by whatever waited for npm). The clean-up must then end by itself, quickly,
# whatever else happens:
#   - it ignores INT, TERM, HUP and PIPE, and nothing in it stops on a failed command or write;
#   - a further signal to the group (a second Ctrl-C, a CI runner's SIGTERM after its SIGINT) must
#     not reach the node process that stops Redis: node resets ignored signals to their defaults
#     when it starts, so it runs in a process group of its own (job control on, `set -m`);
#   - every wait is bounded, and "is it still running?" needs no extra process on Linux (/proc).
# ---------------------------------------------------------------------------------------------
APP_PID=""
REDIS_DIR=""   # set only for a Redis this script started
CLEANED=0

is_running() { # is_running PID: alive and not a zombie
  local stat
  if [ -d /proc/self ]; then
    # /proc/PID/stat is "PID (COMM) STATE ..."; COMM may hold spaces and parentheses.
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat="${stat##*) }"
  else
    stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  fi
  case "$stat" in
    '' | Z* | X* | x*) return 1 ;;
  esac
  return 0
}

stop_app() {
  local pid="$APP_PID" tries=0
  [ -n "$pid" ] || return 0
  APP_PID=""
  if is_running "$pid"; then
    say "stopping the app (pid $pid)"
    # After a signal to the whole group the app is already closing; Nest ignores the repeat.
    kill -TERM "$pid" 2>/dev/null || true
    while is_running "$pid"; do
      tries=$((tries + 1))
      if [ "$tries" -ge 50 ]; then
        say "the app did not stop within 5 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
  fi
  # Only reaps it: the loop above has seen it exit (or SIGKILLed it), so this returns at once.
  wait "$pid" 2>/dev/null || true
}

stop_redis() {
  local dir="$REDIS_DIR" out="" status=0 pids
  [ -n "$dir" ] || return 0
  REDIS_DIR=""
  # Stops only the servers whose pidfiles are under our own temporary directory (`stop` waits for
  # each, bounded, and removes the directory). Its output goes to a file next to the directory,
  # since a command substitution would keep it in our process group.
  set -m
  node scripts/redis/cli.mjs stop --dir "$dir" >"$dir.stop" 2>&1 </dev/null &
  wait "$!" || status=$?
  set +m
  { IFS= read -r -d '' out <"$dir.stop"; } 2>/dev/null || true
  rm -f "$dir.stop"
  if [ "$status" -eq 0 ]; then
    json_field "$out" stopped || true
    pids="${JSON_VALUE#[}"
    pids="${pids%]}"
    json_field "$out" removed || true
    if [ -n "$pids" ]; then pids="pid ${pids//,/, }"; else pids="it was no longer running"; fi
    [ "$JSON_VALUE" = true ] && pids="$pids; removed $dir"
    say "stopped the redis-server it started ($pids)"
  else
    [ -z "$out" ] || printf '%s\n' "$out" >&2 2>/dev/null || true
    say "could not stop the redis-server under $dir; stop it with: node scripts/redis/cli.mjs stop --dir '$dir'"
  fi
  # `stop` removes the directory it created; this catches one that `start` never got to use.
  if [ -d "$dir" ]; then rmdir "$dir" 2>/dev/null || true; fi
}

cleanup() {
  [ "$CLEANED" -eq 0 ] || return 0
  CLEANED=1
  set +e
  trap '' INT TERM HUP PIPE
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
# Skipped when nothing it reads changed since the last build (tsc itself takes 5-15 s even then).
stale="yes"
if [ -f .example-dist/example/main.js ] && [ -f .example-dist/.tsbuildinfo ]; then
  # (find's own exit status is ignored: a missing package-lock.json is not an error here.)
  stale="$({ find src example tsconfig.json tsconfig.example.json package.json package-lock.json \
    -newer .example-dist/.tsbuildinfo -print 2>/dev/null || true; } | head -n 1)"
fi
if [ -n "$stale" ]; then
  say "compiling src/ and example/ (tsconfig.example.json -> .example-dist/)"
  node_modules/.bin/tsc -p tsconfig.example.json
  touch .example-dist/.tsbuildinfo # tsc leaves it alone when the output did not change
else
  say "src/ and example/ are already compiled (.example-dist/)"
fi

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
  json_field "$started" url || fail "unexpected output from scripts/redis/cli.mjs start: $started"
  export REDIS_URL="$JSON_VALUE"
  json_field "$started" pid || true
  redis_pid="$JSON_VALUE"
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
