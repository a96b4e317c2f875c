#!/usr/bin/env bash
# Builds kube-apiserver, etcd, kubectl and helm from the pins in go.mod into e2e/.bin.
# Rebuilds only when go.mod/go.sum change (stamp file), and relies on the Go build cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${CONTROLPLANE_BIN:-$here/../.bin}
mkdir -p "$bin"
stamp="$bin/.pins"
pins=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -d' ' -f1)
tools="kube-apiserver etcd kubectl helm"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ]; then
  ok=1; for t in $tools; do [ -x "$bin/$t" ] || ok=0; done
  if [ $ok = 1 ]; then echo "controlplane: binaries up to date in $bin"; exit 0; fi
fi
command -v go >/dev/null || { echo "controlplane: go not found on PATH; install Go 1.26+" >&2; exit 1; }

k8s_version=$(sed -n 's#^\s*k8s.io/kubernetes \(v[0-9.]*\)$#\1#p' "$here/go.mod" | head -1)
minor=$(echo "$k8s_version" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${k8s_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/client-go/pkg/version.gitVersion=${k8s_version}"
cd "$here"
export CGO_ENABLED=0
build() { # name package
  local start=$SECONDS
  echo "controlplane: building $1 ($2) ..."
  if ! go build -trimpath -ldflags "$ldflags" -o "$bin/$1.tmp" "$2"; then
    echo "controlplane: go build of $1 failed (see output above)" >&2; rm -f "$bin/$1.tmp"; exit 1
  fi
  mv "$bin/$1.tmp" "$bin/$1"
  echo "controlplane: built $1 in $((SECONDS - start))s"
}
build etcd go.etcd.io/etcd/server/v3
build kubectl k8s.io/kubernetes/cmd/kubectl
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build helm helm.sh/helm/v3/cmd/helm
echo "$pins" > "$stamp"
echo "controlplane: all binaries ready in $bin ($k8s_version)"
