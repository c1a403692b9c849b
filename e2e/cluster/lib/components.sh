# The cluster's processes: containerd, etcd, control plane, kubelet, kube-proxy, cluster DNS.
# shellcheck shell=bash

has_cap_sys_resource() {
  local caps
  caps=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
  (( (16#$caps >> 24) & 1 ))
}

start_containerd() {
  mkdir -p "$SS_STATE/containerd" "$SS_CONTAINERD_ROOT"
  cat >"$SS_STATE/containerd/config.toml" <<TOML
version = 2
root = "$SS_CONTAINERD_ROOT"
state = "$SS_STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$SS_CONTAINERD_SOCK"

[ttrpc]
  address = "$SS_STATE/containerd/containerd.sock.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SS_PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  netns_mounts_under_state_dir = true
  # Root here lacks CAP_SYS_RESOURCE, so containers cannot get a lower OOM score than containerd.
  restrict_oom_score_adj = $(has_cap_sys_resource && echo false || echo true)
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$SS_STATE/cni/net.d"
    max_conf_num = 1
TOML
  start_daemon containerd containerd --config "$SS_STATE/containerd/config.toml"
  wait_until 60 "containerd" ctr --address "$SS_CONTAINERD_SOCK" version
}

start_etcd() {
  local peer=http://127.0.0.1:$SS_ETCD_PEER_PORT client=http://127.0.0.1:$SS_ETCD_CLIENT_PORT
  mkdir -p "$SS_STATE/etcd"; chmod 700 "$SS_STATE/etcd"
  start_daemon etcd "$SS_ETCD_BIN/etcd" --name splitserve --data-dir "$SS_STATE/etcd" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "splitserve=$peer" --listen-metrics-urls "" \
    --unsafe-no-fsync --quota-backend-bytes 2147483648 --log-level warn
  wait_until 60 "etcd" curl -fsS "$client/health"
}

# The audit log records every write (who, verb, object; no bodies) so tests can count what one
# client wrote. Leases, and the events of the node and the cluster's own components (written every
# few seconds), are left out; events posted by anyone else are kept.
write_audit_policy() {
  cat >"$SS_STATE/audit-policy.yaml" <<'YAML'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  resources:
  - {group: coordination.k8s.io, resources: [leases]}
- level: None
  users: [system:kube-scheduler, system:kube-controller-manager, system:kube-proxy]
  userGroups: [system:nodes, "system:serviceaccounts:kube-system"]
  resources:
  - {group: "", resources: [events]}
  - {group: events.k8s.io, resources: [events]}
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
YAML
}

start_apiserver() {
  write_audit_policy
  start_daemon kube-apiserver "$SS_K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$SS_ETCD_CLIENT_PORT" \
    --bind-address "$SS_NODE_IP" --advertise-address "$SS_NODE_IP" --secure-port "$SS_API_PORT" \
    --tls-cert-file "$SS_PKI/apiserver.crt" --tls-private-key-file "$SS_PKI/apiserver.key" \
    --client-ca-file "$SS_PKI/ca.crt" \
    --kubelet-client-certificate "$SS_PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$SS_PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-cluster-ip-range "$SS_SERVICE_CIDR" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer "https://kubernetes.default.svc.$SS_CLUSTER_DOMAIN" \
    --service-account-key-file "$SS_PKI/sa.pub" \
    --service-account-signing-key-file "$SS_PKI/sa.key" \
    --requestheader-client-ca-file "$SS_PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$SS_PKI/front-proxy-client.crt" \
    --proxy-client-key-file "$SS_PKI/front-proxy-client.key" --enable-aggregator-routing \
    --audit-policy-file "$SS_STATE/audit-policy.yaml" --audit-log-path "$SS_LOGS/audit.log" \
    --audit-log-format json --audit-log-maxsize 200 --audit-log-maxbackup 2 \
    --audit-log-mode batch --audit-log-batch-max-wait 1s \
    --allow-privileged --profiling=false --v 1
  wait_until 120 "the API server" kubectl_admin get --raw /readyz
}

start_controllers() {
  start_daemon kube-controller-manager "$SS_K8S_BIN/kube-controller-manager" \
    --kubeconfig "$SS_STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$SS_STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$SS_STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SS_CM_PORT" --leader-elect=false \
    --root-ca-file "$SS_PKI/ca.crt" --service-account-private-key-file "$SS_PKI/sa.key" \
    --use-service-account-credentials \
    --cluster-signing-cert-file "$SS_PKI/ca.crt" --cluster-signing-key-file "$SS_PKI/ca.key" \
    --cluster-cidr "$SS_CLUSTER_CIDR" --service-cluster-ip-range "$SS_SERVICE_CIDR" \
    --allocate-node-cidrs=false --profiling=false --v 1 \
    --node-monitor-grace-period 180s
  start_daemon kube-scheduler "$SS_K8S_BIN/kube-scheduler" \
    --kubeconfig "$SS_STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$SS_STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$SS_STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SS_SCHEDULER_PORT" --leader-elect=false \
    --profiling=false --v 1
}

start_kubelet() {
  mkdir -p "$SS_STATE/kubelet"
  cat >"$SS_STATE/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $SS_NODE_IP
port: $SS_KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $SS_KUBELET_HEALTHZ_PORT
tlsCertFile: $SS_PKI/kubelet-serving.crt
tlsPrivateKeyFile: $SS_PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $SS_PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$SS_CONTAINERD_SOCK
cgroupDriver: cgroupfs
clusterDomain: $SS_CLUSTER_DOMAIN
clusterDNS: [$SS_DNS_SERVICE_IP]
podCIDR: $SS_POD_CIDR
failSwapOn: false
maxPods: 110
serializeImagePulls: false
# Images here come from local builds and cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Under disk pressure the kubelet still deletes unused images (the pause image too, after which
# no pod starts): pressure only when the disk is really full, not at a percentage of a large disk.
evictionHard: {memory.available: 100Mi, nodefs.available: 1Gi, imagefs.available: 1Gi}
YAML
  start_daemon kubelet "$SS_K8S_BIN/kubelet" --config "$SS_STATE/kubelet-config.yaml" \
    --kubeconfig "$SS_STATE/kubelet.kubeconfig" --root-dir "$SS_STATE/kubelet" \
    --hostname-override "$SS_NODE_NAME" --node-ip "$SS_NODE_IP" \
    --pod-infra-container-image "$SS_PAUSE_IMAGE" --v 1
  wait_until 120 "node $SS_NODE_NAME to register" kubectl_admin get node "$SS_NODE_NAME"
}

start_proxy() {
  start_daemon kube-proxy "$SS_K8S_BIN/kube-proxy" --kubeconfig "$SS_STATE/kube-proxy.kubeconfig" \
    --hostname-override "$SS_NODE_NAME" --proxy-mode iptables --cluster-cidr "$SS_CLUSTER_CIDR" \
    --bind-address 127.0.0.1 --healthz-bind-address "127.0.0.1:$SS_PROXY_HEALTHZ_PORT" \
    --metrics-bind-address "127.0.0.1:$SS_PROXY_METRICS_PORT" \
    --nodeport-addresses "$SS_NODE_IP/32" --iptables-localhost-nodeports=false \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 \
    --conntrack-tcp-timeout-close-wait 0 --v 1
  wait_until 60 "kube-proxy" curl -fsS "http://127.0.0.1:$SS_PROXY_HEALTHZ_PORT/healthz"
}

# Cluster DNS: CoreDNS on the node address behind the kube-dns Service.
start_dns() {
  cat >"$SS_STATE/Corefile" <<COREFILE
.:53 {
    bind $SS_NODE_IP
    errors
    health 127.0.0.1:$SS_DNS_HEALTH_PORT
    ready 127.0.0.1:$SS_DNS_READY_PORT
    kubernetes $SS_CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $SS_STATE/coredns.kubeconfig splitserve
        pods insecure
    }
    cache 30
}
COREFILE
  start_daemon coredns "$SS_COREDNS_BIN/coredns" -conf "$SS_STATE/Corefile"
  wait_until 60 "cluster DNS" curl -fsS "http://127.0.0.1:$SS_DNS_READY_PORT/ready"
}

# Objects the components need before they start: DNS identity and Service.
apply_bootstrap_objects() {
  wait_until 60 "namespace kube-system" kubectl_admin get namespace kube-system
  kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "splitserve:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "splitserve:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "splitserve:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:splitserve:coredns"}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $SS_DNS_SERVICE_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
    endpointslice.kubernetes.io/managed-by: splitserve.dev-cluster
addressType: IPv4
endpoints:
- addresses: [$SS_NODE_IP]
  conditions: {ready: true}
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
YAML
}

gpus_advertised() {
  [[ $(kubectl_admin get node "$SS_NODE_NAME" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}') == "$SS_GPU_COUNT" ]]
}

# nvidia.com/gpu has no device plugin here: it is advertised by patching the Node status (the
# documented way for extended resources); a watcher re-applies it if the kubelet resets it.
advertise_gpus() {
  start_daemon gpu-advertiser bash "$SS_LIB/advertise-gpus.sh" "$SS_K8S_BIN/kubectl" \
    "$SS_KUBECONFIG" "$SS_NODE_NAME" "$SS_GPU_COUNT"
  wait_until 60 "nvidia.com/gpu=$SS_GPU_COUNT on $SS_NODE_NAME" gpus_advertised
}

node_ready() {
  [[ $(kubectl_admin get node "$SS_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
