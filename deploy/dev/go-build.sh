# Sourced by the scripts that build tools from the Go module proxy (kube, helm, prometheus, otel): one cached build
# per key, outside git. The wrapper modules carry committed go.sum files, so a build never needs the checksum database
# and always resolves to the same dependency set; GOPATH/GOCACHE/GOMODCACHE are honoured as set.

# Prints "[<seconds since the build started>s] <what>".
go_step() { echo "[$(($(date +%s) - ${GO_BUILD_START:-$(date +%s)}))s] $*"; }

# go_cached_build <name> <dest> <is-complete> <build>: nothing when <is-complete> holds, else <build> <stage> fills a
# fresh folder that then becomes <dest> (with a .complete marker), so a killed build never leaves a half cache. One
# builder at a time per tool: a second caller (two test runs) waits for the lock, then finds the cache.
go_cached_build() {
  local name=$1 dest=$2 is_complete=$3 build=$4 root
  root=$(dirname "$dest")
  if "$is_complete"; then echo "$name cached: $dest"; return 0; fi
  command -v go >/dev/null || { echo "$name: go is required (Go >= 1.26)" >&2; return 1; }
  mkdir -p "$root"
  exec 9>"$root/.build.lock"
  flock 9
  if "$is_complete"; then echo "$name cached: $dest"; return 0; fi
  GO_BUILD_STAGE="$(mktemp -d "$root/.stage.XXXXXX")"
  trap 'rm -rf "$GO_BUILD_STAGE"' EXIT
  # The toolchain is the machine's; never let a go line trigger a toolchain download.
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
  GO_BUILD_START=$(date +%s)
  "$build" "$GO_BUILD_STAGE"
  rm -rf "$dest"
  chmod 755 "$GO_BUILD_STAGE"
  mv "$GO_BUILD_STAGE" "$dest"
  trap - EXIT
  touch "$dest/.complete"
  go_step "done: cold build of $name took $(($(date +%s) - GO_BUILD_START))s; in $dest"
}

# go_bins_complete <dest> <binary>...: the build at <dest> finished and holds each binary in its bin/.
go_bins_complete() {
  local dest=$1 b
  shift
  [[ -f "$dest/.complete" ]] || return 1
  for b in "$@"; do [[ -x "$dest/bin/$b" ]] || return 1; done
}
