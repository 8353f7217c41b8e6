#!/usr/bin/env bash
# The real OpenID provider tests/test_oidc.py starts: the npm package `oidc-provider`, pinned in
# tests/oidc/package.json and package-lock.json, installed from the npm registry into
# tests/oidc/node_modules only when it is missing or older than the lock file.
set -uo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/tests/oidc"
installed="$dir/node_modules/.package-lock.json"
if [ -f "$installed" ] && [ -d "$dir/node_modules/oidc-provider" ] && ! [ "$dir/package-lock.json" -nt "$installed" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "WARNING: npm (Node.js) is missing; tests/test_oidc.py will be skipped." >&2
  exit 0
fi
echo "installing the test OpenID provider (tests/oidc: npm ci)"
cd "$dir" && exec npm ci --no-audit --no-fund --loglevel=error
