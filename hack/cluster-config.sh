# Writes the local cluster's certificates, kubeconfigs and component configuration into the state dir
# (sourced by hack/cluster.sh). Idempotent: keys and certificates are made once; configs are rewritten.
# shellcheck shell=bash

# Fixed addresses, so nothing depends on the host's own network. The control plane (etcd, apiserver)
# lives in its own network namespace, like a control-plane node: pods reach it only through routing
# (and NetworkPolicy), and it does not depend on the host's addresses.
NODE_NAME=sandbox-node
CONTROL_PLANE_NETNS=sandbox-cp
NODE_IP=10.89.0.1         # host end of the veth to the control plane; the node's InternalIP
APISERVER_IP=10.89.0.2    # the control plane's end; the `kubernetes` Service's endpoint
CONTROL_PLANE_LINK=sbx-cp0
POD_CIDR=10.88.0.0/16
POD_BRIDGE=sandbox0
POD_NETWORK=sandbox-pods
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
APISERVER_URL=https://$APISERVER_IP:6443
PKI=$SANDBOX_CLUSTER_DIR/pki
CONF=$SANDBOX_CLUSTER_DIR/config
ADMIN_KUBECONFIG=$SANDBOX_CLUSTER_DIR/kubeconfig

new_key() { openssl genrsa -out "$PKI/$1.key" 2048 2>/dev/null; } # NAME

# issue_cert NAME SUBJECT [SUBJECT_ALT_NAMES]: a key and a certificate signed by the cluster CA.
issue_cert() {
  local name=$1 subject=$2 sans=${3:-} ext
  [ -f "$PKI/$name.crt" ] && return 0
  new_key "$name"
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  ext="$PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$sans" ]; then echo "extendedKeyUsage=serverAuth"; echo "subjectAltName=$sans"
    else echo "extendedKeyUsage=clientAuth"; fi
  } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 825 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

write_certificates() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if [ ! -f "$PKI/ca.crt" ]; then
    new_key ca
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=sandbox-cluster-ca" -days 3650 \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$PKI/ca.crt" 2>/dev/null
  fi
  issue_cert apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$APISERVER_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1"
  issue_cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client"
  issue_cert admin "/O=system:masters/CN=sandbox-admin"
  issue_cert controller-manager "/CN=system:kube-controller-manager"
  issue_cert scheduler "/CN=system:kube-scheduler"
  issue_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  issue_cert kube-proxy "/CN=system:kube-proxy"
  issue_cert kube-router "/CN=system:kube-router"
  # One key pair signs and verifies service account tokens.
  [ -f "$PKI/service-account.key" ] || new_key service-account
  openssl rsa -in "$PKI/service-account.key" -pubout -out "$PKI/service-account.pub" 2>/dev/null
}

# write_kubeconfig FILE CERT_NAME: credentials embedded, so the file can be copied anywhere.
write_kubeconfig() {
  local file=$1 name=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$name.crt")
    client-key-data: $(base64 -w0 <"$PKI/$name.key")
contexts:
- name: sandbox
  context: {cluster: sandbox, user: $name}
current-context: sandbox
EOF
  chmod 600 "$file"
}

write_containerd_config() {
  mkdir -p "$CONF" "$SANDBOX_CLUSTER_DIR/cni/net.d"
  cat >"$CONF/containerd.toml" <<EOF
version = 2
root = "$SANDBOX_CLUSTER_DIR/containerd"
state = "$RUN_DIR/containerd"

[grpc]
  address = "$CONTAINERD_SOCKET"

[plugins."io.containerd.internal.v1.opt"]
  path = "$SANDBOX_CLUSTER_DIR/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Where CAP_SYS_RESOURCE is withheld (as on CI's VM) no process may lower an OOM score; without this,
  # every pod sandbox fails ("can't get final child's PID from pipe") because runc cannot set -998.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$SANDBOX_CLUSTER_DIR/cni/net.d"
EOF
  # One bridge, host-local addresses; masquerade for traffic leaving the pod network.
  cat >"$SANDBOX_CLUSTER_DIR/cni/net.d/10-$POD_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$POD_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$POD_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$SANDBOX_CLUSTER_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
}

write_component_configs() {
  mkdir -p "$CONF"
  write_kubeconfig "$ADMIN_KUBECONFIG" admin
  local component
  for component in controller-manager scheduler kubelet kube-proxy kube-router; do
    write_kubeconfig "$CONF/$component.kubeconfig" "$component"
  done
  cat >"$CONF/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCKET
failSwapOn: false
# A fork bomb in a pod hits this, not the node's pid limit.
podPidsLimit: 512
# kubectl logs/exec: the apiserver's client certificate is checked against the CA, then authorised
# through a SubjectAccessReview; nothing anonymous.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
readOnlyPort: 0
oomScoreAdj: 0 # see restrict_oom_score_adj in containerd.toml
clusterDomain: cluster.local
containerLogMaxSize: 10Mi
containerLogMaxFiles: 3
serializeImagePulls: false
# Images are imported, never pulled: they must never be garbage-collected.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%}
EOF
  cat >"$CONF/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $CONF/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Leave the host's sysctls alone: no conntrack resizing, no route_localnet.
conntrack: {maxPerCore: 0}
iptables: {localhostNodePorts: false}
EOF
}
