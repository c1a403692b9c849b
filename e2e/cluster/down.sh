#!/usr/bin/env bash
# Stops everything e2e/cluster/up.sh started: pods and their containers, the node and control-plane
# processes, mounts, network setup and cluster state. Cached tools and images stay.
set -euo pipefail
SS_LIB=$(cd "$(dirname "$0")/lib" && pwd)
# shellcheck source=lib/config.sh
source "$SS_LIB/config.sh"
for part in util network netpol; do
  # shellcheck disable=SC1090
  source "$SS_LIB/$part.sh"
done
require_root
[[ -d $SS_STATE ]] || { log "no cluster state at $SS_STATE; nothing to stop"; exit 0; }
exec 9>"$SS_STATE/.lock"
flock -w 600 9 || die "another up.sh or down.sh holds $SS_STATE/.lock"

# The extension API server, then the node side so nothing restarts pods: the kubelet, then every
# pod through the CRI.
stop_daemon metrics-server
stop_daemon gpu-advertiser
stop_daemon kubelet
if daemon_running containerd; then
  "$SS_K8S_BIN/cri-reset" "unix://$SS_CONTAINERD_SOCK" || log "warning: some pods were not removed cleanly"
fi
for name in netpol coredns kube-proxy kube-scheduler kube-controller-manager; do
  stop_daemon "$name"
done
stop_daemon kube-apiserver 5  # it can linger on closed long-running requests after shutting down
stop_daemon etcd
stop_daemon containerd

# Shims of this containerd (found by its socket path) that outlived it.
for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $SS_CONTAINERD_SOCK" || true); do
  log "killing leftover shim $pid"; kill -KILL "$pid" 2>/dev/null || true
done

# Services' rules from kube-proxy, then the node's network.
[[ -x $SS_K8S_BIN/kube-proxy ]] && "$SS_K8S_BIN/kube-proxy" --cleanup --proxy-mode iptables >/dev/null 2>&1 || true
remove_netpol_chains
teardown_network

# Mounts left under the state directory (pod volumes, sandboxes, netns), deepest first.
awk -v root="$SS_STATE/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
  umount "$m" 2>/dev/null || umount -l "$m" || log "warning: could not unmount $m"
done

# Pod cgroups the kubelet created (cgroupfs driver, cgroup v1), leaves first.
for hierarchy in /sys/fs/cgroup/*/; do
  [[ -d ${hierarchy}kubepods ]] || continue
  find "${hierarchy}kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
done

logs=$SS_STATE.last-logs
rm -rf "$logs"; [[ -d $SS_LOGS ]] && mv "$SS_LOGS" "$logs"
rm -rf "$SS_STATE"
log "cluster stopped; logs of this run kept in $logs"
