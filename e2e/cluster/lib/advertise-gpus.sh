#!/usr/bin/env bash
# Keeps nvidia.com/gpu=COUNT in a Node's status capacity and allocatable: patches it now and
# again whenever a watched update of the Node shows another value.
# Usage: advertise-gpus.sh KUBECTL KUBECONFIG NODE COUNT
set -uo pipefail
kubectl=$1 kubeconfig=$2 node=$3 count=$4
patch="{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$count\"},\"allocatable\":{\"nvidia.com/gpu\":\"$count\"}}}"
while true; do
  "$kubectl" --kubeconfig "$kubeconfig" get node "$node" --watch --request-timeout 0 \
    -o jsonpath='{.status.capacity.nvidia\.com/gpu}/{.status.allocatable.nvidia\.com/gpu}{"\n"}' |
    while read -r seen; do
      if [[ $seen != "$count/$count" ]]; then
        "$kubectl" --kubeconfig "$kubeconfig" patch node "$node" --subresource status \
          --type merge -p "$patch" >/dev/null && echo "$(date -u +%T) set nvidia.com/gpu=$count (was '$seen')"
      fi
    done
  sleep 2
done
