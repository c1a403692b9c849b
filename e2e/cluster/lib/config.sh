# Every version, path, address and port of the local cluster, in one place.
# Each value can be overridden from the environment (same name).
# shellcheck shell=bash

# Pinned versions (Go modules come from the Go module proxy, the rest from Debian packages).
: "${SS_K8S_VERSION:=v1.34.4}"
: "${SS_ETCD_VERSION:=v3.6.16}"
: "${SS_HELM_VERSION:=v3.22.0}"
: "${SS_COREDNS_VERSION:=v1.15.0}"
: "${SS_METRICS_SERVER_VERSION:=v0.9.0}"
: "${SS_DEBIAN_SUITE:=bookworm}"
SS_APT_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack buildah debootstrap openssl curl iproute2)

# Where things live: the cache keeps what is expensive to rebuild (binaries, Go caches, images);
# the state directory holds one running cluster and is removed by down.sh.
: "${SS_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/splitserve}"
: "${SS_STATE:=/var/lib/splitserve-cluster}"
SS_BIN=$SS_CACHE/bin
SS_GOCACHE=$SS_CACHE/go/cache
SS_GOMODCACHE=$SS_CACHE/go/mod
SS_IMAGES=$SS_CACHE/images
SS_BUILDAH_ROOT=$SS_IMAGES/buildah
SS_BUILDAH_RUNROOT=/run/splitserve-buildah
SS_CONTAINERD_ROOT=$SS_IMAGES/containerd
SS_K8S_BIN=$SS_BIN/kubernetes-$SS_K8S_VERSION
SS_ETCD_BIN=$SS_BIN/etcd-$SS_ETCD_VERSION
SS_HELM_BIN=$SS_BIN/helm-$SS_HELM_VERSION
SS_COREDNS_BIN=$SS_BIN/coredns-$SS_COREDNS_VERSION
SS_METRICS_SERVER_BIN=$SS_BIN/metrics-server-$SS_METRICS_SERVER_VERSION
SS_PAUSE_BIN=$SS_BIN/pause
SS_KUBECONFIG=$SS_STATE/admin.kubeconfig
SS_PKI=$SS_STATE/pki
SS_LOGS=$SS_STATE/logs
SS_PIDS=$SS_STATE/pids
SS_CONTAINERD_SOCK=$SS_STATE/containerd/containerd.sock

# Network: a bridge made on this machine carries the pod range; its address is also the node's
# address, where the API server, the kubelet and cluster DNS listen (pods route to it, nothing
# outside this machine does). Pod and Service ranges exist only here.
: "${SS_BRIDGE:=splitserve0}"
: "${SS_NODE_IP:=10.244.0.1}"
: "${SS_POD_CIDR:=10.244.0.0/24}"
: "${SS_CLUSTER_CIDR:=10.244.0.0/16}"
: "${SS_SERVICE_CIDR:=10.96.0.0/16}"
: "${SS_API_SERVICE_IP:=10.96.0.1}"
: "${SS_DNS_SERVICE_IP:=10.96.0.10}"
: "${SS_CLUSTER_DOMAIN:=cluster.local}"
: "${SS_NODE_NAME:=splitserve-node}"
: "${SS_GPU_COUNT:=4}"

# Ports. The API server, the kubelet and metrics-server listen on the node address; everything
# else on loopback.
: "${SS_API_PORT:=6443}"
: "${SS_KUBELET_PORT:=10250}"
: "${SS_ETCD_CLIENT_PORT:=23790}"
: "${SS_ETCD_PEER_PORT:=23800}"
: "${SS_CM_PORT:=10257}"
: "${SS_SCHEDULER_PORT:=10259}"
: "${SS_KUBELET_HEALTHZ_PORT:=10248}"
: "${SS_PROXY_HEALTHZ_PORT:=10256}"
: "${SS_PROXY_METRICS_PORT:=10249}"
: "${SS_DNS_HEALTH_PORT:=18080}"
: "${SS_DNS_READY_PORT:=18181}"
: "${SS_METRICS_SERVER_PORT:=4443}"

# metrics-server: how often it scrapes the kubelet (seconds, at least 10), and its user name.
: "${SS_METRICS_RESOLUTION:=15}"
SS_METRICS_SERVER_USER=system:splitserve:metrics-server
# The NetworkPolicy enforcer's user name (lib/netpol.sh).
SS_NETPOL_USER=system:splitserve:netpol

SS_PAUSE_IMAGE=docker.io/splitserve/pause:1.0
SS_BASE_IMAGE=docker.io/library/debian:$SS_DEBIAN_SUITE-slim
