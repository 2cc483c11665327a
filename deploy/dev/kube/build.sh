#!/usr/bin/env bash
# Builds the local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from the Go module proxy and caches the binaries outside git.
#
# Usage: deploy/dev/kube/build.sh [--print-bin-dir] | --node [--print-bin-dir]
#   --print-bin-dir   print the cache's bin directory and exit (builds nothing)
#   --node            the real node's binaries instead (kubelet, kube-proxy from the same pinned Kubernetes, and the
#                     pod sandbox program), cached under their own key so the control plane's cache does not move
#
# Env: LLMHUB_CACHE (default ~/.cache/llmhub); GOPATH/GOCACHE/GOMODCACHE are honoured as set.
# The wrapper modules under modules/ carry committed go.sum files, so a build never needs the
# checksum database and always resolves to the same dependency set.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODULES="$HERE/modules"
source "$HERE/../go-build.sh"

K8S_VERSION=1.34.4
ETCD_VERSION=3.6.16
KWOK_VERSION=0.8.0

# The key also hashes the wrapper modules so a bumped go.sum never reuses stale binaries.
mod_hash="$(cat "$MODULES"/*/go.mod "$MODULES"/*/go.sum | sha256sum | cut -c1-10)"
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_${mod_hash}"
CACHE_ROOT="${LLMHUB_CACHE:-$HOME/.cache/llmhub}/kube"
DEST="$CACHE_ROOT/$KEY"
BIN="$DEST/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

# Version stamps mirror what the upstream release build sets (clients show them; skew checks read them).
version_flags() {
  local minor="${K8S_VERSION#*.}" vflags="" pkg
  minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    vflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    vflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$vflags"
}

NODE_KEY="node-k8s-${K8S_VERSION}_$(cat "$MODULES"/{node,pause}/go.* "$MODULES"/pause/*.go | sha256sum | cut -c1-10)"
NODE_DEST="$CACHE_ROOT/$NODE_KEY"
NODE_BINARIES=(kubelet kube-proxy pause)

if [[ "${1:-}" == "--node" ]]; then
  if [[ "${2:-}" == "--print-bin-dir" ]]; then
    echo "$NODE_DEST/bin"
    exit 0
  fi
  node_complete() { go_bins_complete "$NODE_DEST" "${NODE_BINARIES[@]}"; }
  node_build() {
    local stage=$1
    mkdir -p "$stage/bin"
    go_step "building kubelet, kube-proxy v$K8S_VERSION"
    (cd "$MODULES/node" && go build -trimpath -ldflags="-s -w$(version_flags)" -o "$stage/bin/" \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
    go_step "building pause"
    (cd "$MODULES/pause" && go build -trimpath -ldflags="-s -w" -o "$stage/bin/pause" .)
  }
  go_cached_build "kube node binaries" "$NODE_DEST" node_complete node_build
  exit 0
fi

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$BIN"
  exit 0
fi

complete() { go_bins_complete "$DEST" "${BINARIES[@]}"; }

build() {
  local stage=$1
  mkdir -p "$stage/bin"
  go_step "building etcd v$ETCD_VERSION"
  (cd "$MODULES/etcd" && go build -trimpath -ldflags="-s -w" -o "$stage/bin/etcd" go.etcd.io/etcd/server/v3)

  go_step "building kwok v$KWOK_VERSION"
  (cd "$MODULES/kwok" && go build -trimpath -ldflags="-s -w" -o "$stage/bin/kwok" sigs.k8s.io/kwok/cmd/kwok)

  # One go build for all Kubernetes commands so the shared packages compile once.
  go_step "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl v$K8S_VERSION"
  (cd "$MODULES/kubernetes" && go build -trimpath -ldflags="-s -w$(version_flags)" -o "$stage/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl)
}

go_cached_build "kube binaries" "$DEST" complete build
