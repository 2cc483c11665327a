#!/usr/bin/env bash
# Local Kubernetes control plane for dev and tests: etcd + kube-apiserver +
# kube-controller-manager + kube-scheduler + kwok (fake nodes), all on 127.0.0.1.
#
# Usage: deploy/dev/kube/cluster.sh start [--fresh] | stop | status | kubeconfig
#   start     build (cached) binaries if needed, start everything, create the fake nodes and
#             wait until the cluster is usable; a no-op when it is already running.
#             --fresh wipes the cluster state (etcd) first; certificates are kept.
#   stop      stop every process this data dir started; waits until they are gone.
#   status    exit 0 when running and the API server is ready, 1 otherwise.
#   kubeconfig  print the kubeconfig path.
#
# Env:
#   LLMHUB_KUBE_DATA_DIR   state dir (default ${LLMHUB_DATA:-<repo>/.data}/kube)
#   LLMHUB_KUBE_APISERVER_PORT (6443) LLMHUB_KUBE_ETCD_PORT (12379) LLMHUB_KUBE_ETCD_PEER_PORT (12380)
#   LLMHUB_KUBE_CONTROLLER_MANAGER_PORT (10357) LLMHUB_KUBE_SCHEDULER_PORT (10359)
#   LLMHUB_KUBE_START_TIMEOUT seconds (180)
#   LLMHUB_KUBE_NODE=1     also start the real node (node.sh, REAL-NODE.md): kubelet + containerd beside the kwok
#                          nodes; the API server then takes that node's per-run Service range
# Ports are recorded at start; stop/status use the recorded ones.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
DATA="${LLMHUB_KUBE_DATA_DIR:-${LLMHUB_DATA:-$REPO/.data}/kube}"
PKI="$DATA/pki"
RUN="$DATA/run"
LOGS="$DATA/logs"
KUBECONFIG_FILE="$DATA/kubeconfig"
START_TIMEOUT="${LLMHUB_KUBE_START_TIMEOUT:-180}"
# Stop order is the reverse of this list.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { echo "[kube] $*" >&2; }
command -v curl >/dev/null || { echo "[kube] ERROR: curl is required" >&2; exit 1; }
die() { log "ERROR: $*"; exit 1; }

load_ports() {
  if [[ -f "$RUN/ports.env" ]]; then
    # shellcheck disable=SC1091
    source "$RUN/ports.env"
  else
    APISERVER_PORT="${LLMHUB_KUBE_APISERVER_PORT:-6443}"
    ETCD_PORT="${LLMHUB_KUBE_ETCD_PORT:-12379}"
    ETCD_PEER_PORT="${LLMHUB_KUBE_ETCD_PEER_PORT:-12380}"
    CM_PORT="${LLMHUB_KUBE_CONTROLLER_MANAGER_PORT:-10357}"
    SCHED_PORT="${LLMHUB_KUBE_SCHEDULER_PORT:-10359}"
  fi
}

# A pid file only counts while its process still runs our binary: pids get reused.
pid_of() {
  local name="$1" pidfile="$RUN/$1.pid" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "/$name " || return 1
  echo "$pid"
}

any_running() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null && return 0; done
  return 1
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=10s "$@"; }

api_ready() {
  [[ -f "$KUBECONFIG_FILE" ]] || return 1
  kubectl_ get --raw /readyz >/dev/null 2>&1
}

stop_all() {
  local i c pid pids=()
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c="${COMPONENTS[$i]}"
    if pid="$(pid_of "$c")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      # etcd last and only once the clients are gone, so they don't spin on reconnects.
      if [[ "$c" == "kube-apiserver" ]]; then wait_gone 20 "${pids[@]}"; fi
    fi
  done
  wait_gone 20 "${pids[@]}"
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid ignored SIGTERM; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  wait_gone 10 "${pids[@]}"
  rm -f "$RUN"/*.pid
}

wait_gone() {
  local secs="$1" deadline pid alive
  shift
  deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.2
  done
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

gen_pki() {
  [[ -f "$PKI/.complete" ]] && return 0
  command -v openssl >/dev/null || die "openssl is required"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=llmhub-local-kube-ca" 2>/dev/null
    cat > apiserver.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
    # One cluster-admin identity (system:masters) for tests, controllers and kwok alike:
    # this cluster is single-user and loopback-only.
    cat > client.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=llmhub-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out admin.crt -days 3650 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext
    chmod 600 ./*.key
  )
  touch "$PKI/.complete"
}

write_kubeconfig() {
  local ca crt key
  ca="$(base64 -w0 < "$PKI/ca.crt")"
  crt="$(base64 -w0 < "$PKI/admin.crt")"
  key="$(base64 -w0 < "$PKI/admin.key")"
  umask 077
  cat > "$KUBECONFIG_FILE.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: llmhub-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $ca
users:
- name: llmhub-admin
  user:
    client-certificate-data: $crt
    client-key-data: $key
contexts:
- name: llmhub-local
  context:
    cluster: llmhub-local
    user: llmhub-admin
current-context: llmhub-local
EOF
  mv "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
}

launch() {
  local name="$1"
  shift
  # setsid: the control plane must outlive the shell (or jest worker) that started it.
  # 8>&-: the start lock must not be inherited, or it would stay held while the cluster runs.
  setsid "$BIN/$name" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 8>&- &
  echo $! > "$RUN/$name.pid"
}

wait_for() {
  local what="$1" deadline=$((SECONDS + START_TIMEOUT))
  shift
  until "$@" >/dev/null 2>&1; do
    local c
    for c in "${COMPONENTS[@]}"; do
      if [[ -f "$RUN/$c.pid" ]] && ! pid_of "$c" >/dev/null; then
        log "$c exited; last log lines:"
        tail -n 30 "$LOGS/$c.log" >&2 || true
        stop_all
        die "$c failed while waiting for $what"
      fi
    done
    if ((SECONDS >= deadline)); then
      stop_all
      die "timed out after ${START_TIMEOUT}s waiting for $what (logs in $LOGS)"
    fi
    sleep 0.5
  done
}

https_ok() { curl -fsk --max-time 5 "https://127.0.0.1:$1/healthz"; }
nodes_ready() {
  local names n
  mapfile -t names < <(awk '/^kind: Node/ {n = 1} n && /^  name:/ {print $2; n = 0}' "$HERE/nodes.yaml")
  n="$(kubectl_ get nodes "${names[@]}" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
    | grep -c '^True$')"
  [[ "$n" -eq "${#names[@]}" ]]
}
default_sa() { kubectl_ -n default get serviceaccount default; }

start() {
  local fresh=0
  [[ "${1:-}" == "--fresh" ]] && fresh=1
  mkdir -p "$RUN" "$LOGS"
  exec 8>"$RUN/.lock"
  flock 8
  BIN="$("$HERE/build.sh" --print-bin-dir)"

  if ((!fresh)) && all_running; then
    load_ports
    if api_ready; then
      log "already running (kubeconfig: $KUBECONFIG_FILE)"
      echo "$KUBECONFIG_FILE"
      return 0
    fi
  fi
  if any_running; then
    log "stopping a partial or to-be-wiped cluster first"
    stop_all
  fi
  # Left by a crash or reboot; they would read as "component exited" below.
  rm -f "$RUN"/*.pid

  "$HERE/build.sh" >&2

  local t0=$SECONDS
  rm -f "$RUN/ports.env"
  load_ports
  local p
  for p in "$APISERVER_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$CM_PORT" "$SCHED_PORT"; do
    port_free "$p" || die "port 127.0.0.1:$p is in use (set LLMHUB_KUBE_*_PORT to move it)"
  done
  cat > "$RUN/ports.env" <<EOF
APISERVER_PORT=$APISERVER_PORT
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
CM_PORT=$CM_PORT
SCHED_PORT=$SCHED_PORT
EOF

  if ((fresh)); then rm -rf "$DATA/etcd"; fi
  local service_cidr=10.96.0.0/16 node_failed=0
  rm -f "$RUN/node.error"
  if [[ "${LLMHUB_KUBE_NODE:-}" == 1 ]]; then service_cidr="$("$HERE/node.sh" slot)" || node_failed=1; fi
  [[ -n "$service_cidr" ]] || service_cidr=10.96.0.0/16
  local c
  for c in "${COMPONENTS[@]}"; do
    if [[ -f "$LOGS/$c.log" ]]; then mv -f "$LOGS/$c.log" "$LOGS/$c.log.1"; fi
  done
  gen_pki
  write_kubeconfig

  launch etcd \
    --name=llmhub-local --data-dir="$DATA/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="llmhub-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --quota-backend-bytes=2147483648 --log-level=warn
  wait_for etcd curl -fs --max-time 3 "http://127.0.0.1:$ETCD_PORT/health"

  # The requestheader CA only exists so that the controller-manager's and scheduler's delegated
  # authentication find one (they log errors every few ms otherwise); no front-proxy cert is issued.
  # DefaultTolerationSeconds would otherwise give every pod 300 s on not-ready/unreachable
  # nodes; 10 s lets node-loss tests see taint-based eviction quickly.
  launch kube-apiserver \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --requestheader-client-ca-file="$PKI/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$service_cidr" \
    --kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key" \
    --kubelet-preferred-address-types=InternalIP \
    --authorization-mode=RBAC \
    --allow-privileged=true \
    --default-not-ready-toleration-seconds=10 --default-unreachable-toleration-seconds=10 \
    --enable-priority-and-fairness=false \
    --profiling=false \
    --v=1
  wait_for kube-apiserver api_ready

  # Nodes are "lost" after 30 s without a lease renewal (kwok renews every 5 s).
  launch kube-controller-manager \
    --kubeconfig="$KUBECONFIG_FILE" \
    --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
    --bind-address=127.0.0.1 --secure-port="$CM_PORT" \
    --leader-elect=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --use-service-account-credentials=false \
    --node-monitor-period=2s --node-monitor-grace-period=30s \
    --profiling=false \
    --v=1
  launch kube-scheduler \
    --kubeconfig="$KUBECONFIG_FILE" \
    --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
    --leader-elect=false \
    --profiling=false \
    --v=1
  # Node IP is loopback so nothing ever tries to reach a fake node anywhere else.
  launch kwok \
    --kubeconfig="$KUBECONFIG_FILE" \
    --config="$HERE/kwok-stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=20 \
    --node-ip=127.0.0.1 \
    --cidr=10.244.0.0/16

  kubectl_ apply --server-side --force-conflicts --field-manager=llmhub-dev-kube -f "$HERE/nodes.yaml" >/dev/null
  wait_for kube-controller-manager https_ok "$CM_PORT"
  wait_for kube-scheduler https_ok "$SCHED_PORT"
  wait_for "fake nodes Ready (kwok)" nodes_ready
  wait_for "default service account (controller-manager)" default_sa

  log "started in $((SECONDS - t0))s; kubeconfig: $KUBECONFIG_FILE"
  # Without its node the cluster still serves the kwok nodes: the reason is kept for the tests that need the node
  # (cluster.ts realNodeError), which then fail with it.
  if [[ "${LLMHUB_KUBE_NODE:-}" == 1 ]] && { ((node_failed)) || ! "$HERE/node.sh" start; }; then
    [[ -s "$RUN/node.error" ]] || echo "node.sh failed (its output above; logs in $LOGS/node-*.log)" >"$RUN/node.error"
    log "ERROR: the real node did not start: $(cat "$RUN/node.error")"
  fi
  echo "$KUBECONFIG_FILE"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  start) start "$@" ;;
  stop)
    mkdir -p "$RUN"
    exec 8>"$RUN/.lock"
    flock 8
    "$HERE/node.sh" stop
    if any_running; then stop_all; log "stopped"; else rm -f "$RUN"/*.pid; log "not running"; fi
    ;;
  status)
    load_ports
    BIN="$("$HERE/build.sh" --print-bin-dir)"
    if all_running && [[ -x "$BIN/kubectl" ]] && api_ready; then
      log "running (kubeconfig: $KUBECONFIG_FILE)"
    else
      log "not running"
      exit 1
    fi
    ;;
  kubeconfig) echo "$KUBECONFIG_FILE" ;;
  *)
    sed -n '2,19p' "$0" >&2
    exit 2
    ;;
esac
