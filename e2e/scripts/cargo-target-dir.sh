#!/usr/bin/env bash
# Prints this clone's default cargo target dir (the Makefile and the scripts use it when
# CARGO_TARGET_DIR is not set):
#   ~/.cache/smpp-gateway/target-<clone dir name>-<first 12 hex of sha256 of its path>
# - Outside the clone, so it survives `git clean` and runs of the same clone reuse it.
# - One per clone: clones sharing a target dir overwrite each other's binaries, and cargo
#   (which does not put the source path in the artifact hash, and judges freshness by mtimes)
#   may take another clone's build as up to date. The e2e harness refuses such a binary
#   (e2e/src/process.rs, assert_built_here) whatever the target dir.
# .ci/run chooses the shared ~/.cache/smpp-gateway/target instead (see there).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
hash=$(printf '%s' "$root" | sha256sum | cut -c1-12)
echo "$HOME/.cache/smpp-gateway/target-$(basename "$root")-$hash"
