#!/usr/bin/env bash
# Checks that `npm run demo` ends cleanly on SIGINT and SIGTERM, every time (run by .ci/run).
#
# Each run starts the demo as a CI job would: `setsid npm run demo </dev/null` (its own process
# group and session, no terminal), REDIS_URL unset (so the demo starts its own redis-server), PORT
# a free port, TMPDIR a directory of this run. It waits for GET /health = 200, sends a signal, and
# then requires, within 10 s, that npm has exited, that no process the run started is left (bash,
# the app, node helpers, redis-server) and that the demo's temporary directory is gone - and that
# all of that was already true when npm exited (whoever waits for npm must find nothing left).
# "Started by the run" = carries the run's marker variable in its environment, which every
# descendant of npm inherits (the daemonized redis-server too); nothing else is ever signalled.
#
# Runs rotate through these ways of stopping it; every other run puts the CPU under load (two busy
# loops, 20 s at most, started just before the signal):
#   INT  to the group            Ctrl-C in a terminal; `kill -INT -PGID` in CI
#   TERM to the group            a CI runner or container stop
#   INT  to the script alone     `kill -INT <pid of bash scripts/demo.sh>`
#   TERM to the script alone
#   INT  to the group, twice     a second Ctrl-C while the demo is cleaning up
#   INT  to the group, no reader whoever read the output is gone (closed pipe) as it cleans up
#
#   bash scripts/check-demo.sh                 10 runs
#   CHECK_DEMO_RUNS=4 bash scripts/check-demo.sh
#   CHECK_DEMO_ONLY=group-twice bash scripts/check-demo.sh    one way of stopping it (SIGINT, SIGTERM)
#   CHECK_DEMO_BUDGET_S=150 (default): no new run after 150 s, once every way has had its run
#
# Prints one line per run (with how long the stop took) and a summary line; exits 1 if any run
# failed. Linux only (it reads /proc); elsewhere it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${CHECK_DEMO_RUNS:-10}"
END_BOUND_MS=10000   # the issue asks for 5 s; a run fails only past twice that
HEALTH_BOUND_S=180   # the first run may have to compile src/ and example/
BUDGET_S="${CHECK_DEMO_BUDGET_S:-150}" # no new run after this, once each way of stopping has run
LOAD_S=20

say() { printf 'check-demo: %s\n' "$*"; }

case "$RUNS" in
  '' | *[!0-9]*) say "CHECK_DEMO_RUNS must be a positive integer, got '$RUNS'"; exit 2 ;;
esac
[ "$RUNS" -ge 1 ] || { say "CHECK_DEMO_RUNS must be a positive integer, got '$RUNS'"; exit 2; }
case "$BUDGET_S" in
  '' | *[!0-9]*) say "CHECK_DEMO_BUDGET_S must be a number of seconds, got '$BUDGET_S'"; exit 2 ;;
esac
if [ ! -d /proc/self ]; then
  say "skipped: needs Linux /proc to find every process a run started"
  exit 0
fi
for cmd in setsid node npm grep; do
  command -v "$cmd" >/dev/null 2>&1 || { say "$cmd is required"; exit 2; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/nestjs-redis-infra-check-demo.XXXXXX")"
MARK_VAR=NESTJS_REDIS_INFRA_CHECK_DEMO
LOAD_PIDS=""
READER_PID=""
NPM_PID=""
RUN_MARK=""

now_ms() { # without a fork when bash has EPOCHREALTIME (5.0+)
  if [ -n "${EPOCHREALTIME:-}" ]; then
    local t="${EPOCHREALTIME/[.,]/}"
    printf '%s\n' "$((10#$t / 1000))"
  else
    printf '%s\n' "$(($(date +%s%N) / 1000000))"
  fi
}

# Live (not zombie) processes whose environment holds this run's marker.
run_pids() {
  local f pid state
  for f in $(grep -lszxF "$MARK_VAR=$RUN_MARK" /proc/[0-9]*/environ 2>/dev/null); do
    pid="${f#/proc/}"
    pid="${pid%/environ}"
    { read -r state <"/proc/$pid/stat"; } 2>/dev/null || continue
    state="${state##*) }"
    case "$state" in Z* | X* | x*) continue ;; esac
    printf '%s ' "$pid"
  done
}

# "pid:starttime" of each redis-server the run started (from the pidfiles under its TMPDIR):
# redis-server rewrites its environment area for its process title, so the marker cannot find it.
redis_procs() {
  local f pid
  for f in "$1"/tmp/nestjs-redis-infra-demo.*/*/redis.pid; do
    [ -f "$f" ] || continue
    read -r pid <"$f" || continue
    printf '%s:%s ' "$pid" "$(start_time "$pid")"
  done
}

start_time() { # field 22 of /proc/PID/stat: start time in clock ticks since boot
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 0
  set -- ${stat##*) }
  printf '%s' "${20}"
}

redis_left() { # the recorded redis-servers that still run
  local entry pid
  for entry in $1; do
    pid="${entry%%:*}"
    is_running "$pid" && [ "$(start_time "$pid")" = "${entry#*:}" ] && printf '%s ' "$pid"
  done
  return 0
}

is_running() {
  local state
  { read -r state <"/proc/$1/stat"; } 2>/dev/null || return 1
  state="${state##*) }"
  case "$state" in Z* | X* | x*) return 1 ;; esac
  return 0
}

stop_load() {
  local pid
  for pid in $LOAD_PIDS; do kill "$pid" 2>/dev/null || true; done
  for pid in $LOAD_PIDS; do wait "$pid" 2>/dev/null || true; done
  LOAD_PIDS=""
}

# Whatever a failed run left behind: only processes carrying its marker, then its Redis by pidfile.
force_clean_run() {
  local rdir="$1" pid d
  for pid in $(run_pids); do kill -KILL "$pid" 2>/dev/null || true; done
  for d in "$rdir"/tmp/nestjs-redis-infra-demo.*; do
    [ -d "$d" ] && node scripts/redis/cli.mjs stop --dir "$d" >/dev/null 2>&1 || true
  done
  if [ -n "$READER_PID" ]; then kill "$READER_PID" 2>/dev/null || true; fi
  if [ -n "$NPM_PID" ]; then wait "$NPM_PID" 2>/dev/null || true; fi
  READER_PID=""
  NPM_PID=""
}

on_exit() {
  stop_load
  if [ -n "$RUN_MARK" ]; then force_clean_run "$RUN_MARK"; fi
  rm -rf "$WORK"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  node -e 'const s = require("net").createServer();
    s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

health_ok() { # GET /health with bash alone (no curl on a fresh machine)
  local line=""
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 2>/dev/null || true
  read -r -t 5 line <&3 2>/dev/null || true
  exec 3<&- 3>&-
  case "$line" in "HTTP/1."?" 200"*) return 0 ;; esac
  return 1
}

stopping_redis() { # is the run's `scripts/redis/cli.mjs stop` running?
  local p
  for p in $(run_pids); do
    case "$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null)" in
      *"cli.mjs stop "*) return 0 ;;
    esac
  done
  return 1
}

busy() { # a CPU hog that stops by itself
  local end=$((SECONDS + LOAD_S))
  while [ "$SECONDS" -lt "$end" ]; do :; done
}

SCENARIOS=("INT group" "TERM group" "INT script" "TERM script" "INT group-twice" "INT group-no-reader")
if [ -n "${CHECK_DEMO_ONLY:-}" ]; then # e.g. CHECK_DEMO_ONLY=group-twice: only that way, both signals
  SCENARIOS=("INT $CHECK_DEMO_ONLY" "TERM $CHECK_DEMO_ONLY")
fi
describe() {
  case "$2" in
    group) printf 'SIG%s to the group' "$1" ;;
    script) printf 'SIG%s to the script alone' "$1" ;;
    group-twice) printf 'SIG%s to the group, twice' "$1" ;;
    group-no-reader) printf 'SIG%s to the group, output reader gone' "$1" ;;
  esac
}

passed=0
failed=0
times=""
npm_times=""

# One run; prints its line; returns 1 on failure.
run_once() {
  local i="$1" sig="$2" how="$3" load="$4"
  local rdir="$WORK/run$i" port out pgid="" script_pid="" t0 t_npm="" t_end="" elapsed npm_status=0
  local left dirs problem="" p k redis="" early=""
  mkdir -p "$rdir/tmp"
  RUN_MARK="$rdir"
  port="$(free_port)"
  out="$rdir/demo.log"
  if [ "$how" = group-no-reader ]; then
    mkfifo "$rdir/out"
    cat "$rdir/out" >"$rdir/demo.log" &
    READER_PID=$!
    out="$rdir/out"
  fi
  env -u REDIS_URL -u REDIS_HOST -u REDIS_SENTINELS -u REDIS_CLUSTER_NODES \
    "$MARK_VAR=$rdir" PORT="$port" TMPDIR="$rdir/tmp" \
    setsid npm run demo </dev/null >"$out" 2>&1 &
  NPM_PID=$!

  # setsid runs npm in place (same pid) as the leader of a new session and process group.
  for k in $(seq 1 100); do
    { read -r p <"/proc/$NPM_PID/stat"; } 2>/dev/null || break
    p="${p##*) }"
    set -- $p
    pgid="$3"
    [ "$pgid" = "$NPM_PID" ] && break
    sleep 0.05
  done
  if [ "$pgid" != "$NPM_PID" ]; then
    problem="npm (pid $NPM_PID) did not become a process group leader (pgid $pgid)"
  fi

  if [ -z "$problem" ]; then
    for k in $(seq 1 $((HEALTH_BOUND_S * 5))); do
      health_ok "$port" && break
      is_running "$NPM_PID" || break
      sleep 0.2
    done
    health_ok "$port" || problem="GET /health did not answer 200 (demo log: $rdir/demo.log)"
  fi

  if [ -n "$problem" ]; then
    printf 'run %2d/%d  %-44s FAIL: %s\n' "$i" "$RUNS" "$(describe "$sig" "$how")" "$problem"
    tail -n 15 "$rdir/demo.log" 2>/dev/null | sed 's/^/    | /' || true
    force_clean_run "$rdir"
    return 1
  fi

  for p in $(run_pids); do
    case "$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null)" in
      *"scripts/demo.sh"*) [ "$(cat "/proc/$p/comm" 2>/dev/null)" = bash ] && script_pid="$p" ;;
    esac
  done
  redis="$(redis_procs "$rdir")"
  if [ -z "$redis" ]; then
    printf 'run %2d/%d  %-44s FAIL: no redis-server pidfile under %s\n' "$i" "$RUNS" "$(describe "$sig" "$how")" "$rdir/tmp"
    force_clean_run "$rdir"
    return 1
  fi
  if [ -z "$script_pid" ]; then
    printf 'run %2d/%d  %-44s FAIL: no bash scripts/demo.sh among its processes\n' "$i" "$RUNS" "$(describe "$sig" "$how")"
    force_clean_run "$rdir"
    return 1
  fi
  if [ "$load" = yes ]; then
    busy &
    LOAD_PIDS="$!"
    busy &
    LOAD_PIDS="$LOAD_PIDS $!"
  fi

  t0="$(now_ms)"
  case "$how" in
    script) kill -s "$sig" "$script_pid" ;;
    *) kill -s "$sig" -- "-$NPM_PID" ;;
  esac
  if [ "$how" = group-no-reader ]; then
    kill "$READER_PID" 2>/dev/null || true
    wait "$READER_PID" 2>/dev/null || true
    READER_PID=""
  fi
  if [ "$how" = group-twice ]; then
    # The second signal goes out once the clean-up has started stopping Redis (or has ended).
    for k in $(seq 1 250); do
      stopping_redis && break
      is_running "$NPM_PID" || break
      sleep 0.02
    done
    kill -s "$sig" -- "-$NPM_PID" 2>/dev/null || true
  fi

  # First until npm exits (cheap, fine-grained), then until nothing of the run is left; the time
  # reported is when the check that found nothing left ended (an upper bound).
  while :; do
    if [ -z "$t_npm" ]; then
      if is_running "$NPM_PID"; then
        [ $(($(now_ms) - t0)) -lt "$END_BOUND_MS" ] || break
        sleep 0.02
        continue
      fi
      t_npm="$(now_ms)"
    fi
    left="$(run_pids)$(redis_left "$redis")"
    dirs="$(find "$rdir/tmp" -mindepth 1 -maxdepth 1 2>/dev/null | head -n 3)"
    if [ -z "$left" ] && [ -z "$dirs" ]; then
      t_end="$(now_ms)"
      break
    fi
    # `npm run demo` has ended for its caller (a CI step, a terminal) but the clean-up has not.
    [ -n "$early" ] || early="npm exited while ${left:+pids $left}${dirs:+ $dirs} still there"
    [ $(($(now_ms) - t0)) -lt "$END_BOUND_MS" ] || break
    sleep 0.05
  done
  if [ -z "$t_npm" ]; then
    left="$(run_pids)$(redis_left "$redis")"
    dirs="$(find "$rdir/tmp" -mindepth 1 -maxdepth 1 2>/dev/null | head -n 3)"
  fi
  stop_load
  wait "$NPM_PID" 2>/dev/null || npm_status=$?
  NPM_PID=""

  if [ -n "$t_end" ] && [ -z "$early" ]; then
    elapsed=$((t_end - t0))
    times="$times $elapsed"
    npm_times="$npm_times $((t_npm - t0))"
    printf 'run %2d/%d  %-44s %-10s npm exited after %4d ms (status %d), nothing left at %4d ms: ok\n' \
      "$i" "$RUNS" "$(describe "$sig" "$how")" "$([ "$load" = yes ] && echo 'under load' || echo quiet)" \
      "$((t_npm - t0))" "$npm_status" "$elapsed"
    RUN_MARK=""
    return 0
  fi
  if [ -n "$t_end" ]; then
    printf 'run %2d/%d  %-44s %-10s FAIL: %s (all gone only after %d ms)\n' "$i" "$RUNS" \
      "$(describe "$sig" "$how")" "$([ "$load" = yes ] && echo 'under load' || echo quiet)" "$early" "$((t_end - t0))"
    RUN_MARK=""
    return 1
  fi
  problem="not ended within $END_BOUND_MS ms:"
  [ -n "$t_npm" ] || problem="$problem npm still running;"
  for p in $left; do
    problem="$problem pid $p ($({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | cut -c1-60)) left;"
  done
  [ -z "$dirs" ] || problem="$problem left $dirs;"
  printf 'run %2d/%d  %-44s %-10s FAIL: %s\n' "$i" "$RUNS" "$(describe "$sig" "$how")" \
    "$([ "$load" = yes ] && echo 'under load' || echo quiet)" "$problem"
  grep -a '^demo:' "$rdir/demo.log" 2>/dev/null | tail -n 4 | sed 's/^/    | /' || true
  force_clean_run "$rdir"
  RUN_MARK=""
  return 1
}

say "$RUNS runs of 'setsid npm run demo </dev/null', each stopped by a signal (work dir $WORK)"
started_at=$SECONDS
skipped=0
for i in $(seq 1 "$RUNS"); do
  # Bounded in time on a slow machine: once every way of stopping it has had a run.
  if [ "$i" -gt "${#SCENARIOS[@]}" ] && [ $((SECONDS - started_at)) -ge "$BUDGET_S" ]; then
    skipped=$((RUNS - i + 1))
    say "time budget of $BUDGET_S s used up: skipping the last $skipped runs"
    break
  fi
  scenario="${SCENARIOS[$(((i - 1) % ${#SCENARIOS[@]}))]}"
  load=no
  [ $((i % 2)) -eq 0 ] && load=yes
  if run_once "$i" ${scenario% *} ${scenario#* } "$load"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done

spread() { # spread LABEL VALUES...: "LABEL min A, median B, max C ms"
  local label="$1"
  shift
  printf '%s\n' "$@" | sort -n | awk -v label="$label" '{ v[NR] = $1 } END {
    if (NR) printf "%s min %d, median %d, max %d ms", label, v[1], v[int((NR + 1) / 2)], v[NR] }'
}
stats=""
if [ -n "$times" ]; then
  stats="$(spread "npm exited after" $npm_times); $(spread "nothing left after" $times)"
fi
if [ "$failed" -eq 0 ]; then
  say "ok: $passed/$((RUNS - skipped)) runs ended cleanly; $stats"
  exit 0
fi
say "FAILED: $failed of $((RUNS - skipped)) runs did not end cleanly; $stats"
exit 1
