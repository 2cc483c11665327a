#!/usr/bin/env bash
# The local cluster's REAL node: kubelet + containerd (CRI) + runc + bridge CNI + kube-proxy (iptables), beside the
# kwok nodes, for pods whose containers must really start, probe, crash and stop. Called by cluster.sh (start with
# LLMHUB_KUBE_NODE=1, stop always); see REAL-NODE.md.
#
# Usage: deploy/dev/kube/node.sh packages | slot | start | stop | import <archive>... | status
#   packages install the Debian packages the node needs when one is missing (scripts/setup.sh runs it)
#   slot     claim this data dir's address slot (before the API server starts: it takes the slot's Service range)
#   start    start containerd, the kubelet and kube-proxy in the slot's network namespace; wait for the node Ready
#   stop     stop them, remove the namespace, veth, host route, cgroups and mounts; release the slot
#   import   import image archives (docker-archive or OCI tar) into the node's containerd, namespace k8s.io
#
# Isolation: every run (each jest run, `npm run dev`) has its own slot K in 0..63: network namespace llmhub-node-K
# holding containerd, the kubelet, kube-proxy (so their iptables rules and routes are the namespace's), bridge llmk<K>,
# pods 10.(128+K).0.0/24, Services 10.(128+K).16.0/20, a veth llmh<K> 10.(128+K).255.1 (host) <-> .2 (node), and
# one host route 10.(128+K).0.0/16 into the namespace; containerd's root, state and socket, the kubelet's root and
# cgroup root /llmhub-node-K all under the data dir or named for the slot.
set -euo pipefail
# cluster.sh writes its kubeconfig under umask 077; containerd would create every snapshot's root 0700 with it, and a
# non-root container could not even open its own root directory.
umask 022

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
DATA="${LLMHUB_KUBE_DATA_DIR:-${LLMHUB_DATA:-$REPO/.data}/kube}"
RUN="$DATA/run"
LOGS="$DATA/logs"
NODE="$DATA/node"
KUBECONFIG_FILE="$DATA/kubeconfig"
PKI="$DATA/pki"
START_TIMEOUT="${LLMHUB_KUBE_START_TIMEOUT:-180}"
NODE_NAME=real-0
SLOTS_LOCK="${LLMHUB_KUBE_NODE_LOCK:-/run/lock/llmhub-kube-node-slots.lock}"
CNI_BIN=/usr/lib/cni
PACKAGES=(containerd runc containernetworking-plugins iptables socat conntrack)
# Stop order is the reverse of this list.
PROCESSES=(socat-host socat-node containerd kubelet kube-proxy)

log() { echo "[node] $*" >&2; }
# The reason also goes to run/node.error: cluster.sh starts the control plane anyway (the kwok nodes work without this
# node), and the tests that need this node fail with the reason (cluster.ts realNodeError).
die() {
  log "ERROR: $*"
  [[ "${cmd:-}" != start && "${cmd:-}" != slot ]] || echo "$*" >"$RUN/node.error"
  exit 1
}

t_phase=$SECONDS
phase() { log "phase $1: $((SECONDS - t_phase))s"; t_phase=$SECONDS; }

load_slot() {
  [[ -f "$RUN/node.env" ]] || return 1
  # shellcheck disable=SC1091
  source "$RUN/node.env"
}

slot_vars() {
  local k=$1 x=$((128 + $1))
  SLOT=$k
  NETNS="llmhub-node-$k"
  BRIDGE="llmk$k"
  VETH_HOST="llmh$k"
  VETH_NODE="llmn$k"
  RANGE="10.$x.0.0/16"
  POD_CIDR="10.$x.0.0/24"
  SERVICE_CIDR="10.$x.16.0/20"
  # Nothing answers there: a pod's stray lookup is refused inside the namespace (no route, no DNS server).
  CLUSTER_DNS="10.$x.16.10"
  HOST_IP="10.$x.255.1"
  NODE_IP="10.$x.255.2"
  CGROUP_ROOT="/llmhub-node-$k"
}

# A slot is taken while its network namespace exists (a global name); claiming it creates the namespace under a
# machine-wide lock, so two runs never pick the same ranges.
claim_slot() {
  mkdir -p "$RUN"
  if load_slot_vars && ip netns list | grep -q "^$NETNS\( \|$\)"; then return 0; fi
  mkdir -p "$(dirname "$SLOTS_LOCK")" 2>/dev/null && exec 7>"$SLOTS_LOCK" ||
    die "cannot open the machine-wide slot lock $SLOTS_LOCK"
  flock 7
  local k
  for ((k = 0; k < 64; k++)); do
    ip netns list | grep -q "^llmhub-node-$k\( \|$\)" && continue
    ip route show | grep -q "^10\.$((128 + k))\.0\.0/16 " && continue
    ip netns add "llmhub-node-$k" || die "cannot create a network namespace (ip netns add): this machine needs CAP_SYS_ADMIN and a writable /run/netns"
    echo "SLOT=$k" >"$RUN/node.env"
    slot_vars "$k"
    exec 7>&-
    return 0
  done
  die "all 64 node slots are taken (ip netns list | grep llmhub-node-): stop other runs' clusters"
}

load_slot_vars() { load_slot && slot_vars "$SLOT"; }

pid_of() {
  local pidfile="$RUN/node-$1.pid" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  # Pids get reused: only a process that names this data dir is ours (every one gets a path under it).
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DATA/" || return 1
  echo "$pid"
}

launch() {
  local name=$1
  shift
  setsid "$@" >>"$LOGS/node-$name.log" 2>&1 </dev/null 7>&- 8>&- &
  echo $! >"$RUN/node-$name.pid"
}

in_ns() { nsenter --net="/run/netns/$NETNS" "$@"; }

wait_for() {
  local what=$1 deadline=$((SECONDS + START_TIMEOUT)) p
  shift
  until "$@" >/dev/null 2>&1; do
    for p in "${PROCESSES[@]}"; do
      if [[ -f "$RUN/node-$p.pid" ]] && ! pid_of "$p" >/dev/null; then
        log "$p exited; last log lines:"
        tail -n 30 "$LOGS/node-$p.log" >&2 || true
        die "$p failed while waiting for $what (logs in $LOGS/node-*.log)"
      fi
    done
    ((SECONDS < deadline)) || die "timed out after ${START_TIMEOUT}s waiting for $what (logs in $LOGS/node-*.log)"
    sleep 0.5
  done
}

# The Debian packages the node runs on; apt-get only when one is missing (idempotent, and a no-op when cached).
ensure_packages() {
  local missing=() p
  for p in containerd runc socat iptables conntrack; do command -v "$p" >/dev/null || missing+=("$p"); done
  [[ -x "$CNI_BIN/bridge" && -x "$CNI_BIN/host-local" && -x "$CNI_BIN/loopback" ]] || missing+=(cni-plugins)
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install ${PACKAGES[*]}"
  [[ "$(id -u)" == 0 ]] || die "missing ${missing[*]}; installing ${PACKAGES[*]} needs root"
  log "installing ${PACKAGES[*]} (apt-get; missing: ${missing[*]})"
  # A lock of our own: two runs starting at once must not race on dpkg.
  (
    flock 6
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}"; } >/dev/null
  ) 6>/run/lock/llmhub-apt.lock || die "apt-get install ${PACKAGES[*]} failed"
}

# Says exactly what this machine lacks instead of failing later inside the kubelet.
preflight() {
  [[ "$(id -u)" == 0 ]] || die "the real node needs root (containerd, network namespaces, cgroups); running as uid $(id -u)"
  ensure_packages
  [[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/cpu ]] ||
    die "the kubelet v1.34 here runs with cgroup v1 (cgroupfs driver); /sys/fs/cgroup has no v1 memory and cpu hierarchies"
  [[ -w /sys/fs/cgroup/memory ]] || die "/sys/fs/cgroup/memory is not writable: the container is not privileged"
  [[ -e /dev/kmsg ]] || die "/dev/kmsg is missing (the kubelet's OOM watcher reads it)"
}

write_configs() {
  local ca
  mkdir -p "$NODE"/{containerd/root,containerd/state,cni/conf,cni/ipam,cni/cache,kubelet,kube-proxy,opt}
  cat >"$NODE/containerd/config.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$RUN/containerd.sock"
[ttrpc]
  address = "$RUN/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$NODE/cni/conf"
    max_conf_num = 1
EOF
  # No masquerade and no default route out of the namespace: a pod reaches its bridge, the node's Services and the
  # host end of the veth, nothing else.
  cat >"$NODE/cni/conf/10-llmhub.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "llmhub-node-$SLOT",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE/cni/ipam",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
EOF
  ca="$PKI/ca.crt"
  cat >"$NODE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $ca}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failSwapOn: false
containerRuntimeEndpoint: unix://$RUN/containerd.sock
clusterDNS: [$CLUSTER_DNS]
clusterDomain: cluster.local
resolvConf: ""
# Imported images cannot be pulled again: never collect them, and never evict for this shared disk's use.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "0%", nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}
protectKernelDefaults: false
rotateCertificates: false
serializeImagePulls: false
maxPods: 64
podPidsLimit: -1
staticPodPath: ""
podLogsDir: $NODE/pod-logs
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
registerWithTaints:
- {key: llmhub.dev/real-node, value: "true", effect: NoSchedule}
EOF
  cat >"$NODE/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_FILE}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
# 0: leave the machine-wide conntrack sysctls alone (other runs share them).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false, masqueradeAll: false}
EOF
}

# The pod sandbox image: the pause program of build.sh --node as a one-layer OCI archive (no registry to pull from).
pause_archive() {
  local out="$NODE/pause.oci.tar" dir layer cfg mf ls cs ms
  dir="$(mktemp -d "$NODE/.pause.XXXXXX")"
  mkdir -p "$dir/rootfs" "$dir/oci/blobs/sha256"
  cp "$NODE_BIN/pause" "$dir/rootfs/pause"
  tar -C "$dir/rootfs" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$dir/layer.tar" pause
  layer="$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)"
  ls="$(stat -c %s "$dir/layer.tar")"
  mv "$dir/layer.tar" "$dir/oci/blobs/sha256/$layer"
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer" >"$dir/config.json"
  cfg="$(sha256sum "$dir/config.json" | cut -d' ' -f1)"
  cs="$(stat -c %s "$dir/config.json")"
  mv "$dir/config.json" "$dir/oci/blobs/sha256/$cfg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cfg" "$cs" "$layer" "$ls" >"$dir/manifest.json"
  mf="$(sha256sum "$dir/manifest.json" | cut -d' ' -f1)"
  ms="$(stat -c %s "$dir/manifest.json")"
  mv "$dir/manifest.json" "$dir/oci/blobs/sha256/$mf"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$mf" "$ms" "$PAUSE_IMAGE" "${PAUSE_IMAGE##*:}" >"$dir/oci/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci/oci-layout"
  tar -C "$dir/oci" -cf "$out" .
  rm -rf "$dir"
  echo "$out"
}

ctr_() { ctr --address "$RUN/containerd.sock" --namespace k8s.io "$@"; }

import_images() {
  local a
  for a in "$@"; do
    [[ -f "$a" ]] || die "no image archive $a (npm run images builds them)"
    ctr_ images import --snapshotter overlayfs --no-unpack=false "$a" >/dev/null || die "ctr images import $a failed"
    log "imported $(basename "$a")"
  done
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=10s "$@"; }
node_ready() {
  [[ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
api_in_ns() { in_ns curl -fsk --max-time 3 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -q '^[24]'; }
containerd_up() { ctr_ version; }
proxy_synced() { in_ns iptables -t nat -S KUBE-SERVICES; }

start() {
  # shellcheck disable=SC1091
  source "$RUN/ports.env"
  load_slot_vars || die "no slot claimed (node.sh slot runs before the API server starts)"
  BIN="$("$HERE/build.sh" --print-bin-dir)"
  NODE_BIN="$("$HERE/build.sh" --node --print-bin-dir)"
  PAUSE_IMAGE="localhost/llmhub/pause:$(basename "$(dirname "$NODE_BIN")")"
  mkdir -p "$LOGS" "$NODE"
  rm -f "$RUN/node.error"
  local t0=$SECONDS p
  for p in "${PROCESSES[@]}"; do
    if [[ -f "$LOGS/node-$p.log" ]]; then mv -f "$LOGS/node-$p.log" "$LOGS/node-$p.log.1"; fi
  done
  preflight
  phase packages
  "$HERE/build.sh" --node >&2
  phase build

  # The namespace's network: loopback, a veth to the host, forwarding for the bridge; no default route.
  ip link show "$VETH_HOST" >/dev/null 2>&1 || ip link add "$VETH_HOST" type veth peer name "$VETH_NODE" netns "$NETNS"
  ip addr replace "$HOST_IP/30" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  in_ns ip link set lo up
  in_ns ip addr replace "$NODE_IP/30" dev "$VETH_NODE"
  in_ns ip link set "$VETH_NODE" up
  in_ns sysctl -qw net.ipv4.ip_forward=1
  ip route replace "$RANGE" via "$NODE_IP" dev "$VETH_HOST"
  local sub
  for sub in /sys/fs/cgroup/*/; do
    [[ -L "${sub%/}" ]] && continue
    mkdir -p "$sub${CGROUP_ROOT#/}"
  done
  phase network

  # The kubelet and kube-proxy reach the API server (127.0.0.1 on the host) at 127.0.0.1 of the namespace too, through
  # a socket file, so the API server listens on loopback only and the kubeconfig stays the same.
  rm -f "$RUN/apiserver.sock"
  launch socat-host socat "UNIX-LISTEN:$RUN/apiserver.sock,fork,mode=600" "TCP:127.0.0.1:$APISERVER_PORT"
  launch socat-node nsenter --net="/run/netns/$NETNS" socat \
    "TCP-LISTEN:$APISERVER_PORT,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$RUN/apiserver.sock"
  wait_for "the API server from the node's namespace" api_in_ns

  write_configs
  launch containerd nsenter --net="/run/netns/$NETNS" containerd --config "$NODE/containerd/config.toml"
  wait_for containerd containerd_up
  import_images "$(pause_archive)"
  phase containerd

  launch kubelet nsenter --net="/run/netns/$NETNS" "$NODE_BIN/kubelet" \
    --config="$NODE/kubelet/config.yaml" --kubeconfig="$KUBECONFIG_FILE" \
    --root-dir="$NODE/kubelet/root" --cert-dir="$NODE/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --node-labels="llmhub.dev/node-kind=real" --pod-infra-container-image="$PAUSE_IMAGE" --v=1
  launch kube-proxy nsenter --net="/run/netns/$NETNS" "$NODE_BIN/kube-proxy" \
    --config="$NODE/kube-proxy/config.yaml" --v=1
  wait_for "node $NODE_NAME Ready (kubelet)" node_ready
  wait_for "kube-proxy's iptables chains" proxy_synced
  phase kubelet
  log "real node $NODE_NAME started in $((SECONDS - t0))s (slot $SLOT: pods $POD_CIDR, Services $SERVICE_CIDR, node $NODE_IP)"
}

node_procs() { find "/sys/fs/cgroup/pids$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null || true; }

stop() {
  load_slot_vars || return 0
  local i p pid pids=()
  for ((i = ${#PROCESSES[@]} - 1; i >= 0; i--)); do
    p="${PROCESSES[$i]}"
    if pid="$(pid_of "$p")"; then
      # nsenter execs, so the pid is the program's own.
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  local deadline=$((SECONDS + 20))
  while ((SECONDS < deadline)); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  # containerd 1.6 pins each pod's network namespace under /run/netns/cni-* (machine-wide): ours are the ones a process
  # in this node's cgroups is in.
  local inodes="" ns_pid ns
  for ns_pid in $(node_procs); do
    inodes+=" $(stat -L -c %i "/proc/$ns_pid/ns/net" 2>/dev/null)"
  done
  for ns in /run/netns/cni-*; do
    [[ -e "$ns" ]] || continue
    if [[ " $inodes " == *" $(stat -L -c %i "$ns" 2>/dev/null) "* ]]; then ip netns del "$(basename "$ns")" 2>/dev/null || true; fi
  done
  # containerd's shims (and their containers) outlive containerd by design: end them, found by their -address.
  local shim
  for shim in $(pgrep -f "containerd-shim-runc-v2 .*-address $RUN/containerd.sock" || true); do
    kill -KILL "$shim" 2>/dev/null || true
  done
  # Containers' processes left in the node's cgroups (a killed shim leaves them).
  node_procs | xargs -r kill -KILL 2>/dev/null || true
  # Mounts under the data dir (container root filesystems, sandbox shm, pod volumes), deepest first.
  grep -o " $NODE/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  local sub
  for sub in /sys/fs/cgroup/*/; do
    [[ -d "$sub${CGROUP_ROOT#/}" ]] || continue
    find "$sub${CGROUP_ROOT#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  ip route del "$RANGE" 2>/dev/null || true
  ip link del "$VETH_HOST" 2>/dev/null || true
  # Deleting the namespace deletes its bridge, veth end and iptables rules with it.
  ip netns del "$NETNS" 2>/dev/null || true
  rm -f "$RUN"/node-*.pid "$RUN/node.env" "$RUN/apiserver.sock"
  log "stopped (slot $SLOT released)"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  packages) ensure_packages ;;
  slot)
    claim_slot
    echo "$SERVICE_CIDR"
    ;;
  start) start ;;
  stop) stop ;;
  import)
    load_slot_vars || die "the real node is not running"
    import_images "$@"
    ;;
  status)
    load_slot_vars || { log "not running"; exit 1; }
    BIN="$("$HERE/build.sh" --print-bin-dir)"
    node_ready || { log "not ready"; exit 1; }
    log "running (slot $SLOT)"
    ;;
  *)
    sed -n '2,17p' "$0" >&2
    exit 2
    ;;
esac
