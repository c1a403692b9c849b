# Installs the cluster's tools: Debian packages, and Go commands built from the Go module proxy
# through the wrapper modules in e2e/cluster/build/. Each result is cached by version.
# shellcheck shell=bash

install_packages() {
  local missing=() pkg
  for pkg in "${SS_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
  log "packages: $(dpkg-query -W -f='${Package} ${Version}, ' "${SS_APT_PACKAGES[@]}")"
}

# go_build OUT_DIR MODULE_DIR LDFLAGS PACKAGE...: one `go build` for all PACKAGES into OUT_DIR,
# skipped when OUT_DIR is complete; prints progress while it compiles.
go_build() {
  local out=$1 module=$2 ldflags=$3; shift 3
  [[ -f $out/.complete ]] && return 0
  command -v go >/dev/null || die "Go is required to build ${out##*/} (go not on PATH)"
  log "building ${out##*/} ($*) with $(go env GOVERSION); cached in $out"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp" "$SS_GOCACHE" "$SS_GOMODCACHE"
  local t0=$SECONDS
  (
    cd "$module"
    export GOCACHE=$SS_GOCACHE GOMODCACHE=$SS_GOMODCACHE GOFLAGS=-mod=readonly CGO_ENABLED=0 GOTOOLCHAIN=local
    nice -n 10 go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp/" "$@"
  ) &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5 & wait $! 2>/dev/null
    ((SECONDS - t0 < 30 || (SECONDS - t0) % 60 < 5)) && kill -0 "$pid" 2>/dev/null \
      && log "  ... still building ${out##*/} ($((SECONDS - t0))s, build cache $(du -sh "$SS_GOCACHE" 2>/dev/null | cut -f1))"
  done
  wait "$pid" || die "go build of ${out##*/} failed"
  touch "$out.tmp/.complete"
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "built ${out##*/} in $((SECONDS - t0))s"
}

build_kubernetes() {
  local v=$SS_K8S_VERSION minor ld="" p
  minor=${v#v1.}; minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  go_build "$SS_K8S_BIN" "$SS_BUILD_DIR/kubernetes" "$ld" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl ./cmd/cri-reset
}

build_etcd() {
  go_build "$SS_ETCD_BIN" "$SS_BUILD_DIR/etcd" "-X go.etcd.io/etcd/api/v3/version.GitSHA=$SS_ETCD_VERSION" \
    go.etcd.io/etcd/server/v3
  [[ -x $SS_ETCD_BIN/etcd ]] || mv "$SS_ETCD_BIN/server" "$SS_ETCD_BIN/etcd"
}

build_helm() {
  local minor=${SS_K8S_VERSION#v1.}; minor=${minor%%.*}
  go_build "$SS_HELM_BIN" "$SS_BUILD_DIR/helm" \
    "-X helm.sh/helm/v3/internal/version.version=$SS_HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    helm.sh/helm/v3/cmd/helm
}

build_coredns() {
  go_build "$SS_COREDNS_BIN" "$SS_BUILD_DIR/coredns" "" .
}

# metrics-server stamps its version into client-go's version package (as its own Makefile does).
build_metrics_server() {
  go_build "$SS_METRICS_SERVER_BIN" "$SS_BUILD_DIR/metrics-server" \
    "-X k8s.io/client-go/pkg/version.gitVersion=$SS_METRICS_SERVER_VERSION -X k8s.io/client-go/pkg/version.gitTreeState=clean" \
    sigs.k8s.io/metrics-server/cmd/metrics-server
}

build_pause() {
  go_build "$SS_PAUSE_BIN" "$SS_BUILD_DIR/pause" "" .
}

install_all() {
  install_packages
  build_pause
  build_kubernetes
  build_etcd
  build_coredns
  build_helm
  build_metrics_server
  build_netpol
}
