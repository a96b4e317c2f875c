#!/usr/bin/env bash
# Stops everything env-up started (each part by PID) and removes target/env.sh.
STAGE=env-down
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

env_file=${SMPP_ENV_FILE:-$REPO_ROOT/target/env.sh}
rc=0
# The demo's smpp-operator and smpp-gateway first, while the parts they use are still up.
"$E2E_SCRIPTS/demo.sh" stop || rc=1
# The parts are independent: stop them side by side (the apiserver alone takes ~5 s).
jobs_=()
if [ -x "$REPO_ROOT/e2e/smsc/down.sh" ]; then
  "$REPO_ROOT/e2e/smsc/down.sh" "$ENV_ROOT/smsc" &
  jobs_+=($!)
fi
"$E2E_SCRIPTS/redis.sh" down "$ENV_ROOT/redis" &
jobs_+=($!)
"$E2E_SCRIPTS/postgres.sh" down "$ENV_ROOT/postgres" &
jobs_+=($!)
KUBECONFIG_OUT=$ENV_ROOT/kubeconfig "$E2E_SCRIPTS/controlplane.sh" down "$ENV_ROOT/controlplane" &
jobs_+=($!)
for j in "${jobs_[@]}"; do wait "$j" || rc=1; done
shopt -s nullglob
# Private instances tests started (target/env/private-*) whose test process died before Drop.
for d in "$ENV_ROOT"/private-pg-*; do "$E2E_SCRIPTS/postgres.sh" destroy "$d" || rc=1; done
for d in "$ENV_ROOT"/private-redis-*; do "$E2E_SCRIPTS/redis.sh" down "$d" || rc=1; rm -rf "$d"; done
# Scratch dirs of e2e/tests/scripts.rs (bad-<script>-<id>).
for d in "$ENV_ROOT"/bad-postgres-*; do "$E2E_SCRIPTS/postgres.sh" destroy "$d" || rc=1; done
for d in "$ENV_ROOT"/bad-redis-*; do "$E2E_SCRIPTS/redis.sh" down "$d" || rc=1; rm -rf "$d"; done
for d in "$ENV_ROOT"/bad-controlplane-*; do "$E2E_SCRIPTS/controlplane.sh" down "$d" || rc=1; rm -rf "$d"; done
rm -f "$env_file"
[ $rc = 0 ] || die "some part did not stop cleanly (see above)"
log "environment down"
