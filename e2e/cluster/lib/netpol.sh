# NetworkPolicy enforcement. Debian's CNI plugins (bridge, host-local) do not enforce
# NetworkPolicy, so a small host daemon of this project (build/kubernetes/cmd/netpol) does: it
# watches pods, namespaces and policies and keeps iptables filter chains, jumped to first from
# FORWARD, in step with them. Pod-to-pod packets cross the bridge, and bridge netfilter
# (network.sh) passes bridged packets through FORWARD. Traffic from the node's own address (the
# host, the kubelet's probes) is never filtered; a refused connection is rejected, not dropped.
# shellcheck shell=bash

# Our own source, cached by a hash of it (tests excluded) and of the module's dependencies.
netpol_bin() {
  local sum src=$SS_BUILD_DIR/kubernetes/cmd/netpol
  sum=$(find "$src" -maxdepth 1 -name '*.go' ! -name '*_test.go' | sort | xargs cat \
    | cat - "$SS_BUILD_DIR/kubernetes/go.sum" | sha256sum)
  echo "$SS_BIN/netpol-${sum:0:12}"
}

build_netpol() {
  go_build "$(netpol_bin)" "$SS_BUILD_DIR/kubernetes" "" ./cmd/netpol
}

# Its identity (client certificate, CN below) may read what the rules are computed from.
apply_netpol_objects() {
  kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "splitserve:netpol"}
rules:
- apiGroups: [""]
  resources: [pods, namespaces]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "splitserve:netpol"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "splitserve:netpol"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "$SS_NETPOL_USER"}
YAML
}

netpol_hooked() { iptables -w -C FORWARD -j SPLITSERVE-NETPOL; }

start_netpol() {
  apply_netpol_objects
  start_daemon netpol "$(netpol_bin)/netpol" --kubeconfig "$SS_STATE/netpol.kubeconfig" \
    --node-name "$SS_NODE_NAME" --node-ip "$SS_NODE_IP"
  wait_until 60 "NetworkPolicy enforcement (netpol's first rules)" netpol_hooked
}

# The FORWARD jump and every chain netpol made (its own --cleanup does the same).
remove_netpol_chains() {
  local chain chains
  while iptables -w -D FORWARD -j SPLITSERVE-NETPOL 2>/dev/null; do :; done
  chains=$(iptables -w -S 2>/dev/null | awk '$1 == "-N" && ($2 == "SPLITSERVE-NETPOL" || $2 ~ /^SSNP-/) { print $2 }')
  # every chain emptied before any is deleted: they jump to one another
  for chain in $chains; do iptables -w -F "$chain" 2>/dev/null || true; done
  for chain in $chains; do iptables -w -X "$chain" 2>/dev/null || true; done
}
