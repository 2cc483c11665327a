#!/usr/bin/env bash
# Builds the local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from the Go module proxy and caches the binaries outside git.
#
# Usage: deploy/dev/kube/build.sh [--print-bin-dir]
#   --print-bin-dir   print the cache's bin directory and exit (builds nothing)
#
# Env: LLMHUB_CACHE (default ~/.cache/llmhub); GOPATH/GOCACHE/GOMODCACHE are honoured as set.
# The wrapper modules under modules/ carry committed go.sum files, so a build never needs the
# checksum database and always resolves to the same dependency set.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODULES="$HERE/modules"

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

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$BIN"
  exit 0
fi

complete() {
  [[ -f "$DEST/.complete" ]] || return 1
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

if complete; then
  echo "kube binaries cached: $BIN"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is required (Go >= 1.26)" >&2; exit 1; }

mkdir -p "$CACHE_ROOT"
# One builder at a time: a second caller (e.g. two test runs) waits and then finds the cache.
exec 9>"$CACHE_ROOT/.build.lock"
flock 9
if complete; then
  echo "kube binaries cached: $BIN"
  exit 0
fi

STAGE="$(mktemp -d "$CACHE_ROOT/.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

# The toolchain is the machine's; never let a go line trigger a toolchain download.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"

start=$(date +%s)
step() { echo "[$(($(date +%s) - start))s] $*"; }

step "building etcd v$ETCD_VERSION"
(cd "$MODULES/etcd" && go build -trimpath -ldflags="-s -w" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3)

step "building kwok v$KWOK_VERSION"
(cd "$MODULES/kwok" && go build -trimpath -ldflags="-s -w" -o "$STAGE/kwok" sigs.k8s.io/kwok/cmd/kwok)

# One go build for all Kubernetes commands so the shared packages compile once. Version
# stamps mirror what the upstream release build sets (clients show them; skew checks read them).
step "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl v$K8S_VERSION"
minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
vflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  vflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  vflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
(cd "$MODULES/kubernetes" && go build -trimpath -ldflags="-s -w$vflags" -o "$STAGE/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl)

rm -rf "$DEST"
mkdir -p "$DEST"
chmod 755 "$STAGE"
mv "$STAGE" "$BIN"
trap - EXIT
touch "$DEST/.complete"
step "done: cold build took $(($(date +%s) - start))s; binaries in $BIN"
