#!/usr/bin/env bash
# Runs the e2e suite against a kind cluster, for machines with Docker and kind installed.
# (The project's own CI machine has no Docker engine and uses e2e/cluster/ instead.)
#
#   e2e/kind/run.sh [pytest args...]
#
# Creates the cluster if missing (KIND_CLUSTER_NAME, default splitserve-e2e), advertises
# nvidia.com/gpu on its node the same way e2e/cluster does (Node status patch), builds the
# project's images with `docker build` from the same Dockerfiles, loads them with
# `kind load docker-image`, and runs the e2e tests against it. The cluster is left running;
# delete it with `kind delete cluster --name splitserve-e2e`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
name=${KIND_CLUSTER_NAME:-splitserve-e2e}
node_image=${KIND_NODE_IMAGE:-kindest/node:v1.34.0}
gpus=${SPLITSERVE_GPU_COUNT:-4}

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done

kind get clusters 2>/dev/null | grep -qx "$name" \
  || kind create cluster --name "$name" --image "$node_image" --wait 180s
kubeconfig=$(mktemp --suffix .kubeconfig)
trap 'rm -f "$kubeconfig"' EXIT
kind get kubeconfig --name "$name" >"$kubeconfig"

for node in $(kubectl --kubeconfig "$kubeconfig" get nodes -o name); do
  kubectl --kubeconfig "$kubeconfig" patch "$node" --subresource status --type merge \
    -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$gpus\"}}}" >/dev/null
done

# Every image the e2e suite uses: Dockerfile, build context, name.
while read -r dockerfile context image; do
  [[ -n $dockerfile && $dockerfile != \#* ]] || continue
  docker build -f "$root/$dockerfile" -t "$image" "$root/$context"
  kind load docker-image "$image" --name "$name"
done <"$root/e2e/kind/images.txt"

cd "$root"
SPLITSERVE_E2E_KUBECONFIG=$kubeconfig SPLITSERVE_E2E_IMAGES_PRELOADED=1 \
  ./scripts/test e2e -m cluster "$@"
