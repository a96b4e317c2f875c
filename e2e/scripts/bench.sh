#!/usr/bin/env bash
# `make bench`: runs every executable e2e/bench/*/bench or e2e/bench/*.sh, in name order.
# Each benchmark reports its own figures; this script adds none of its own.
STAGE=bench
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
shopt -s nullglob
benches=("$REPO_ROOT"/e2e/bench/*/bench "$REPO_ROOT"/e2e/bench/*.sh)
if [ ${#benches[@]} = 0 ]; then
  log "no benchmarks exist yet (add an executable e2e/bench/<name>/bench or e2e/bench/<name>.sh)"
  exit 0
fi
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$("$E2E_SCRIPTS/cargo-target-dir.sh")}
export CARGO_TARGET_DIR
for b in "${benches[@]}"; do
  log "running ${b#"$REPO_ROOT"/}"
  "$b" || die "benchmark ${b#"$REPO_ROOT"/} failed (exit $?)"
done
