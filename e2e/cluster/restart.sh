#!/usr/bin/env bash
# Restarts one component of the running local cluster: stops it, then up.sh starts whatever is
# missing. Used to inject faults (e.g. `e2e/cluster/restart.sh kube-apiserver`); prints the
# kubeconfig path like up.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SS_LIB=$here/lib
# shellcheck source=lib/config.sh
source "$SS_LIB/config.sh"
# shellcheck source=lib/util.sh
source "$SS_LIB/util.sh"
[[ $# == 1 ]] || die "usage: restart.sh COMPONENT (one of: $(cd "$SS_PIDS" && ls ./*.pid 2>/dev/null | sed 's#^\./##; s#\.pid$##' | tr '\n' ' '))"
[[ -f $SS_PIDS/$1.pid ]] || die "$1 is not a running component of this cluster (no $SS_PIDS/$1.pid)"
require_root
stop_daemon "$1" 90
exec "$here/up.sh"
