#!/usr/bin/env bash
# Installs what the real parts and tests need and the machine may lack: Debian's PostgreSQL,
# Redis and the tools the scripts use, and Python packages named in e2e/requirements.txt.
# (The simulator's node_modules come from `npm ci`, run by e2e/smsc/up.sh.)
STAGE=prereqs
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
mkdir -p "$ENV_ROOT"

ensure_pkg curl curl
ensure_pkg openssl openssl
ensure_pkg ss iproute2
ensure_pkg /usr/lib/postgresql/15/bin/initdb postgresql-15
ensure_pkg psql postgresql-client-15
ensure_pkg redis-server redis-server
ensure_pkg redis-cli redis-tools
ensure_pkg shellcheck shellcheck
# Lua for e2e/tests/argocd_health.rs (the Argo CD health check): 5.4, and 5.1 = Argo CD's dialect.
ensure_pkg lua5.4 lua5.4
ensure_pkg lua5.1 lua5.1
# promtool and a real Prometheus for e2e/tests/observability.rs (alert rules, dashboard queries).
ensure_pkg promtool prometheus
command -v go >/dev/null || die "go not found on PATH (the control plane is built from Go modules; install Go 1.26+)"
command -v node >/dev/null && command -v npm >/dev/null ||
  die "node/npm not found on PATH (the SMSC simulator runs on Node.js; install nodejs and npm)"

req=$REPO_ROOT/e2e/requirements.txt
if [ -f "$req" ]; then
  log "pip install -r e2e/requirements.txt"
  python3 -m pip install -q --disable-pip-version-check -r "$req" >"$ENV_ROOT/pip.log" 2>&1 ||
    die "pip install -r $req failed (see $ENV_ROOT/pip.log)"
fi
log "prerequisites present"
