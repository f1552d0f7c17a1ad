#!/usr/bin/env bash
# The compatibility matrix beyond `npm test` (which runs on the machine's Node, >= 20.19, with the
# pinned lowest ioredis, 6.0.0). .ci/run calls it after `npm test`.
#
#   bash scripts/compat.sh                  everything below, in this order
#   bash scripts/compat.sh node22 ioredis   only these steps
#
#   cjs      a NestJS 11 CommonJS app built from the packed tarball (scripts/cjs-consumer.sh)
#   node22   the whole suite (scripts/test.sh) on Node 22 \  binaries from the npm registry's `node`
#   node24   the whole suite (scripts/test.sh) on Node 24 /  package, compat/node22 and compat/node24
#   ioredis  the suite on the newest ioredis 6.x, in a temporary copy of the tree, so the working
#            tree's node_modules and lockfile never change. NestJS 11 pass skipped there: it runs
#            the same module code as the NestJS 12 pass, and ioredis is what varies.
#
# Extra arguments after `--` go to every scripts/test.sh run (e.g. a spec path pattern).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

steps=()
test_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; test_args=("$@"); break ;;
    cjs | node22 | node24 | ioredis) steps+=("$1") ;;
    *) echo "compat.sh: unknown step '$1' (cjs, node22, node24, ioredis)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#steps[@]} -gt 0 ] || steps=(cjs node22 node24 ioredis)

banner() { printf '\n\033[1;34m#### compat: %s\033[0m\n' "$*"; }
results=()
record() { results+=("$(printf '%-8s %-4s %4ss  %s' "$1" "$2" "$3" "$4")"); }

run_on_node() { # run_on_node MAJOR
  local dir="$root/compat/node$1" version
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund || return 1
  fi
  version=$("$dir/node_modules/.bin/node" --version)
  case "$version" in
    "v$1".*) ;;
    *) echo "compat/node$1 installed node $version, not $1.x" >&2; return 1 ;;
  esac
  echo "node $version"
  # `npx`, `npm` and every `#!/usr/bin/env node` script below now run on this Node.
  PATH="$dir/node_modules/.bin:$PATH" bash scripts/test.sh "${test_args[@]}"
}

run_on_newest_ioredis() {
  local copy version
  version=$(npm view 'ioredis@^6' version --json | node -e '
    let s = ""; process.stdin.on("data", (c) => (s += c)).on("end", () => {
      const v = JSON.parse(s); console.log(Array.isArray(v) ? v[v.length - 1] : v);
    })')
  echo "newest ioredis 6.x: $version"
  copy=$(mktemp -d "${TMPDIR:-/tmp}/nestjs-redis-infra-ioredis.XXXXXX")
  # The files git would commit (tracked and new, not ignored), and a real copy of node_modules:
  # npm rewrites files in place, which would reach through hard links into this tree.
  git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$copy"
  cp -a node_modules "$copy/"
  # Chained with &&: this runs as an `if` condition, where `set -e` does not stop on a failure.
  (
    cd "$copy" &&
      npm install --no-save --no-audit --no-fund "ioredis@$version" &&
      node -e '
        const v = require("ioredis/package.json").version;
        console.log("installed ioredis " + v);
        if (v !== process.argv[1]) process.exit(1);' "$version" &&
      SKIP_NEST11=1 bash scripts/test.sh "${test_args[@]}"
  ) && rc=0 || rc=$?
  rm -rf "$copy"
  return $rc
}

failed=0
for step in "${steps[@]}"; do
  banner "$step"
  start=$SECONDS
  case "$step" in
    cjs) cmd=(bash scripts/cjs-consumer.sh) ;;
    node22) cmd=(run_on_node 22) ;;
    node24) cmd=(run_on_node 24) ;;
    ioredis) cmd=(run_on_newest_ioredis) ;;
  esac
  if "${cmd[@]}"; then
    record "$step" ok $((SECONDS - start)) ""
  else
    record "$step" FAIL $((SECONDS - start)) "(exit $?)"
    failed=1
  fi
done

banner "summary"
printf '%s\n' "${results[@]}"
exit $failed
