#!/usr/bin/env bash
# Prints the path of a versitygw binary (a real S3 gateway; posix backend over a local folder),
# built once from the Go module proxy and cached outside git by its pinned version.
set -euo pipefail
VERSITYGW_VERSION="${VERSITYGW_VERSION:-v1.7.0}"
dir="${LLMHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmhub}/versitygw-$VERSITYGW_VERSION"
if [ ! -x "$dir/versitygw" ]; then
  command -v go >/dev/null || { echo "s3: versitygw needs a Go toolchain to build" >&2; exit 1; }
  echo "s3: building github.com/versity/versitygw $VERSITYGW_VERSION (cold: a few minutes)" >&2
  GOBIN="$dir.tmp" go install -trimpath -ldflags="-s -w" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" >&2
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$dir/versitygw"
