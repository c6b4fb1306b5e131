#!/usr/bin/env bash
# The local single-node Kubernetes cluster: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, containerd and kube-router's NetworkPolicy firewall; root, no systemd.
#   hack/cluster.sh up      build what is missing (cached), start everything, wait until usable
#   hack/cluster.sh down    stop everything; leave no process, mount, netns, device or iptables rule
#   hack/cluster.sh status  what runs
#   hack/cluster.sh purge   down, then delete the state dir (certificates, etcd data, imported images)
# State: $SANDBOX_CLUSTER_DIR (logs/<component>.log, kubeconfig, bin/); cache: $SANDBOX_CACHE.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$HACK_DIR/cluster-config.sh"
source "$HACK_DIR/cluster-processes.sh"

LOGS=$SANDBOX_CLUSTER_DIR/logs
KUBECTL=$SANDBOX_CLUSTER_DIR/bin/kubectl
HOST_PACKAGES=(containerd runc containernetworking-plugins iptables nftables iproute2 ipset conntrack
  socat ethtool kmod openssl curl mmdebstrap umoci skopeo debian-archive-keyring gcc libc6-dev)

kubectl_admin() { "$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# wait_for WHAT SECONDS COMPONENT CMD...: polls CMD; on timeout shows COMPONENT's log and hints.
wait_for() {
  local what=$1 deadline=$((SECONDS + $2)) component=$3
  shift 3
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge "$deadline" ] || ! component_running "$component"; then
      log "error: $what did not happen ($component $(component_running "$component" && echo running || echo exited))"
      log "---- last lines of $LOGS/$component.log ----"
      tail -n 25 "$LOGS/$component.log" >&2 || true
      log "---- try: read the whole log above; 'hack/cluster.sh down' then 'hack/cluster.sh up' for a clean start;"
      log "     'hack/cluster.sh purge' to also drop certificates, etcd data and imported images ----"
      return 1
    fi
    sleep 1
  done
}

prepare_host() {
  require_root
  ensure_debian_packages "${HOST_PACKAGES[@]}"
  modprobe br_netfilter 2>/dev/null || true
  modprobe overlay 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1
  [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || sysctl -qw net.bridge.bridge-nf-call-iptables=1
  mkdir -p "$LOGS" "$RUN_DIR" "$SANDBOX_CLUSTER_DIR/bin"
  ln -sf "$KUBERNETES_BIN/kubectl" "$SANDBOX_CLUSTER_DIR/bin/kubectl"
  ln -sf "$HELM_BIN/helm" "$SANDBOX_CLUSTER_DIR/bin/helm"
}

# The control plane's network namespace and the veth that joins it to the host.
create_control_plane_network() {
  ip netns list | grep -w "$CONTROL_PLANE_NETNS" >/dev/null || ip netns add "$CONTROL_PLANE_NETNS"
  if ! ip link show "$CONTROL_PLANE_LINK" >/dev/null 2>&1; then
    ip link add "$CONTROL_PLANE_LINK" type veth peer name eth0 netns "$CONTROL_PLANE_NETNS"
    ip addr add "$NODE_IP/30" dev "$CONTROL_PLANE_LINK"
    ip link set "$CONTROL_PLANE_LINK" up
    ip -n "$CONTROL_PLANE_NETNS" addr add "$APISERVER_IP/30" dev eth0
    ip -n "$CONTROL_PLANE_NETNS" link set lo up
    ip -n "$CONTROL_PLANE_NETNS" link set eth0 up
    ip -n "$CONTROL_PLANE_NETNS" route add default via "$NODE_IP"
  fi
}

etcd_healthy() {
  ip netns exec "$CONTROL_PLANE_NETNS" python3 -c 'import json, sys, urllib.request
sys.exit(json.load(urllib.request.urlopen("http://127.0.0.1:2379/health", timeout=2)).get("health") != "true")' 2>/dev/null
}

# Privileged pods are allowed cluster-wide, as on a real cluster: Pod Security admission decides per
# namespace (sandbox namespaces enforce `restricted`).
start_control_plane() {
  start_component etcd netns "$ETCD_BIN/etcd" --name sandbox --data-dir "$SANDBOX_CLUSTER_DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster sandbox=http://127.0.0.1:2380 --log-level warn \
    --unsafe-no-fsync # a disposable development cluster: speed over crash durability
  # etcd replays its log before it serves (tens of seconds once large results were stored), and the
  # apiserver gives up on its storage after 20 s: start it once etcd says it is healthy.
  wait_for "etcd healthy" 180 etcd etcd_healthy
  start_component kube-apiserver netns "$KUBERNETES_BIN/kube-apiserver" \
    --advertise-address "$APISERVER_IP" --secure-port 6443 --etcd-servers http://127.0.0.1:2379 \
    --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/service-account.pub" --service-account-signing-key-file "$PKI/service-account.key" \
    --kubelet-preferred-address-types InternalIP,Hostname --profiling=false --v=1
  wait_for "the API server answering /readyz" 90 kube-apiserver kubectl_admin get --raw /readyz
  # The apiserver's kubelet client (logs, exec, port-forward) gets exactly the kubelet API role.
  kubectl_admin create clusterrolebinding sandbox:apiserver-kubelet-client --clusterrole system:kubelet-api-admin \
    --user kube-apiserver-kubelet-client --dry-run=client -o yaml | kubectl_admin apply -f - >/dev/null
  start_component kube-controller-manager host "$KUBERNETES_BIN/kube-controller-manager" \
    --kubeconfig "$CONF/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$CONF/controller-manager.kubeconfig" --authorization-kubeconfig "$CONF/controller-manager.kubeconfig" \
    --service-account-private-key-file "$PKI/service-account.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials --controllers '*' --leader-elect=false --bind-address 127.0.0.1 \
    --cluster-name sandbox --profiling=false --v=1
  start_component kube-scheduler host "$KUBERNETES_BIN/kube-scheduler" --kubeconfig "$CONF/scheduler.kubeconfig" \
    --authentication-kubeconfig "$CONF/scheduler.kubeconfig" --authorization-kubeconfig "$CONF/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --profiling=false --v=1
}

# Ready as reported since KUBELET_STARTED: etcd keeps the previous run's "Ready".
node_ready_since_start() {
  local ready
  ready=$(kubectl_admin get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  [[ $ready == "True "* && ! ${ready#True } < $KUBELET_STARTED ]]
}

# containerd's CRI service logged its last start-up step since containerd was last started.
cri_serving() {
  awk '/^==== .* starting:/ { ready = 0 } /msg="Start streaming server"/ { ready = 1 } END { exit !ready }' \
    "$LOGS/containerd.log"
}

start_node() {
  start_component containerd host containerd --config "$CONF/containerd.toml"
  wait_for "containerd's socket" 30 containerd ctr --address "$CONTAINERD_SOCKET" version
  # The socket answers before the CRI plugin has initialised, and a kubelet asking then exits.
  wait_for "containerd's CRI service" 60 containerd cri_serving
  local tarballs
  mapfile -t tarballs < <("$HACK_DIR/images.sh" tarballs 2>/dev/null)
  "$HACK_DIR/images.sh" import "${tarballs[@]}"
  KUBELET_STARTED=$(date -u +%FT%TZ)
  start_component kubelet host "$KUBERNETES_BIN/kubelet" --config "$CONF/kubelet.yaml" \
    --kubeconfig "$CONF/kubelet.kubeconfig" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --root-dir "$SANDBOX_CLUSTER_DIR/kubelet" --cert-dir "$SANDBOX_CLUSTER_DIR/kubelet/pki" --v=1
  start_component kube-proxy host "$KUBERNETES_BIN/kube-proxy" --config "$CONF/kube-proxy.yaml" --v=1
  wait_for "node $NODE_NAME Ready" 120 kubelet node_ready_since_start
}

# kube-router's firewall only: pod-to-pod and pod-to-node traffic (iptables filter chains + ipsets).
start_network_policies() {
  kubectl_admin apply -f "$HACK_DIR/manifests/kube-router-rbac.yaml" >/dev/null
  start_component kube-router host "$KUBE_ROUTER_BIN/kube-router" --kubeconfig "$CONF/kube-router.kubeconfig" \
    --hostname-override "$NODE_NAME" --run-firewall=true --run-router=false --run-service-proxy=false \
    --enable-cni=false --service-cluster-ip-range "$SERVICE_CIDR" --health-port 0 --metrics-port 0 --v=1
  wait_for "kube-router's firewall chains" 60 kube-router iptables -S KUBE-ROUTER-FORWARD
  wait_for "the default ServiceAccount" 60 kube-controller-manager \
    kubectl_admin -n default get serviceaccount default
}

print_usage_hint() {
  log "cluster ready. Use it with:"
  printf 'export KUBECONFIG=%s\nexport PATH=%s:$PATH\n' "$ADMIN_KUBECONFIG" "$SANDBOX_CLUSTER_DIR/bin"
}

# The Go builds and the image builds at once (both niced). Either failing fails both; an interrupt or a
# failed Go build stops the image builds too (a script's background job ignores SIGINT).
build_binaries_and_images() {
  local images
  "$HACK_DIR/images.sh" tarballs >/dev/null &
  images=$!
  trap "kill -TERM $images 2>/dev/null || true; wait $images 2>/dev/null || true" EXIT
  "$HACK_DIR/build.sh" all
  wait "$images"
  trap - EXIT
}

cluster_healthy() {
  all_components_running && [ -x "$KUBECTL" ] && kubectl_admin get --raw /readyz >/dev/null 2>&1
}

up() {
  local start=$SECONDS
  if cluster_healthy; then
    log "the cluster is already running ($(kubectl_admin get node "$NODE_NAME" --no-headers 2>/dev/null | awk '{print $2}'))"
    print_usage_hint
    return 0
  fi
  # Whatever a previous run left (a crash, a killed session, some components still up) goes first.
  phase "clean up what a previous run left" down || log "    continuing despite the leftovers above"
  phase "host packages and kernel settings" prepare_host
  phase "binaries and images, side by side (cached in $SANDBOX_CACHE/bin and $SANDBOX_CACHE/images)" build_binaries_and_images
  phase "certificates and configuration" eval 'write_certificates; write_containerd_config; write_component_configs'
  phase "control-plane network namespace" create_control_plane_network
  phase "control plane (etcd, apiserver, controller-manager, scheduler)" start_control_plane
  phase "node (containerd, images, kubelet, kube-proxy)" start_node
  phase "NetworkPolicy enforcer (kube-router firewall)" start_network_policies
  log "==> cluster up in $((SECONDS - start))s"
  print_usage_hint
}

status() {
  local component
  for component in "${COMPONENTS[@]}"; do
    if component_running "$component"; then
      printf '%-24s running (pid %s)\n' "$component" "$(component_pid "$component")"
    else
      printf '%-24s stopped\n' "$component"
    fi
  done
  if cluster_healthy; then
    kubectl_admin get nodes -o wide
    kubectl_admin get pods -A
    print_usage_hint
  else
    echo "cluster: not running (start it with 'make cluster-up')"
    return 1
  fi
}

main() {
  # One up/down at a time (several test sessions may share this machine's cluster).
  exec 9>"$RUN_DIR.lock" # beside RUN_DIR, which `down` removes
  flock 9
  case ${1:-} in
    up) up ;;
    down) require_root; phase "stop the cluster" down ;;
    status) status ;;
    purge) require_root; phase "stop the cluster" down; rm -rf "$SANDBOX_CLUSTER_DIR"; log "removed $SANDBOX_CLUSTER_DIR" ;;
    *) die "usage: hack/cluster.sh up|down|status|purge" ;;
  esac
}

main "$@"
