#!/usr/bin/env bash
# Prints the python of the contract tests' virtual environment: schemathesis, OpenAI's Python client and their
# dependencies, pinned in requirements.txt (from PyPI), made once per requirements hash under
# ${LLMHUB_CACHE:-~/.cache/llmhub}/schemathesis/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
hash=$(sha256sum "$req" | cut -c1-16)
root="${LLMHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmhub}/schemathesis"
dir="$root/$hash"
mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if [ ! -f "$dir/.complete" ]; then
  python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "schemathesis: Python >= 3.10 is needed")'
  echo "schemathesis: creating its venv in $dir (PyPI, pinned in test/contract/requirements.txt)" >&2
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req" >&2
  touch "$dir/.complete"
fi
echo "$dir/bin/python"
