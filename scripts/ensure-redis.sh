#!/usr/bin/env bash
# Make sure redis-server and redis-cli are available (idempotent).
#
# Lookup (same as scripts/redis/servers.mjs): $REDIS_SERVER_BIN / $REDIS_CLI_BIN, else PATH,
# else /usr/bin, /usr/local/bin, /opt/homebrew/bin.
# Missing: Linux + root + apt-get  -> apt-get update && apt-get install -y redis-server
#          Linux, not root          -> exit 1 with the sudo command to run
#          macOS + Homebrew         -> brew install redis
#          anything else            -> exit 1 with a message
# The tests start their own servers on free loopback ports; a system redis-server service that
# the Debian package may have started is left alone and never used.
# Written for bash 3.2 (macOS) as well.
set -euo pipefail

find_bin() { # find_bin NAME ENV_VALUE -> prints the path, or returns 1
  local name="$1" from_env="$2" dir
  if [ -n "$from_env" ]; then
    if [ -f "$from_env" ] && [ -x "$from_env" ]; then
      printf '%s\n' "$from_env"
      return 0
    fi
    echo "ensure-redis: $from_env (from the environment) is not an executable file" >&2
    return 1
  fi
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return 0
  fi
  for dir in /usr/bin /usr/local/bin /opt/homebrew/bin; do
    if [ -f "$dir/$name" ] && [ -x "$dir/$name" ]; then
      printf '%s\n' "$dir/$name"
      return 0
    fi
  done
  return 1
}

have_redis() {
  SERVER_BIN="$(find_bin redis-server "${REDIS_SERVER_BIN:-}")" || return 1
  CLI_BIN="$(find_bin redis-cli "${REDIS_CLI_BIN:-}")" || return 1
  return 0
}

report_found() {
  echo "ensure-redis: using $SERVER_BIN ($("$SERVER_BIN" --version 2>/dev/null | sed -n 's/.*\(v=[^ ]*\).*/\1/p')) and $CLI_BIN"
}

if have_redis; then
  report_found
  exit 0
fi

if [ -n "${REDIS_SERVER_BIN:-}${REDIS_CLI_BIN:-}" ]; then
  echo "ensure-redis: REDIS_SERVER_BIN / REDIS_CLI_BIN are set but do not point at usable binaries; fix or unset them." >&2
  exit 1
fi

os="$(uname -s)"
case "$os" in
  Linux)
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "ensure-redis: redis-server/redis-cli not found and apt-get is not available." >&2
      echo "Install Redis (>= 7) with your distribution's package manager, e.g. 'dnf install redis' or 'apk add redis'," >&2
      echo "or set REDIS_SERVER_BIN and REDIS_CLI_BIN." >&2
      exit 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
      echo "ensure-redis: redis-server/redis-cli not found. Install them with:" >&2
      echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server" >&2
      exit 1
    fi
    echo "ensure-redis: installing redis-server with apt-get" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
    if have_redis && "$CLI_BIN" -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
      echo "ensure-redis: note: the package started a system redis-server on port 6379; it is left alone and not used by the tests." >&2
    fi
    ;;
  Darwin)
    brew_bin=""
    if command -v brew >/dev/null 2>&1; then
      brew_bin="$(command -v brew)"
    elif [ -x /opt/homebrew/bin/brew ]; then
      brew_bin=/opt/homebrew/bin/brew
    elif [ -x /usr/local/bin/brew ]; then
      brew_bin=/usr/local/bin/brew
    fi
    if [ -z "$brew_bin" ]; then
      echo "ensure-redis: redis-server/redis-cli not found and Homebrew is not installed." >&2
      echo "Install Homebrew (https://brew.sh) and run 'brew install redis', or set REDIS_SERVER_BIN and REDIS_CLI_BIN." >&2
      exit 1
    fi
    echo "ensure-redis: installing redis with Homebrew" >&2
    "$brew_bin" install redis
    ;;
  *)
    echo "ensure-redis: redis-server/redis-cli not found, and automatic installation is not supported on $os." >&2
    echo "Install Redis (>= 7) and make redis-server and redis-cli available on PATH, or set REDIS_SERVER_BIN and REDIS_CLI_BIN." >&2
    exit 1
    ;;
esac

if ! have_redis; then
  echo "ensure-redis: installation finished but redis-server/redis-cli are still not found." >&2
  exit 1
fi
report_found
exit 0
