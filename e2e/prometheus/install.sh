#!/usr/bin/env bash
# Build the Prometheus server from the Go module proxy, once per version, into the user cache.
# Prints the path of the binary on stdout; everything else goes to stderr.
#   PROMETHEUS_MODULE_VERSION  module tag to build (v0.3XX.Y is Prometheus 3.XX.Y)
#
# `go install …@version` refuses modules whose go.mod has replace or exclude directives, which
# most Prometheus releases have; so this builds from a small wrapper module that requires
# Prometheus and carries the same directives as the main module would.
set -euo pipefail

version="${PROMETHEUS_MODULE_VERSION:-v0.309.1}"
module="github.com/prometheus/prometheus"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/splitserve"
bin_dir="$cache/bin/prometheus-$version"
binary="$bin_dir/prometheus"

if [[ -x "$binary" ]] && "$binary" --version >/dev/null 2>&1; then
  echo "$binary"
  exit 0
fi

command -v go >/dev/null || { echo "install.sh: needs the go toolchain on PATH" >&2; exit 1; }
command -v python3 >/dev/null || { echo "install.sh: needs python3 on PATH" >&2; exit 1; }

mkdir -p "$cache/go/mod" "$cache/go/cache"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/cache"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod" GOTOOLCHAIN=local

wrap="$cache/build/prometheus-$version"
rm -rf "$wrap"
mkdir -p "$wrap"
cd "$wrap"

upstream_mod="$(go mod download -json "$module@$version" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])')"
go_line="$(grep -m1 '^go ' "$upstream_mod" | cut -d' ' -f2)"
cat > go.mod <<MOD
module splitserve.invalid/prometheus-build

go $go_line

require $module $version
MOD
# the upstream main module's replace and exclude directives, applied to the wrapper
go mod edit -json "$upstream_mod" | python3 -c '
import json, sys
m = json.load(sys.stdin)
for r in m.get("Replace") or []:
    old, new = r["Old"], r["New"]
    lhs = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    rhs = new["Path"] + ("@" + new["Version"] if new.get("Version") else "")
    print("-replace=" + lhs + "=" + rhs)
for e in m.get("Exclude") or []:
    print("-exclude=" + e["Path"] + "@" + e["Version"])
' | xargs -r go mod edit

echo "building prometheus $version (niced; takes several minutes on two cores)" >&2
mkdir -p "$bin_dir.tmp"
nice -n 10 go build -trimpath -ldflags "-s -w" -o "$bin_dir.tmp/prometheus" "$module/cmd/prometheus"
"$bin_dir.tmp/prometheus" --version >&2
rm -rf "$bin_dir"
mv "$bin_dir.tmp" "$bin_dir"
echo "$binary"
