#!/usr/bin/env bash
# Brings up a real single-node Kubernetes on this machine (no Docker engine needed) and prints
# the admin kubeconfig path as the last line of its output. Safe to run again: whatever already
# runs is kept, whatever is missing is built or started.
#
#   e2e/cluster/up.sh            install (cached by version), start, wait until usable
#   e2e/cluster/up.sh --status   print the kubeconfig path if the cluster answers, else exit 1
#
# Tools are built from the Go module proxy and cached in ${XDG_CACHE_HOME:-~/.cache}/splitserve;
# containerd, runc, the CNI plugins, buildah and debootstrap come from Debian packages.
set -euo pipefail
SS_LIB=$(cd "$(dirname "$0")/lib" && pwd)
SS_BUILD_DIR=$(cd "$(dirname "$0")/build" && pwd)
# shellcheck source=lib/config.sh
source "$SS_LIB/config.sh"
for part in util install images network pki components metrics netpol; do
  # shellcheck disable=SC1090
  source "$SS_LIB/$part.sh"
done

cluster_answers() {
  [[ -f $SS_KUBECONFIG && -x $SS_K8S_BIN/kubectl ]] \
    && kubectl_admin --request-timeout 5s get --raw /readyz >/dev/null 2>&1
}

if [[ ${1:-} == --status ]]; then
  cluster_answers || exit 1
  echo "$SS_KUBECONFIG"; exit 0
fi
[[ $# == 0 ]] || die "usage: up.sh [--status]"

require_root
t0=$SECONDS
mkdir -p "$SS_CACHE" "$SS_IMAGES"
exec 8>"$SS_CACHE/.lock"
flock -w 3600 8 || die "another up.sh holds $SS_CACHE/.lock"
install_all
build_base_image
build_pause_image
exec 8>&-
log "tools ready after $((SECONDS - t0))s"

mkdir -p "$SS_STATE" "$SS_LOGS" "$SS_PIDS"
exec 9>"$SS_STATE/.lock"
flock -w 600 9 || die "another up.sh or down.sh holds $SS_STATE/.lock"

setup_network
start_containerd
load_image "$SS_PAUSE_IMAGE"
start_etcd
make_pki
start_apiserver
apply_bootstrap_objects
start_controllers
start_netpol
start_kubelet
start_proxy
start_dns
advertise_gpus
wait_until 180 "node $SS_NODE_NAME to be Ready" node_ready
start_metrics_server
wait_until 60 "the default ServiceAccount" kubectl_admin -n default get serviceaccount default

log "cluster up after $((SECONDS - t0))s: $("$SS_K8S_BIN/kubectl" version --client -o yaml | awk '/gitVersion/ {print $2; exit}'), node $SS_NODE_NAME Ready with nvidia.com/gpu=$SS_GPU_COUNT"
log "kubectl: $SS_K8S_BIN/kubectl   helm: $SS_HELM_BIN/helm   logs: $SS_LOGS"
echo "$SS_KUBECONFIG"
