#!/usr/bin/env bash
# Builds the pinned gVisor runsc as a static binary into $1 (default bin/runsc).
# A dynamically linked runsc fails at sandbox boot (fork/exec /proc/self/exe),
# hence CGO_ENABLED=0. Skips the build when that exact version is already there.
set -euo pipefail

# The gVisor Go module (its "go" branch) has no tags: pin a pseudo-version.
GVISOR_VERSION="v0.0.0-20260905035102-160fafc42237"

out="${1:-bin/runsc}"
stamp="$out.version"
if [[ -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$GVISOR_VERSION" ]]; then
  exit 0
fi
mkdir -p "$(dirname "$out")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "building runsc $GVISOR_VERSION (static; about 2 minutes the first time)..." >&2
CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-mod=mod go install \
  -ldflags "-X gvisor.dev/gvisor/runsc/version.version=$GVISOR_VERSION" \
  "gvisor.dev/gvisor/runsc@$GVISOR_VERSION"
mv "$tmp/runsc" "$out"
echo "$GVISOR_VERSION" > "$stamp"
