#!/usr/bin/env bash
# Builds the two container images, smpp-gateway and smpp-operator, offline: no base image is
# pulled (FROM scratch), each image is assembled from what the build produces.
#
#   1. cargo build --release -p smpp-gateway -p smpp-operator (in CARGO_TARGET_DIR if set)
#   2. stages a rootfs per binary: the binary, exactly the shared libraries ldd lists, the CA
#      bundle, /etc/passwd and /etc/group for 65532, an empty /tmp
#   3. buildah --storage-driver vfs bud -f deploy/images/<bin>.Containerfile, tagged
#      localhost/<bin>:<workspace version> (what the chart renders as <bin>:<appVersion>)
#      and localhost/<bin>:latest
#
# Installs Debian's buildah, podman and runc when missing (podman and runc are what
# e2e/tests/images.rs runs the images with). Idempotent: a second run rebuilds the images
# and drops the untagged old ones. Image storage lives in SMPP_CONTAINERS_DIR (default
# ~/.cache/smpp-gateway/containers), outside the clone, so CI on a fresh clone reuses it.
#
# Env: SMPP_CONTAINERS_DIR, CARGO_TARGET_DIR, SKIP_CARGO_BUILD=1 (use the binaries as built).
# Prints the image names and sizes; fails with one line "images: FAILED: <step>: <reason>".
STAGE=images
# shellcheck source=../../e2e/scripts/lib.sh
source "$(dirname "$0")/../../e2e/scripts/lib.sh"
cd "$REPO_ROOT"

IMAGES_DIR=$REPO_ROOT/deploy/images
CONTAINERS_DIR=${SMPP_CONTAINERS_DIR:-$HOME/.cache/smpp-gateway/containers}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
BINS=(smpp-gateway smpp-operator)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

mkdir -p "$ENV_ROOT" "$CONTAINERS_DIR"
log_dir=$TARGET_DIR/images
mkdir -p "$log_dir"

# --- tools -----------------------------------------------------------------------------------
ensure_pkg buildah buildah
ensure_pkg podman podman
ensure_pkg runc runc
ensure_pkg ldd libc-bin
[ -s "$CA_BUNDLE" ] || ensure_pkg update-ca-certificates ca-certificates
[ -s "$CA_BUNDLE" ] || die "tools: $CA_BUNDLE is missing or empty (apt-get install ca-certificates)"

# The storage both buildah here and podman in the tests use: vfs (no overlay or fuse needed),
# graph root and run root under CONTAINERS_DIR.
STORE=(--storage-driver vfs --root "$CONTAINERS_DIR/storage" --runroot "$CONTAINERS_DIR/run")

version=$(sed -n '/^\[workspace.package\]/,/^\[/{s/^version *= *"\(.*\)"/\1/p}' Cargo.toml | head -n1)
[ -n "$version" ] || die "version: no version under [workspace.package] in Cargo.toml"

# --- 1. release binaries ---------------------------------------------------------------------
if [ "${SKIP_CARGO_BUILD:-}" != 1 ]; then
  log "cargo build --release -p smpp-gateway -p smpp-operator (target dir $TARGET_DIR)"
  cargo build --release --quiet -p smpp-gateway -p smpp-operator >"$log_dir/cargo.log" 2>&1 ||
    die "cargo build: cargo build --release failed (see $log_dir/cargo.log: $(last_log_line "$log_dir/cargo.log"))"
fi

# --- 2. rootfs -------------------------------------------------------------------------------
# stage BIN: writes $log_dir/BIN/rootfs; prints nothing.
stage() {
  local bin=$1 src=$TARGET_DIR/release/$1 ctx=$log_dir/$1 root lib libs
  [ -x "$src" ] || die "stage $bin: $src not found (build it: cargo build --release -p $bin)"
  root=$ctx/rootfs
  rm -rf "$ctx"
  mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
  chmod 1777 "$root/tmp"
  install -m 0555 "$src" "$root/usr/local/bin/$bin"
  # Every library ldd resolves (absolute paths: "name => /path (addr)" and the loader's
  # "/lib64/ld-linux-x86-64.so.2 (addr)"); linux-vdso has no file.
  libs=$(ldd "$src" 2>&1) || die "stage $bin: ldd $src failed: $libs"
  if grep -q 'not found' <<<"$libs"; then
    die "stage $bin: ldd cannot resolve a library of $src: $(grep -m1 'not found' <<<"$libs" | xargs)"
  fi
  while read -r lib; do
    [ -n "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib" || die "stage $bin: cannot copy $lib"
  done < <(awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }' <<<"$libs")
  [ -n "$(find "$root/lib64" "$root/lib" -name 'ld-linux*' 2>/dev/null)" ] ||
    die "stage $bin: the dynamic loader is not among ldd's libraries ($src statically linked? then drop this check)"
  cp -L "$CA_BUNDLE" "$root$CA_BUNDLE"
  chmod 0444 "$root$CA_BUNDLE"
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
}

# --- 3. images -------------------------------------------------------------------------------
build_image() {
  local bin=$1 ctx=$log_dir/$1 blog=$log_dir/$1.buildah.log
  log "buildah bud $bin -> localhost/$bin:$version"
  buildah "${STORE[@]}" bud --quiet --format oci --isolation chroot --no-cache \
    -f "$IMAGES_DIR/$bin.Containerfile" \
    -t "localhost/$bin:$version" -t "localhost/$bin:latest" \
    "$ctx" >"$blog" 2>&1 || die "buildah bud $bin failed (see $blog: $(last_log_line "$blog"))"
}

for bin in "${BINS[@]}"; do
  stage "$bin"
  build_image "$bin"
done
# Old builds of the same tags are now untagged: drop them so the storage does not grow.
buildah "${STORE[@]}" rmi --prune >/dev/null 2>&1 || true

for bin in "${BINS[@]}"; do
  size=$(buildah "${STORE[@]}" images --format '{{.Size}}' "localhost/$bin:$version" 2>/dev/null | awk 'NR == 1')
  [ -n "$size" ] || die "verify: localhost/$bin:$version not in $CONTAINERS_DIR/storage after the build"
  log "built localhost/$bin:$version ($size)"
done
log "storage: ${STORE[*]}"
