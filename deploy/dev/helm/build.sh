#!/usr/bin/env bash
# Builds helm (v4) from the Go module proxy and fetches the CRDs the chart's checks validate
# against (prometheus-operator's ServiceMonitor/PrometheusRule, Gateway API's HTTPRoute), all
# cached outside git.
#
# Usage: deploy/dev/helm/build.sh [--print-dir]
#   --print-dir   print the cache directory (bin/helm, crds/<project>/*.yaml) and exit (builds nothing)
#
# Env: LLMHUB_CACHE (default ~/.cache/llmhub); GOPATH/GOCACHE/GOMODCACHE are honoured as set.
# The wrapper module under module/ carries a committed go.sum, so a build never needs the checksum
# database. The CRD modules are pinned by version and their go.sum hash (h1:) below: a module zip
# that does not match is refused.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODULE="$HERE/module"

HELM_VERSION=4.3.2
# The last prometheus-operator release the module proxy serves; its module zip holds the CRDs.
PROMETHEUS_OPERATOR_VERSION=0.85.0
PROMETHEUS_OPERATOR_SUM="h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="
# v1.7.0's go.mod asks for Go 1.27, which `go mod download` refuses under the local 1.26 toolchain.
GATEWAY_API_VERSION=1.6.3
GATEWAY_API_SUM="h1:lKpJa5bGlraC/QeACvCpsHLdmO6y0iKfzVl6gzaFEYc="

mod_hash="$(cat "$MODULE/go.mod" "$MODULE/go.sum" | sha256sum | cut -c1-10)"
KEY="helm-${HELM_VERSION}_promop-${PROMETHEUS_OPERATOR_VERSION}_gwapi-${GATEWAY_API_VERSION}_${mod_hash}"
CACHE_ROOT="${LLMHUB_CACHE:-$HOME/.cache/llmhub}/helm"
DEST="$CACHE_ROOT/$KEY"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$DEST"
  exit 0
fi

complete() {
  [[ -f "$DEST/.complete" && -x "$DEST/bin/helm" ]]
}

if complete; then
  echo "helm cached: $DEST"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is required (Go >= 1.26)" >&2; exit 1; }

mkdir -p "$CACHE_ROOT"
# One builder at a time: a second caller (e.g. two test runs) waits and then finds the cache.
exec 9>"$CACHE_ROOT/.build.lock"
flock 9
if complete; then
  echo "helm cached: $DEST"
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

# Copies <module>/<dir>/*.yaml into $STAGE/crds/<name>/ after checking the zip's hash against the pin.
crds() {
  local name="$1" module="$2" version="$3" sum="$4" dir="$5" json got src
  step "fetching $module@$version ($dir)"
  # Outside any module, so the download is not tied to the wrapper's go.sum.
  json="$(cd "$STAGE" && go mod download -json "$module@$version")"
  got="$(sed -n 's/^\t"Sum": "\(.*\)",$/\1/p' <<<"$json")"
  [[ "$got" == "$sum" ]] || { echo "build.sh: $module@$version has sum $got, pinned $sum" >&2; exit 1; }
  src="$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$json")/$dir"
  mkdir -p "$STAGE/crds/$name"
  cp "$src"/*.yaml "$STAGE/crds/$name/"
  chmod 644 "$STAGE/crds/$name"/*.yaml
}

crds prometheus-operator github.com/prometheus-operator/prometheus-operator "v$PROMETHEUS_OPERATOR_VERSION" \
  "$PROMETHEUS_OPERATOR_SUM" example/prometheus-operator-crd
crds gateway-api sigs.k8s.io/gateway-api "v$GATEWAY_API_VERSION" "$GATEWAY_API_SUM" config/crd/standard
# Only CustomResourceDefinitions: the standard channel also ships a ValidatingAdmissionPolicy
# (vap_safeupgrades) that is no CRD and that the checks do not need.
grep -L '^kind: CustomResourceDefinition' "$STAGE"/crds/gateway-api/*.yaml | xargs -r rm -f

step "building helm v$HELM_VERSION"
(cd "$MODULE" && go build -trimpath -ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION \
  -X helm.sh/helm/v4/internal/version.gitTreeState=clean" -o "$STAGE/bin/helm" helm.sh/helm/v4/cmd/helm)

rm -rf "$DEST"
chmod 755 "$STAGE"
mv "$STAGE" "$DEST"
trap - EXIT
touch "$DEST/.complete"
step "done: cold build took $(($(date +%s) - start))s; helm and CRDs in $DEST"
