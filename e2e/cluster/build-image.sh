#!/usr/bin/env bash
# Builds an image from one of the project's Dockerfiles without a Docker engine (buildah, with
# its layer cache in ${XDG_CACHE_HOME:-~/.cache}/splitserve/images) and loads it into the local
# cluster's containerd when that runs.
#
#   e2e/cluster/build-image.sh DOCKERFILE CONTEXT NAME:TAG
#
# FROM images must exist locally (up.sh makes debian:bookworm-slim); nothing is pulled. The host's
# CA bundle is mounted read-only during RUN steps (pip and apt use it through PIP_CERT and
# SSL_CERT_FILE build arguments) and is never part of the image.
set -euo pipefail
SS_LIB=$(cd "$(dirname "$0")/lib" && pwd)
# shellcheck source=lib/config.sh
source "$SS_LIB/config.sh"
for part in util images; do
  # shellcheck disable=SC1090
  source "$SS_LIB/$part.sh"
done
[[ $# == 3 ]] || die "usage: build-image.sh DOCKERFILE CONTEXT NAME:TAG"
dockerfile=$1 context=$2 name=$(qualify_image "$3")
[[ -f $dockerfile ]] || die "DOCKERFILE: no such file: $dockerfile"
[[ -d $context ]] || die "CONTEXT: no such directory: $context"
require_root
image_built "$SS_BASE_IMAGE" || die "base image $SS_BASE_IMAGE missing; run e2e/cluster/up.sh first"

ca=/etc/ssl/certs/ca-certificates.crt in_build=/run/host-ca-certificates.crt
t0=$SECONDS
log "building $name from $dockerfile"
buildah_ bud --pull-never --layers --network host --format oci \
  -v "$ca:$in_build:ro" --build-arg "PIP_CERT=$in_build" --build-arg "SSL_CERT_FILE=$in_build" \
  -f "$dockerfile" -t "$name" "$context" >&2
log "built $name in $((SECONDS - t0))s"
if [[ -S $SS_CONTAINERD_SOCK ]] && ctr_ version >/dev/null 2>&1; then
  load_image "$name"
else
  log "the cluster's containerd is not running; $name stays in buildah's storage only"
fi
prune_older_builds "$name"
echo "$name"
