#!/usr/bin/env bash
# The reference model server's image for the real node's tests, built by deploy/images/build.sh only when its inputs
# changed: the tag is a hash of the server's sources, the image scripts and the Node version, not the commit, so a commit
# that does not touch them reuses the archive in $LLMHUB_CACHE/images.
#
# Usage: deploy/dev/kube/model-server-image.sh   prints "<archive> <image>" (docker-archive path, name for a pod spec)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
source scripts/toolchain.sh
llmhub_ensure_node
tag="src-$(cat deploy/dev/model-server/*.ts deploy/images/build.sh deploy/images/base.sh deploy/images/tsconfig.json \
  <(node -p process.versions.node) | sha256sum | cut -c1-12)"
archive="$LLMHUB_CACHE/images/model-server-$tag.docker.tar"
if [[ ! -f "$archive" ]]; then
  mkdir -p "$LLMHUB_CACHE/images"
  exec 9>"$LLMHUB_CACHE/images/.model-server-$tag.lock"
  flock 9
  [[ -f "$archive" ]] || LLMHUB_IMAGE_TAG="$tag" bash deploy/images/build.sh model-server >&2
fi
echo "$archive llmhub/model-server:$tag"
