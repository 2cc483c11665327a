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
source "$HERE/../go-build.sh"

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

build() {
  go_step "building the collector v$COLLECTOR_VERSION (otlp receiver, file exporter)"
  (cd "$MODULE" && go build -trimpath -ldflags="-s -w" -o "$1/otelcol" .)
}

# Its messages on stderr: the last line of stdout is the binary's path.
go_cached_build "the OpenTelemetry Collector" "$DEST" complete build >&2
echo "$BIN"
