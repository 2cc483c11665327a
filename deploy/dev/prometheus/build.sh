#!/usr/bin/env bash
# Builds Prometheus and promtool from the Go module proxy and caches the binaries outside git.
# Used by the dashboards test (every PromQL expression of deploy/grafana and deploy/helm/llmhub/files/prometheus is
# run against a real server) and handy for looking at the dashboards' queries locally.
#
# Usage: deploy/dev/prometheus/build.sh [--print-bin-dir]
#   --print-bin-dir   print the cache's bin directory and exit (builds nothing)
#
# Env: LLMHUB_CACHE (default ~/.cache/llmhub); GOPATH/GOCACHE/GOMODCACHE are honoured as set.
# The wrapper module under module/ carries a committed go.sum, so a build never needs the
# checksum database and always resolves to the same dependency set.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODULE="$HERE/module"
source "$HERE/../go-build.sh"

# Prometheus 3.16.0; its Go module is tagged v0.316.0.
PROMETHEUS_VERSION=3.16.0
PROMETHEUS_MODULE_VERSION=v0.316.0

mod_hash="$(cat "$MODULE/go.mod" "$MODULE/go.sum" | sha256sum | cut -c1-10)"
KEY="prometheus-${PROMETHEUS_VERSION}_${mod_hash}"
CACHE_ROOT="${LLMHUB_CACHE:-$HOME/.cache/llmhub}/prometheus"
DEST="$CACHE_ROOT/$KEY"
BIN="$DEST/bin"
BINARIES=(prometheus promtool)

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$BIN"
  exit 0
fi

complete() { go_bins_complete "$DEST" "${BINARIES[@]}"; }

build() {
  local stage=$1 v=github.com/prometheus/common/version
  # remove_all_sd drops every service-discovery plugin (cloud SDKs are most of the build; the test
  # scrapes static targets). Without the builtinassets tag the React UI is not embedded (it would
  # need npm and `go generate`); the HTTP API, which is all we use, is unaffected. One go build for
  # both commands so the shared packages compile once. The version stamp is what upstream sets.
  go_step "building prometheus and promtool v$PROMETHEUS_VERSION"
  (cd "$MODULE" && go build -trimpath -tags "netgo remove_all_sd" \
    -ldflags="-s -w -X $v.Version=$PROMETHEUS_VERSION -X $v.Revision=$PROMETHEUS_MODULE_VERSION -X $v.Branch=HEAD" \
    -o "$stage/bin/" \
    github.com/prometheus/prometheus/cmd/prometheus \
    github.com/prometheus/prometheus/cmd/promtool)
}

go_cached_build "prometheus binaries" "$DEST" complete build
