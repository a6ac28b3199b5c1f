#!/usr/bin/env bash
# Installs the pinned stripe-mock (Stripe's API mock, a Go program) into $1
# (default bin/stripe-mock) for the tests of billing/selfserve and
# billing/meter, which start it themselves on a loopback port. It comes
# from the Go module proxy like every other dependency, so a new host
# needs nothing else. Skips the install when that version is already there.
set -euo pipefail

STRIPE_MOCK_VERSION="v0.203.0"

out="${1:-bin/stripe-mock}"
stamp="$out.version"
if [[ -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$STRIPE_MOCK_VERSION" ]]; then
  exit 0
fi
mkdir -p "$(dirname "$out")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "installing stripe-mock $STRIPE_MOCK_VERSION..." >&2
# GOFLAGS=-mod=mod: install outside this module's go.mod, whatever the
# caller's GOFLAGS say.
GOBIN="$tmp" GOFLAGS=-mod=mod go install "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION"
mv "$tmp/stripe-mock" "$out"
echo "$STRIPE_MOCK_VERSION" >"$stamp"
