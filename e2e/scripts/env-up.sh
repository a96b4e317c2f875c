#!/usr/bin/env bash
# Starts the real parts (control plane, PostgreSQL, Redis, SMSC simulator) and writes
# target/env.sh with their addresses. Idempotent: parts already up and healthy are kept.
# If any part fails, the parts this run started are stopped again and one line says why.
STAGE=env-up
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

env_file=${SMPP_ENV_FILE:-$REPO_ROOT/target/env.sh}
smsc_up=$REPO_ROOT/e2e/smsc/up.sh
mkdir -p "$ENV_ROOT"

# status/up/down for one part; the SMSC scripts live with the simulator.
part() { # PART VERB
  case $1 in
    controlplane) KUBECONFIG_OUT=$ENV_ROOT/kubeconfig "$E2E_SCRIPTS/controlplane.sh" "$2" "$ENV_ROOT/controlplane" ;;
    postgres) "$E2E_SCRIPTS/postgres.sh" "$2" "$ENV_ROOT/postgres" ;;
    redis) "$E2E_SCRIPTS/redis.sh" "$2" "$ENV_ROOT/redis" ;;
    smsc)
      if [ "$2" = status ]; then
        # The simulator has no status verb: healthy when its stats endpoint answers.
        # shellcheck source=/dev/null
        [ -f "$env_file" ] && (source "$env_file" && curl -fsS --max-time 3 "$SMSC_STATS_URL" >/dev/null)
      else
        "$REPO_ROOT/e2e/smsc/$2.sh" "$ENV_ROOT/smsc"
      fi
      ;;
  esac
}

[ -x "$smsc_up" ] || die "SMSC simulator scripts are missing: $smsc_up (and down.sh) come with the simulator in e2e/smsc/"

parts="controlplane postgres redis smsc"
already=1
for p in $parts; do part "$p" status >/dev/null 2>&1 || already=0; done

exports=$(mktemp)
on_fail "rm -f '$exports'"
started=()
for p in $parts; do
  was_up=0
  part "$p" status >/dev/null 2>&1 && was_up=1
  [ $was_up = 1 ] || { started+=("$p"); on_fail "STAGE=env-up part $p down"; }
  STAGE=env-up/$p part "$p" up >>"$exports" || die "$p did not start (see the line above)"
done

# Assemble env.sh: the collected exports, then PATH with the built kubectl and helm first.
# Also SMSC_CA_B64, the simulator's CA in base64 (shell-safe, so unquoted): what a Secret's
# data takes, so `envsubst < examples/local-smsc.yaml` works by hand after sourcing env.sh.
# shellcheck source=/dev/null
ca_b64=$(source <(grep -E '^export SMSC_CA_FILE=' "$exports") && base64 -w0 "$SMSC_CA_FILE") ||
  die "cannot read the SMSC simulator's CA (SMSC_CA_FILE) to write SMSC_CA_B64"
tmp=$env_file.tmp
{
  echo "# Written by e2e/scripts/env-up.sh on $(date -u +%FT%TZ); source it: . target/env.sh"
  grep -E '^export [A-Z_][A-Z0-9_]*=' "$exports"
  echo "export SMSC_CA_B64=$ca_b64"
  echo "export PATH=\"$REPO_ROOT/e2e/.bin:\$PATH\""
} >"$tmp"
rm -f "$exports"
for v in KUBECONFIG DATABASE_URL REDIS_URL SMSC_HOST SMSC_PORT SMSC_TLS_PORT SMSC_CA_FILE SMSC_CA_B64 SMSC_SYSTEM_ID SMSC_PASSWORD SMSC_STATS_URL; do
  grep -q "^export $v=" "$tmp" || die "no $v was reported by the part that should provide it"
done
mv "$tmp" "$env_file"
clear_fail_hooks
if [ $already = 1 ]; then
  log "environment was already up and healthy; $env_file refreshed"
else
  log "environment up (started: ${started[*]}); now: source $env_file"
fi
