#!/usr/bin/env bash
# One of the project's images for the real node's tests, built by deploy/images/build.sh only when its inputs changed:
# the tag is a hash of the image's sources, the image scripts and the Node version, not the commit, so a commit that
# does not touch them reuses the archive in $LLMHUB_CACHE/images.
#
# Usage: deploy/dev/kube/image.sh model-server|platform
#   prints "<archive> <image>" (docker-archive path, name for a pod spec)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
source scripts/toolchain.sh
llmhub_ensure_node
image=${1:?usage: image.sh model-server|platform}
scripts=(deploy/images/build.sh deploy/images/base.sh)
case "$image" in
  model-server) inputs=(deploy/dev/model-server/*.ts deploy/images/tsconfig.json) ;;
  # What `npm run build` compiles and copies (tsconfig.build.json, package.json's build script) and the locked
  # production dependencies.
  platform)
    inputs=()
    while IFS= read -r -d '' f; do [[ -f "$f" ]] && inputs+=("$f"); done < <(git ls-files -z -co --exclude-standard -- \
      common contracts workflows activities workers api roles deploy/convert package.json package-lock.json .npmrc \
      tsconfig.json tsconfig.build.json deploy/images/manifest.ts)
    ;;
  *) echo "image.sh: unknown image '$image' (model-server, platform)" >&2; exit 2 ;;
esac
hash=$({ sha256sum "${inputs[@]}" "${scripts[@]}"; node -p process.versions.node; } | sha256sum | cut -c1-12)
tag="src-$hash"
archive="$LLMHUB_CACHE/images/$image-$tag.docker.tar"
# build.sh writes the package list last: it marks the archives complete.
done="$LLMHUB_CACHE/images/$image-$tag.packages.json"
if [[ ! -s "$done" ]]; then
  mkdir -p "$LLMHUB_CACHE/images"
  exec 9>"$LLMHUB_CACHE/images/.$image-$tag.lock"
  flock 9
  [[ -s "$done" ]] || LLMHUB_IMAGE_TAG="$tag" bash deploy/images/build.sh "$image" >&2
fi
echo "$archive llmhub/$image:$tag"
