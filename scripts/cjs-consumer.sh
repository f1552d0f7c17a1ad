#!/usr/bin/env bash
# A NestJS 11 CommonJS application, as a user builds it, against the package as npm would ship it:
#   1. build the package and `npm pack` it into a temporary folder;
#   2. install compat/nest11-cjs-consumer from its own lockfile (`npm ci`), then the tarball;
#   3. compile the app with its TypeScript 5.8 (module nodenext, skipLibCheck false), and
#      type-check it once more under moduleResolution node10 (the `typesVersions` path);
#   4. run it against a throw-away redis-server (started and stopped by pid through
#      scripts/redis/cli.mjs): /health must answer 200, a session must survive two requests,
#      and SIGTERM must run the shutdown hooks (compat/nest11-cjs-consumer/check.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
app="$root/compat/nest11-cjs-consumer"

work=$(mktemp -d "${TMPDIR:-/tmp}/nestjs-redis-infra-cjs.XXXXXX")
cleanup() {
  node "$root/scripts/redis/cli.mjs" stop --dir "$work/redis" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "-- build and pack"
rm -rf dist
npx tsc -p tsconfig.build.json
tarball="$work/$(npm pack --silent --pack-destination "$work")"
echo "$tarball"

echo "-- install the consumer (npm ci), then the tarball"
if [ ! -d "$app/node_modules" ] || [ "$app/package-lock.json" -nt "$app/node_modules/.package-lock.json" ]; then
  npm ci --prefix "$app" --no-audit --no-fund
fi
# --no-save: the tarball's path changes every run and must not end up in the consumer's lockfile.
(cd "$app" && npm install --no-save --no-audit --no-fund "$tarball")

echo "-- compile with TypeScript $(cd "$app" && npx tsc -v)"
rm -rf "$app/dist"
(cd "$app" && npx tsc -p tsconfig.json && npx tsc -p tsconfig.node10.json)

echo "-- run against redis-server"
url=$(node scripts/redis/cli.mjs start standalone --dir "$work/redis" |
  node -e 'let s = ""; process.stdin.on("data", (c) => (s += c)).on("end", () => console.log(JSON.parse(s).url))')
REDIS_URL="$url" node "$app/check.mjs"
