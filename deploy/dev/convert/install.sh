#!/usr/bin/env bash
# Prints the folder of the conversion toolchain's virtual environment (Python + deploy/convert/requirements.txt),
# created once per requirements hash under ${LLMHUB_CACHE:-~/.cache/llmhub}/convert/ and reused after (no-op when cached).
# dev and tests run the conversion Jobs' programs (deploy/convert/) with its python; production uses the image
# built from deploy/convert/Dockerfile with the same requirements.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/../../convert/requirements.txt"
hash=$(sha256sum "$req" | cut -c1-16)
dir="${LLMHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmhub}/convert/$hash"
if [ ! -f "$dir/.complete" ]; then
  python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "convert: Python >= 3.10 is needed (onnxruntime wheels)")'
  echo "convert: creating the toolchain venv in $dir (PyPI: onnx, onnxruntime, numpy, boto3)" >&2
  rm -rf "$dir.tmp"
  python3 -m venv "$dir.tmp"
  "$dir.tmp/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req" >&2
  touch "$dir.tmp/.complete"
  # venv scripts carry their absolute path; a renamed venv's pip breaks, but its python (all we run) does not.
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$dir"
