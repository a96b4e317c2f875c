#!/usr/bin/env bash
# `make test`: everything CI runs, in order, failing fast before the environment is up:
#   prerequisites, control-plane build, fmt check, shellcheck, clippy, build, simulator unit
#   tests, env-up, cargo test, env-down.
# env-down runs in a trap, also when a step fails or the run is interrupted, and the run fails
# if any process of the environment is left behind. Ends with a summary table.
STAGE="test"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$("$E2E_SCRIPTS/cargo-target-dir.sh")}
export CARGO_TARGET_DIR
TEST_TIMEOUT=${TEST_TIMEOUT:-2400}
logs=$REPO_ROOT/target/test-logs
rm -rf "$logs"
mkdir -p "$logs"

summary=()
env_started=0
total_start=$SECONDS

record() { summary+=("$(printf '%-14s %-6s %5ss  %s' "$1" "$2" "$3" "${4:-}")"); }

# step NAME CMD...: runs CMD (output also kept in target/test-logs/NAME.log), records its
# outcome and time, with the first error line in the summary; returns CMD's status.
step() {
  local name=$1 start=$SECONDS rc=0 first at
  shift
  echo "==> $name: $*" >&2
  "$@" 2>&1 | tee "$logs/$name.log" || rc=${PIPESTATUS[0]}
  if [ $rc = 0 ]; then
    record "$name" ok $((SECONDS - start))
  else
    first=$(grep -m1 -E '^(error|Diff in)|FAILED' "$logs/$name.log" | cut -c1-100 || true)
    at=$(grep -m1 -E '^ *--> ' "$logs/$name.log" | sed 's/^ *--> / at /' || true)
    record "$name" FAIL $((SECONDS - start)) "exit $rc: ${first:-see target/test-logs/$name.log}$at"
  fi
  return $rc
}

# Processes of this environment still alive: anything running from target/env, the built
# control-plane binaries or the simulator's directory, or listening on a port env-up used.
leftovers() {
  local pat="$ENV_ROOT/|$REPO_ROOT/e2e/\.bin/|$REPO_ROOT/e2e/smsc/" f port
  pgrep -af "$pat" | grep -v -E "^($$|$BASHPID) " || true
  for f in "$ENV_ROOT"/*/port "$ENV_ROOT"/*/*.port; do
    [ -f "$f" ] || continue
    port=$(cat "$f")
    ss -Hltnp "sport = :$port" 2>/dev/null | sed "s|^|port $port still open: |" || true
  done
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [ $env_started = 1 ]; then
    step env-down "$E2E_SCRIPTS/env-down.sh" || rc=1
  fi
  local left
  left=$(leftovers)
  if [ -n "$left" ]; then
    record leftovers FAIL 0 "processes left behind (listed above)"
    echo "$left" >&2
    rc=1
  fi
  # Fewer tests than the floor kept in e2e/test-floor: a suite stopped running, not a pass.
  if [ -f "$logs/cargo-test.log" ]; then
    local ran floor
    ran=$(awk '/^test result:/ { for (i = 2; i <= NF; i++) if ($i ~ /^(passed|failed);/) n += $(i-1) }
      END { print n + 0 }' "$logs/cargo-test.log")
    floor=$(grep -m1 -E '^[0-9]+$' "$REPO_ROOT/e2e/test-floor" || echo none)
    if [ "$floor" = none ]; then
      record test-floor FAIL 0 "e2e/test-floor holds no number"
      rc=1
    elif [ "$ran" -lt "$floor" ]; then
      record test-floor FAIL 0 "$ran tests ran, fewer than the floor of $floor in e2e/test-floor"
      rc=1
    else
      record test-floor ok 0 "$ran tests ran (floor $floor)"
    fi
  fi
  echo
  echo "================ make test summary ================"
  printf '%s\n' "${summary[@]}"
  if [ -f "$logs/cargo-test.log" ]; then
    local counts
    counts=$(awk '/^test result:/ { for (i = 2; i <= NF; i++) {
        if ($i ~ /^passed;/) p += $(i-1); if ($i ~ /^failed;/) f += $(i-1); if ($i ~ /^ignored;/) g += $(i-1) } }
      END { printf "%d passed, %d failed, %d skipped", p, f, g }' "$logs/cargo-test.log")
    grep -E '^test .* FAILED$' "$logs/cargo-test.log" | sed 's/^/  /' || true
    echo "cargo test log: $logs/cargo-test.log"
    echo "cargo-test: $counts"
  fi
  echo "total: $((SECONDS - total_start))s"
  if [ $rc = 0 ]; then echo "make test: PASSED"; else echo "make test: FAILED"; fi
  exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM

step prerequisites "$E2E_SCRIPTS/prereqs.sh"
step controlplane "$REPO_ROOT/e2e/controlplane/build.sh"
step fmt cargo fmt --all --check
step shellcheck shellcheck -x -P SCRIPTDIR -S warning e2e/scripts/*.sh e2e/controlplane/*.sh deploy/images/*.sh .ci/run
step clippy cargo clippy --workspace --all-targets --quiet -- -D warnings
step build cargo build --workspace --bins --quiet
# The container images e2e/tests/images.rs runs (release build, buildah; installs buildah/podman/runc).
step images "$REPO_ROOT/deploy/images/build.sh"
# The simulator's own unit tests (node --test of the files package.json lists: each test file
# must be listed), after `npm ci` when needed.
smsc_unit() {
  local f
  for f in "$REPO_ROOT"/e2e/smsc/test/*.test.js; do
    grep -q "test/${f##*/}" "$REPO_ROOT/e2e/smsc/package.json" \
      || { echo "smsc-unit: ${f##*/} is missing from the test script in e2e/smsc/package.json" >&2; return 1; }
  done
  "$REPO_ROOT/e2e/smsc/ensure-deps.sh" && (cd "$REPO_ROOT/e2e/smsc" && npm test --silent)
}
step smsc-unit smsc_unit
env_started=1
step env-up "$E2E_SCRIPTS/env-up.sh"
# shellcheck source=/dev/null
source "$REPO_ROOT/target/env.sh"
run_tests() {
  timeout --kill-after=30 "$TEST_TIMEOUT" cargo test --workspace --no-fail-fast
}
step cargo-test run_tests
