#!/usr/bin/env bash
# Installs the Prometheus server binary (and promtool, next to it) from Debian's package into the
# user cache, once per package version, without running the package's scripts (no service is
# started, no user made). Prints the path of the server binary on stdout; everything else goes
# to stderr.
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}/splitserve"
work=$(mktemp -d)
chmod 755 "$work"  # apt downloads as its own user
trap 'rm -rf "$work"' EXIT

version=$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')
if [[ -z $version || $version == "(none)" ]]; then
  echo "install.sh: refreshing the package lists" >&2
  apt-get update -qq >&2
  version=$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')
fi
[[ -n $version && $version != "(none)" ]] || { echo "install.sh: no prometheus package" >&2; exit 1; }

bin_dir="$cache/bin/prometheus-deb-${version//[^A-Za-z0-9.+-]/_}"
binary="$bin_dir/prometheus"
if [[ -x $binary && -x $bin_dir/promtool ]]; then
  echo "$binary"
  exit 0
fi

echo "install.sh: fetching Debian's prometheus $version" >&2
(cd "$work" && apt-get download -qq "prometheus=$version" >&2)
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
mkdir -p "$bin_dir.tmp"
cp "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$bin_dir.tmp/"
"$bin_dir.tmp/prometheus" --version >&2
"$bin_dir.tmp/promtool" --version >&2
rm -rf "$bin_dir"
mv "$bin_dir.tmp" "$bin_dir"
echo "$binary"
