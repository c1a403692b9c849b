# Host networking for the pod range: a local bridge, CNI config, forwarding kept inside the machine.
# shellcheck shell=bash

SS_SYSCTLS=(net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1)

setup_network() {
  local kv key saved=$SS_STATE/sysctl.saved
  if [[ ! -f $saved ]]; then
    for kv in "${SS_SYSCTLS[@]}"; do key=${kv%%=*}; echo "$key=$(sysctl -n "$key")"; done >"$saved.tmp"
    mv "$saved.tmp" "$saved"
  fi
  for kv in "${SS_SYSCTLS[@]}"; do sysctl -qw "$kv"; done

  if ! ip link show "$SS_BRIDGE" >/dev/null 2>&1; then
    ip link add "$SS_BRIDGE" type bridge
  fi
  ip addr replace "$SS_NODE_IP/${SS_POD_CIDR#*/}" dev "$SS_BRIDGE"
  ip link set "$SS_BRIDGE" up

  # Pod traffic stays on this machine: nothing from the pod range leaves through another
  # interface, nothing from another interface reaches it (no masquerade either).
  if ! iptables -w -L SPLITSERVE-ISOLATION -n >/dev/null 2>&1; then
    iptables -w -N SPLITSERVE-ISOLATION
    iptables -w -A SPLITSERVE-ISOLATION -s "$SS_CLUSTER_CIDR" ! -o "$SS_BRIDGE" -j DROP
    iptables -w -A SPLITSERVE-ISOLATION -d "$SS_CLUSTER_CIDR" ! -i "$SS_BRIDGE" -j DROP
  fi
  iptables -w -C FORWARD -j SPLITSERVE-ISOLATION 2>/dev/null || iptables -w -I FORWARD 1 -j SPLITSERVE-ISOLATION

  mkdir -p "$SS_STATE/cni/net.d" "$SS_STATE/cni/ipam"
  cat >"$SS_STATE/cni/net.d/10-splitserve.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "splitserve",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$SS_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$SS_STATE/cni/ipam",
        "ranges": [[{"subnet": "$SS_POD_CIDR", "gateway": "$SS_NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
}

# Chains the kubelet creates (kube-proxy --cleanup removes kube-proxy's own).
remove_kubelet_chains() {
  local ipt spec
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    "$ipt" -w -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
    "$ipt" -w -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
    for spec in filter:KUBE-FIREWALL filter:KUBE-KUBELET-CANARY nat:KUBE-KUBELET-CANARY \
      mangle:KUBE-KUBELET-CANARY mangle:KUBE-IPTABLES-HINT; do
      "$ipt" -w -t "${spec%%:*}" -F "${spec#*:}" 2>/dev/null || continue
      "$ipt" -w -t "${spec%%:*}" -X "${spec#*:}" 2>/dev/null || true
    done
  done
}

teardown_network() {
  local line saved=$SS_STATE/sysctl.saved
  remove_kubelet_chains
  iptables -w -D FORWARD -j SPLITSERVE-ISOLATION 2>/dev/null || true
  iptables -w -F SPLITSERVE-ISOLATION 2>/dev/null && iptables -w -X SPLITSERVE-ISOLATION 2>/dev/null || true
  ip link show "$SS_BRIDGE" >/dev/null 2>&1 && ip link del "$SS_BRIDGE"
  if [[ -f $saved ]]; then
    while read -r line; do sysctl -qw "$line" || true; done <"$saved"
    rm -f "$saved"
  fi
}
