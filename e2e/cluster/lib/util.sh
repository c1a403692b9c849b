# Small helpers shared by up.sh, down.sh and build-image.sh.
# shellcheck shell=bash

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND (quietly) until it succeeds.
wait_until() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout)) delay=0.1
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    sleep "$delay"
    [[ $delay == 1 ]] || delay=$(awk -v d="$delay" 'BEGIN { d *= 2; print (d > 1 ? 1 : d) }')
  done
}

# start_daemon NAME COMMAND...: runs COMMAND detached (own session, no inherited stdio) with its
# log in $SS_LOGS/NAME.log and its pid in $SS_PIDS/NAME.pid; does nothing if it already runs
# with the same command line, and restarts it when the command line changed (a new flag or
# binary version takes effect on the next up.sh).
start_daemon() {
  local name=$1; shift
  local cmdfile=$SS_PIDS/$name.cmd
  if daemon_running "$name"; then
    if [[ -f $cmdfile && $(<"$cmdfile") == "$*" ]]; then
      log "$name already running (pid $(<"$SS_PIDS/$name.pid"))"; return
    fi
    log "$name runs with another command line; restarting it"
    stop_daemon "$name" 60
  fi
  mkdir -p "$SS_LOGS" "$SS_PIDS"
  setsid "$@" </dev/null >>"$SS_LOGS/$name.log" 2>&1 8>&- 9>&- &
  echo $! >"$SS_PIDS/$name.pid"
  printf '%s' "$*" >"$cmdfile"
  log "started $name (pid $!, log $SS_LOGS/$name.log)"
}

daemon_running() {
  local pidfile=$SS_PIDS/$1.pid
  [[ -f $pidfile ]] && kill -0 "$(<"$pidfile")" 2>/dev/null
}

# stop_daemon NAME [GRACE_SECONDS]: TERM, then KILL after the grace period; removes the pid file.
stop_daemon() {
  local name=$1 grace=${2:-10} pidfile=$SS_PIDS/$1.pid pid
  [[ -f $pidfile ]] || return 0
  pid=$(<"$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until "$grace" "$name to exit" bash -c "! kill -0 $pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_until 10 "$name to die" bash -c "! kill -0 $pid" || true
    fi
    log "stopped $name"
  fi
  rm -f "$pidfile" "$SS_PIDS/$name.cmd"
}

require_root() {
  [[ $(id -u) == 0 ]] || die "the local cluster needs root (containerd, kubelet, iptables, mounts); run as root"
}

kubectl_admin() { "$SS_K8S_BIN/kubectl" --kubeconfig "$SS_KUBECONFIG" "$@"; }

# The Debian mirror this machine's apt already uses (debootstrap uses the same one).
debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n $uri ]] || uri=$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  [[ -n $uri ]] || die "no Debian mirror found in /etc/apt/sources.list{,.d/debian.sources}"
  echo "$uri"
}
