# Images without a Docker engine: buildah with its storage in the cache, loaded into the node's
# containerd through OCI archives.
# shellcheck shell=bash

buildah_() {
  mkdir -p "$SS_BUILDAH_ROOT" "$SS_BUILDAH_RUNROOT"
  nice -n 10 buildah --root "$SS_BUILDAH_ROOT" --runroot "$SS_BUILDAH_RUNROOT" --storage-driver overlay "$@"
}

ctr_() { ctr --address "$SS_CONTAINERD_SOCK" --namespace k8s.io "$@"; }

image_built() { buildah_ inspect --type image "$1" >/dev/null 2>&1; }

# The public base image name the project's Dockerfiles start FROM, made here by debootstrap.
build_base_image() {
  image_built "$SS_BASE_IMAGE" && return 0
  local rootfs=$SS_IMAGES/rootfs-$SS_DEBIAN_SUITE.tmp t0=$SECONDS ctr mirror
  mirror=$(debian_mirror)
  log "debootstrap --variant=minbase $SS_DEBIAN_SUITE (from this machine's apt mirror) for $SS_BASE_IMAGE"
  rm -rf "$rootfs" "$rootfs.tar"
  nice debootstrap --variant=minbase "$SS_DEBIAN_SUITE" "$rootfs" "$mirror" >"$SS_IMAGES/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $SS_IMAGES/debootstrap.log"
  # Slim it the way the official slim image is: no package caches, lists, docs or logs.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/*
  printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$rootfs/etc/apt/apt.conf.d/slim"
  : >"$rootfs/etc/resolv.conf"; : >"$rootfs/etc/hostname"
  tar -C "$rootfs" --numeric-owner -cf "$rootfs.tar" .
  ctr=$(buildah_ from scratch)
  buildah_ add "$ctr" "$rootfs.tar" / >/dev/null
  buildah_ config --cmd '["bash"]' \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label org.opencontainers.image.description="Debian $SS_DEBIAN_SUITE minbase, built locally by debootstrap" \
    "$ctr"
  buildah_ commit --rm --quiet "$ctr" "$SS_BASE_IMAGE" >/dev/null
  rm -rf "$rootfs" "$rootfs.tar"
  log "built $SS_BASE_IMAGE in $((SECONDS - t0))s"
}

build_pause_image() {
  image_built "$SS_PAUSE_IMAGE" && return 0
  local ctr
  ctr=$(buildah_ from scratch)
  buildah_ copy "$ctr" "$SS_PAUSE_BIN/pause" /pause >/dev/null
  buildah_ config --entrypoint '["/pause"]' --user 65535:65535 \
    --label org.opencontainers.image.description="splitserve pod sandbox (pause)" "$ctr"
  buildah_ commit --rm --quiet "$ctr" "$SS_PAUSE_IMAGE" >/dev/null
  log "built $SS_PAUSE_IMAGE"
}

# Fully qualified name, as the kubelet resolves an image reference (docker.io/library/ default).
qualify_image() {
  local name=$1 first=${1%%/*}
  if [[ $name != */* ]]; then name=docker.io/library/$name
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then name=docker.io/$name
  fi
  [[ ${name##*/} == *:* || $name == *@* ]] || name=$name:latest
  echo "$name"
}

# load_image NAME: copies buildah's image NAME into the node's containerd (skipped if current).
load_image() {
  local name id stamp archive
  name=$(qualify_image "$1")
  id=$(buildah_ inspect --type image --format '{{.FromImageID}}' "$name")
  stamp=$SS_CONTAINERD_ROOT.loaded/$(tr '/:@' '___' <<<"$name")
  if [[ -f $stamp && $(<"$stamp") == "$id" ]] && ctr_ images ls -q "name==$name" | grep -q .; then
    return 0
  fi
  archive=$(mktemp -p "$SS_IMAGES" load.XXXXXX.tar)
  buildah_ push --quiet "$name" "oci-archive:$archive:$name"
  ctr_ images import "$archive" >/dev/null
  rm -f "$archive"
  ctr_ images ls -q "name==$name" | grep -q . || die "image $name did not show up in containerd after import"
  mkdir -p "${stamp%/*}"; echo "$id" >"$stamp"
  log "loaded $name into the node's containerd"
}

# prune_older_builds NAME: removes the other source-hash tags (`:src-*`) of NAME's repository,
# earlier builds of the tree, from buildah's storage and the node's containerd, except what a
# container still uses; one image per source change would otherwise fill the disk.
prune_older_builds() {
  local name repo ref in_use=""
  name=$(qualify_image "$1")
  repo=${name%:*}
  [[ ${name##*:} == src-* ]] || return 0
  if [[ -S $SS_CONTAINERD_SOCK ]] && ctr_ version >/dev/null 2>&1; then
    in_use=$(ctr_ containers ls 2>/dev/null | awk 'NR > 1 {print $2}')
    for ref in $(ctr_ images ls -q | grep -F "$repo:src-" || true); do
      [[ $ref == "$name" ]] && continue
      grep -qxF "$ref" <<<"$in_use" && continue
      ctr_ images rm "$ref" >/dev/null && log "removed $ref from the node's containerd"
    done
  fi
  for ref in $(buildah_ images --format '{{.Name}}:{{.Tag}}' | grep -F "$repo:src-" || true); do
    [[ $ref == "$name" ]] && continue
    grep -qxF "$ref" <<<"$in_use" && continue
    buildah_ rmi "$ref" >/dev/null 2>&1 && log "removed $ref from buildah's storage"
  done
  return 0
}
