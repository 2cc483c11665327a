#!/usr/bin/env bash
# Builds a minimal OpenTelemetry Collector (the OTLP receiver and the contrib file exporter, one release) from the
# Go module proxy and caches the binary outside git; prints its path on the last line.
#
# Usage: deploy/dev/otel/build.sh [--print-bin]
#   --print-bin   print where the cached binary is (or will be) and exit (builds nothing)
#
# Env: LLMHUB_CACHE (default ~/.cache/llmhub); GOPATH/GOCACHE/GOMODCACHE are honoured as set.
# collector/ is a wrapper module (main.go wires the factories as the collector builder would) with a committed
# go.sum, so a build never needs the checksum database and always resolves to the same dependency set.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODULE="$HERE/collector"

COLLECTOR_VERSION="$(sed -n 's/^const version = "\(.*\)"$/\1/p' "$MODULE/version.go")"
mod_hash="$(cat "$MODULE"/go.mod "$MODULE"/go.sum "$MODULE"/*.go | sha256sum | cut -c1-10)"
CACHE_ROOT="${LLMHUB_CACHE:-$HOME/.cache/llmhub}/otelcol"
DEST="$CACHE_ROOT/${COLLECTOR_VERSION}_${mod_hash}"
BIN="$DEST/otelcol"

if [[ "${1:-}" == "--print-bin" ]]; then
  echo "$BIN"
  exit 0
fi

complete() { [[ -f "$DEST/.complete" && -x "$BIN" ]]; }

if complete; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "otel/build.sh: go is required (Go >= 1.26)" >&2; exit 1; }

mkdir -p "$CACHE_ROOT"
# One builder at a time: a second caller (e.g. two test runs) waits and then finds the cache.
exec 9>"$CACHE_ROOT/.build.lock"
flock 9
if complete; then
  echo "$BIN"
  exit 0
fi

STAGE="$(mktemp -d "$CACHE_ROOT/.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

# The toolchain is the machine's; never let a go line trigger a toolchain download.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

start=$(date +%s)
echo "otel: building the collector v$COLLECTOR_VERSION (otlp receiver, file exporter)" >&2
(cd "$MODULE" && go build -trimpath -ldflags="-s -w" -o "$STAGE/otelcol" .)

rm -rf "$DEST"
chmod 755 "$STAGE"
mv "$STAGE" "$DEST"
trap - EXIT
touch "$DEST/.complete"
echo "otel: cold build took $(($(date +%s) - start))s" >&2
echo "$BIN"
