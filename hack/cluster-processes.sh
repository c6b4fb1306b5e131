# Starting, checking and stopping the cluster's daemons, and the teardown that leaves the host as it
# was (sourced by hack/cluster.sh; needs lib.sh and cluster-config.sh).
# Pipelines here use `grep PATTERN >/dev/null`, not `grep -q`: under pipefail, grep -q leaving at the
# first match can kill the writer with SIGPIPE and turn a match into a failure.
# shellcheck shell=bash

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy kube-router)
# What kube-proxy, the kubelet, kube-router and the CNI bridge plugin add to the host: every iptables
# chain is KUBE-* or CNI-*, every ipset kube-router's.
CLUSTER_RULES='KUBE-|CNI-'
CLUSTER_IPSETS='^(inet6:)?(KUBE-|kube-router)'

# start_component NAME host|netns CMD...: a daemon in its own session, logging to logs/NAME.log.
start_component() {
  local name=$1 where=$2 prefix=()
  shift 2
  [ "$where" = netns ] && prefix=(ip netns exec "$CONTROL_PLANE_NETNS")
  # Logs are appended across runs; keep one previous generation once a log passes 50 MB.
  if [ "$(stat -c %s "$LOGS/$name.log" 2>/dev/null || echo 0)" -gt 50000000 ]; then
    mv "$LOGS/$name.log" "$LOGS/$name.log.1"
  fi
  echo "==== $(date -u +%FT%TZ) starting: $*" >>"$LOGS/$name.log"
  # exec keeps the pid: subshell -> ip netns exec -> setsid -> the daemon are one process. The daemon
  # must not inherit fd 9, hack/cluster.sh's lock.
  (exec "${prefix[@]}" setsid "$@") >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  local pid=$!
  echo "$pid" >"$RUN_DIR/$name.pid"
  # Until the exec chain reaches the daemon, /proc shows the subshell's command line, which
  # component_running would take for a dead component: wait (1 s at most) for the daemon's own.
  local tries=0
  while ! component_running "$name" && kill -0 "$pid" 2>/dev/null && [ $((tries += 1)) -le 50 ]; do
    sleep 0.02
  done
}

component_pid() { cat "$RUN_DIR/$1.pid" 2>/dev/null; }

# A pid file alone is not trusted: the process must exist and be the component's program.
component_running() {
  local pid
  pid=$(component_pid "$1") || return 1
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -- "$1" >/dev/null
}

all_components_running() {
  local component
  for component in "${COMPONENTS[@]}"; do component_running "$component" || return 1; done
}

# stop_components NAME...: SIGTERM to all at once, SIGKILL to whatever still runs 5 s later.
stop_components() {
  local name pids=() pid deadline
  for name in "$@"; do
    if component_running "$name"; then pids+=("$(component_pid "$name")"); fi
  done
  [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
  deadline=$((SECONDS + 5)) # a development cluster: no long graceful shutdowns
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt "$deadline" ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  for name in "$@"; do rm -f "$RUN_DIR/$name.pid"; done
}

# Kills every container of the cluster, then lets containerd unmount their root filesystems.
stop_all_containers() {
  local ctr=(ctr --address "$CONTAINERD_SOCKET" --namespace k8s.io) id deadline
  component_running containerd || return 0
  for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
    "${ctr[@]}" tasks kill --all --signal SIGKILL "$id" >/dev/null 2>&1 || true
  done
  deadline=$((SECONDS + 20))
  while "${ctr[@]}" tasks ls 2>/dev/null | grep RUNNING >/dev/null && [ $SECONDS -lt "$deadline" ]; do sleep 0.5; done
  for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
    "${ctr[@]}" tasks delete --force "$id" >/dev/null 2>&1 || true
  done
}

# Every container process lives under the kubepods cgroup, even when nothing supervises it any more
# (containerd and the kubelet killed by the end of a session, say).
pod_processes() {
  local dir
  for dir in /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/kubepods; do
    [ ! -d "$dir" ] || find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  done
}

kill_pod_processes() {
  local procs
  procs=$(pod_processes)
  # shellcheck disable=SC2086 # one argument per pid
  [ -z "$procs" ] || kill -KILL $procs 2>/dev/null || true
}

# Shims of our containerd that outlived it (they are identified by our socket in their arguments).
kill_leftover_shims() {
  local pids
  pids=$(pgrep -f -- "containerd-shim.* -address $CONTAINERD_SOCKET" || true)
  # shellcheck disable=SC2086 # one argument per pid
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
}

cluster_mounts() {
  awk '{print $2}' /proc/self/mounts | grep -E "^($SANDBOX_CLUSTER_DIR|$RUN_DIR)(/|$)" || true
}

cluster_ipsets() { ipset list -n 2>/dev/null | grep -E "$CLUSTER_IPSETS" || true; }

unmount_state() {
  local mountpoint
  cluster_mounts | sort -r |
    while read -r mountpoint; do umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint" || true; done
}

# Pod network namespaces left by containerd: ours are the ones holding an address of the pod network.
delete_pod_netns() {
  local netns pod_prefix=${POD_CIDR%.*.*}.
  for netns in $(ip netns list | awk '/^cni-/ {print $1}'); do
    if ip -n "$netns" -4 -o addr show 2>/dev/null | grep " inet $pod_prefix" >/dev/null; then
      ip netns delete "$netns" 2>/dev/null || true
    fi
  done
}

# Dropping every line that mentions CLUSTER_RULES (chains, jumps, rules) leaves everyone else's rules
# as they were. kube-router's ipsets go once no rule refers to them.
delete_cluster_iptables_rules() {
  local family
  [ ! -x "$KUBERNETES_BIN/kube-proxy" ] || "$KUBERNETES_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  local rules
  for family in iptables ip6tables; do
    command -v "$family-save" >/dev/null || continue
    rules=$("$family-save")
    if grep -E "$CLUSTER_RULES" <<<"$rules" >/dev/null; then
      grep -vE "$CLUSTER_RULES" <<<"$rules" | "$family-restore"
    fi
  done
  local set
  for set in $(cluster_ipsets); do
    ipset destroy "$set" 2>/dev/null || true
  done
}

delete_cgroups() {
  local dir
  for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
    if [ -d "$dir" ]; then find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
}

down() {
  [ -d "$RUN_DIR" ] || mkdir -p "$RUN_DIR"
  # The kubelet first, or it restarts the containers being stopped.
  stop_components kubelet
  stop_all_containers
  kill_pod_processes
  stop_components containerd kube-router kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd
  kill_leftover_shims
  delete_pod_netns
  unmount_state
  ip netns delete "$CONTROL_PLANE_NETNS" 2>/dev/null || true
  # `ip netns add` made /run/netns a mount point; undo that when no namespace is left in it.
  if [ -z "$(ip netns list)" ] && mountpoint -q /run/netns; then umount /run/netns; fi
  ip link delete "$CONTROL_PLANE_LINK" 2>/dev/null || true
  ip link delete "$POD_BRIDGE" 2>/dev/null || true
  delete_cluster_iptables_rules
  delete_cgroups
  # Every pod is gone, so are their addresses.
  rm -rf "$SANDBOX_CLUSTER_DIR/cni/ipam" "$RUN_DIR"
  report_leftovers
}

report_leftovers() {
  local leftovers=()
  local ours="^($KUBERNETES_BIN/kube-|$KUBERNETES_BIN/kubelet|$ETCD_BIN/|$KUBE_ROUTER_BIN/)|containerd --config $CONF/|-address $CONTAINERD_SOCKET"
  pgrep -f -- "$ours" >/dev/null && leftovers+=("processes: $(pgrep -d' ' -f -- "$ours")")
  [ -z "$(pod_processes)" ] || leftovers+=("container processes")
  [ -z "$(cluster_mounts)" ] || leftovers+=("mounts")
  ip link show "$POD_BRIDGE" >/dev/null 2>&1 && leftovers+=("device $POD_BRIDGE")
  iptables-save 2>/dev/null | grep -E "$CLUSTER_RULES" >/dev/null && leftovers+=("iptables rules")
  [ -z "$(cluster_ipsets)" ] || leftovers+=("ipsets")
  if [ ${#leftovers[@]} -gt 0 ]; then
    log "warning: left behind: ${leftovers[*]}"
    return 1
  fi
  log "    nothing left running: no process, mount, network device or iptables rule of the cluster"
}
