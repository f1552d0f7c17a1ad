#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's page test, only when it is missing.
# Exits 0 with the browser's path on stdout, non-zero (with the reason on stderr) otherwise.
set -euo pipefail
for candidate in "${CHROMIUM_PATH:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    echo "$candidate"
    exit 0
  fi
done
if [ "$(id -u)" != "0" ]; then
  echo "chromium is missing and installing it needs root (apt-get install -y chromium)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A stale package list makes the install fail on a fresh machine: refresh it once first.
apt-get update -qq >&2 || true
apt-get install -y -qq --no-install-recommends chromium >&2
[ -x /usr/bin/chromium ] || { echo "apt-get finished but /usr/bin/chromium is missing" >&2; exit 1; }
echo /usr/bin/chromium
