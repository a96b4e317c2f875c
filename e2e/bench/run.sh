#!/usr/bin/env bash
# `make bench` (e2e/scripts/bench.sh runs every e2e/bench/*.sh): builds the release binaries,
# installs Kannel (the peer) when missing, makes sure the real parts are up, then runs
# smpp-bench, which prints the figures and writes docs/benchmarks.md.
#
# Bounded: smpp-bench gives every wait a deadline and the whole run a hard limit
# (BENCH_TIMEOUT, default 3600 s; a full run takes ~25 min here). Leaves nothing behind: smpp-bench kills what it started,
# and an environment this script started is stopped again.
#
#   BENCH_ARGS="--quick"            fewer runs, smaller loads (smoke test of the benchmarks)
#   BENCH_ARGS="--only gateway"     one suite: gateway, kannel, operator, messages, customers
#   BENCH_OUT=/tmp/b.md             write the report elsewhere (default docs/benchmarks.md)
STAGE=bench
source "$(cd "$(dirname "$0")/../scripts" && pwd)/lib.sh"
cd "$REPO_ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/smpp-gateway/target}

# Kannel's bearerbox and smsbox (the message suite runs both) come in one package.
ensure_pkg /usr/sbin/bearerbox kannel

log "building release binaries (smpp-gateway, smpp-operator, smpp-bench)"
cargo build --release -q -p smpp-gateway -p smpp-operator -p smpp-e2e --bins ||
  die "cargo build --release failed (see the compiler output above)"

# Use the environment of `make env-up`, and leave it up; start one only when there is none,
# and stop it after. An env.sh can outlive its processes (a reboot): env-up is idempotent, so
# it restarts what died and keeps what is healthy.
env_file=${SMPP_ENV_FILE:-$REPO_ROOT/target/env.sh}
started_env=0
if [ -f "$env_file" ]; then
  log "an environment is set up: checking its parts are up (make env-up keeps healthy ones)"
  "$E2E_SCRIPTS/env-up.sh" || die "make env-up could not bring the environment's parts back up"
else
  log "no environment up: starting one (make env-up), stopped again afterwards"
  on_fail "'$E2E_SCRIPTS/env-down.sh'"
  "$E2E_SCRIPTS/env-up.sh"
  started_env=1
fi

# shellcheck disable=SC2086
timeout --kill-after=20 "${BENCH_TIMEOUT:-3600}" \
  "$CARGO_TARGET_DIR/release/smpp-bench" run --out "${BENCH_OUT:-docs/benchmarks.md}" ${BENCH_ARGS:-} ||
  die "smpp-bench failed or ran out of time (exit $?); the report above says which benchmark and why"

for box in bearerbox smsbox; do
  if pgrep -x $box >/dev/null; then
    die "a $box is still running after the benchmarks (pid $(pgrep -x $box | tr '\n' ' '))"
  fi
done

if [ $started_env = 1 ]; then
  "$E2E_SCRIPTS/env-down.sh"
fi
