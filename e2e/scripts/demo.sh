#!/usr/bin/env bash
# `make demo`: the main job on a fresh machine. Each section is a function; later work adds
# sections (operator, gateway, examples/, a message that comes back delivered) to `main`.
# The environment stays up afterwards so you can look around; `make env-down` stops it.
STAGE=demo
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/smpp-gateway/target}

section() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }
show() { echo "\$ $*"; "$@"; }

real_parts() {
  section "1. Real parts: Kubernetes control plane, PostgreSQL, Redis, SMSC simulator"
  "$E2E_SCRIPTS/prereqs.sh"
  "$E2E_SCRIPTS/env-up.sh"
  # shellcheck source=/dev/null
  source target/env.sh
}

how_to_reach() {
  section "2. How to reach each part (after: source target/env.sh)"
  echo "Kubernetes API: $(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')  KUBECONFIG=$KUBECONFIG"
  show kubectl get namespaces
  echo
  echo "PostgreSQL: DATABASE_URL=$DATABASE_URL"
  show psql "$DATABASE_URL" -Atc "select version()"
  echo
  echo "Redis: REDIS_URL=$REDIS_URL"
  show redis-cli -u "$REDIS_URL" ping
  echo
  echo "SMSC simulator: plain $SMSC_HOST:$SMSC_PORT, TLS $SMSC_HOST:$SMSC_TLS_PORT (CA $SMSC_CA_FILE)"
  echo "  system_id $SMSC_SYSTEM_ID, password in target/env.sh (SMSC_PASSWORD)"
  show curl -fsS "$SMSC_STATS_URL"
  echo
}

main() {
  real_parts
  how_to_reach
  section "Done"
  echo "The environment stays up. Use it with: source target/env.sh   Stop it with: make env-down"
}
main "$@"
