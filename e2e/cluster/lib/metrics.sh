# metrics-server: the metrics.k8s.io API (pod and node CPU and memory, from the kubelet's
# /metrics/resource), which `kubectl top` and the HorizontalPodAutoscaler read. It runs as a host
# process on the node address; the API server's aggregation layer reaches it through a Service
# without a selector whose EndpointSlice names that address.
# shellcheck shell=bash

# Its identity (client certificate, CN below) may read what it scrapes and delegate the
# authentication and authorization of the requests the aggregator forwards, nothing more.
apply_metrics_server_objects() {
  kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "splitserve:metrics-server"}
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "splitserve:metrics-server"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "splitserve:metrics-server"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "$SS_METRICS_SERVER_USER"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "splitserve:metrics-server:auth-delegator"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "$SS_METRICS_SERVER_USER"}
---
# the front-proxy CA and request-header names the API server publishes for extension servers
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "splitserve:metrics-server:auth-reader", namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "$SS_METRICS_SERVER_USER"}
---
# who may read the metrics: whoever may view, edit or administer a namespace
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: "splitserve:aggregated-metrics-reader"
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
rules:
- apiGroups: [metrics.k8s.io]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {k8s-app: metrics-server}
spec:
  ports:
  - {name: https, port: 443, protocol: TCP, targetPort: $SS_METRICS_SERVER_PORT}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-node
  namespace: kube-system
  labels:
    kubernetes.io/service-name: metrics-server
    endpointslice.kubernetes.io/managed-by: splitserve.dev-cluster
addressType: IPv4
endpoints:
- addresses: [$SS_NODE_IP]
  conditions: {ready: true}
ports:
- {name: https, port: $SS_METRICS_SERVER_PORT, protocol: TCP}
YAML
}

# The aggregator verifies the serving certificate against the cluster CA and the Service's name.
register_metrics_api() {
  kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {name: metrics-server, namespace: kube-system, port: 443}
  caBundle: $(base64 -w0 <"$SS_PKI/ca.crt")
  groupPriorityMinimum: 100
  versionPriority: 100
YAML
}

metrics_api_available() {
  [[ $(kubectl_admin get apiservice v1beta1.metrics.k8s.io \
    -o jsonpath='{.status.conditions[?(@.type=="Available")].status}') == True ]]
}

start_metrics_server() {
  apply_metrics_server_objects
  start_daemon metrics-server "$SS_METRICS_SERVER_BIN/metrics-server" \
    --kubeconfig "$SS_STATE/metrics-server.kubeconfig" \
    --authentication-kubeconfig "$SS_STATE/metrics-server.kubeconfig" \
    --authorization-kubeconfig "$SS_STATE/metrics-server.kubeconfig" \
    --bind-address "$SS_NODE_IP" --secure-port "$SS_METRICS_SERVER_PORT" \
    --tls-cert-file "$SS_PKI/metrics-server-serving.crt" \
    --tls-private-key-file "$SS_PKI/metrics-server-serving.key" \
    --kubelet-client-certificate "$SS_PKI/metrics-server.crt" \
    --kubelet-client-key "$SS_PKI/metrics-server.key" \
    --kubelet-certificate-authority "$SS_PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP --kubelet-use-node-status-port \
    --metric-resolution "${SS_METRICS_RESOLUTION}s" --profiling=false --v 1
  # registered only once it serves: an unavailable aggregated API stalls discovery (and with
  # it namespace deletion) for every client of the cluster
  wait_until 60 "metrics-server" curl -fsS --cacert "$SS_PKI/ca.crt" \
    "https://$SS_NODE_IP:$SS_METRICS_SERVER_PORT/livez"
  register_metrics_api
  wait_until 60 "the metrics.k8s.io API to be available" metrics_api_available
}
