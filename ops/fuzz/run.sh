#!/usr/bin/env bash
# Fuzzes every decoder of requests and of the sandbox protocol, one target
# after another, for DURATION each (default 10m), then prints a summary:
# target, time, execs, and the failing input of any that failed.
#
#   ops/fuzz/run.sh          # 10 minutes each
#   ops/fuzz/run.sh 30s      # a quick pass
#
# `make test` runs the same targets on their seed corpora only (plain
# `go test`), so CI never fails on an input found by chance; fuzzing is
# this command. A failing input is written by `go test` under the
# package's testdata/fuzz/<target>/: fix the bug, and keep the file as a
# seed. One fuzz worker (-parallel=1): the machine is shared.
set -u
cd "$(dirname "$0")/../.."

duration=${1:-10m}
go=${GO:-go}
logs=${FUZZ_LOGS:-$(mktemp -d -t sandboxapi-fuzz.XXXXXX)}
mkdir -p "$logs"

# package, target
targets=(
	"./cell/v1api FuzzParseV1"
	"./cell/unsandbox FuzzParseUnsandbox"
	"./cell/piston FuzzParsePiston"
	"./cell/judge0 FuzzParseJudge0"
	"./cell/e2b FuzzDecodeCreate"
	"./cell/e2b FuzzReadUploads"
	"./cell/e2b FuzzParseEntries"
	"./cell/execreq FuzzDecodeBase64"
	"./cell/execreq FuzzUnzip"
	"./cell/unsandbox FuzzDetectLanguage"
	"./cell/execreq FuzzSplitWords"
	"./cell/webhook FuzzCheckURL"
	"./sandboxes/wire FuzzReadFrame"
	"./cell/mcp FuzzToolArguments"
	"./cell/mcp FuzzAllowed"
	"./gossip FuzzDecodeMeta"
	"./caddy-modules/cellroute FuzzRoute"
	"./billing/selfserve FuzzSignup"
	"./billing/selfserve FuzzWebhook"
)

summary=()
failed=0
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	log="$logs/$name.log"
	echo "== $name ($pkg) for $duration, log $log"
	start=$(date +%s)
	"$go" test -run='^$' -fuzz="^${name}\$" -fuzztime="$duration" -parallel=1 "$pkg" >"$log" 2>&1
	rc=$?
	secs=$(($(date +%s) - start))
	# The last progress line carries the total: "fuzz: elapsed: 10m0s, execs: 123 (…/sec), …".
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	if [ "$rc" -eq 0 ]; then
		result=ok
	else
		failed=1
		crasher=$(grep -o 'testdata/fuzz/[^ ]*' "$log" | head -1)
		result="FAIL ${crasher:-(see log)}"
		tail -30 "$log"
	fi
	summary+=("$(printf '%-22s %-20s %6ss %12s  %s' "$name" "$pkg" "$secs" "${execs:-?}" "$result")")
done

echo
printf '%-22s %-20s %7s %12s  %s\n' target package time execs result
printf '%s\n' "${summary[@]}"
exit "$failed"
