#!/usr/bin/env bash
# Builds kube-apiserver, etcd, kubectl and helm from the pins in go.mod into e2e/.bin.
#
# Rebuilds only when go.mod/go.sum/this script change (a stamp of their hash). Built binaries
# are also kept in ~/.cache/smpp-gateway/controlplane/<hash>, so a fresh clone with the same
# pins (CI) copies them instead of linking again; the Go build cache covers the rest.
# Fails with one line naming the tool when `go build` fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${CONTROLPLANE_BIN:-$(cd "$here/.." && pwd)/.bin}
mkdir -p "$bin"
stamp="$bin/.pins"
pins=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -d' ' -f1)
cache=${CONTROLPLANE_CACHE:-$HOME/.cache/smpp-gateway/controlplane}/$pins
tools="etcd kubectl kube-apiserver helm"

all_in() { local t; for t in $tools; do [ -x "$1/$t" ] || return 1; done; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ] && all_in "$bin"; then
  echo "controlplane: binaries up to date in $bin"
  exit 0
fi
if all_in "$cache"; then
  for t in $tools; do cp "$cache/$t" "$bin/$t.tmp" && mv "$bin/$t.tmp" "$bin/$t"; done
  echo "$pins" >"$stamp"
  echo "controlplane: binaries for these pins copied from $cache"
  exit 0
fi
command -v go >/dev/null || { echo "controlplane: FAILED: go not found on PATH; install Go 1.26+" >&2; exit 1; }

# The require line reads "k8s.io/kubernetes v1.37.2 // indirect".
k8s_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v[0-9]+\.[0-9]+\.[0-9]+$/ { print $2; exit }' "$here/go.mod")
[ -n "$k8s_version" ] || { echo "controlplane: FAILED: no k8s.io/kubernetes version in $here/go.mod" >&2; exit 1; }
minor=$(echo "$k8s_version" | cut -d. -f2)
# Without these stamps kubectl and the apiserver panic at start on an empty version string.
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${k8s_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/client-go/pkg/version.gitVersion=${k8s_version}"
cd "$here"
export CGO_ENABLED=0

build() { # NAME PACKAGE
  local start=$SECONDS pid rc=0
  echo "controlplane: building $1 ($2) ..."
  go build -trimpath -ldflags "$ldflags" -o "$bin/$1.tmp" "$2" >"$bin/$1.build.log" 2>&1 &
  pid=$!
  # A first build takes minutes: say that it is still going.
  while kill -0 $pid 2>/dev/null; do
    sleep 2
    if kill -0 $pid 2>/dev/null && [ $(((SECONDS - start) % 30)) -lt 2 ]; then
      echo "controlplane:   still building $1 ($((SECONDS - start))s)"
    fi
  done
  wait $pid || rc=$?
  if [ $rc != 0 ]; then
    cat "$bin/$1.build.log" >&2
    rm -f "$bin/$1.tmp"
    echo "controlplane: FAILED: go build of $1 ($2) exited $rc: $(grep -m1 -v '^#' "$bin/$1.build.log" | cut -c1-200)" >&2
    exit 1
  fi
  rm -f "$bin/$1.build.log"
  mv "$bin/$1.tmp" "$bin/$1"
  echo "controlplane: built $1 in $((SECONDS - start))s"
}
for t in $tools; do
  case $t in
    etcd) build etcd go.etcd.io/etcd/server/v3 ;;
    kubectl) build kubectl k8s.io/kubernetes/cmd/kubectl ;;
    kube-apiserver) build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver ;;
    helm) build helm helm.sh/helm/v3/cmd/helm ;;
  esac
done
"$bin/kubectl" version --client >/dev/null 2>&1 ||
  { echo "controlplane: FAILED: the built kubectl does not run (version stamp?)" >&2; exit 1; }
mkdir -p "$cache.tmp"
for t in $tools; do cp "$bin/$t" "$cache.tmp/$t"; done
rm -rf "$cache" && mv "$cache.tmp" "$cache"
# Binaries of older pins are dead weight (about 270 MB each).
find "$(dirname "$cache")" -mindepth 1 -maxdepth 1 ! -name "$pins" -exec rm -rf {} +
echo "$pins" >"$stamp"
echo "controlplane: all binaries ready in $bin ($k8s_version)"
