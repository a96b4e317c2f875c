#!/usr/bin/env bash
# `make demo`: the main job on a fresh machine. Brings up the real parts, starts smpp-operator
# and smpp-gateway against them, applies examples/, shows `kubectl get smppvendors` bound over
# TLS to the local SMSC simulator, and sends a message through the gateway that comes back
# delivered, with its history. Each section is a function called from `main`.
# The environment stays up afterwards so you can look around; `make env-down` stops it
# (it calls `demo.sh stop` for the operator and gateway).
# Re-running is idempotent: the earlier demo operator and gateway are replaced.
STAGE=demo
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/smpp-gateway/target}
env_file=${SMPP_ENV_FILE:-$REPO_ROOT/target/env.sh}
demo_dir=$ENV_ROOT/demo
NS=messaging
DEADLINE=${DEMO_DEADLINE:-60}

section() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }
show() { echo "\$ $*"; "$@"; }
pretty_json() { if command -v jq >/dev/null; then jq .; else python3 -m json.tool; fi; }

# stop_demo NAME: stops the demo's smpp-NAME by its pidfile, only if the PID still runs that
# binary (a stale pidfile must not kill an unrelated process that reused the PID).
stop_demo() {
  local name=$1 file=$demo_dir/$1.pid pid
  [ -f "$file" ] || return 0
  pid=$(head -n1 "$file")
  if [[ "$pid" =~ ^[1-9][0-9]*$ ]] &&
    [ "$(basename "$(head -z -n1 "/proc/$pid/cmdline" 2>/dev/null | tr -d '\0')")" = "smpp-$name" ]; then
    stop_pid "demo smpp-$name" "$pid"
  fi
  rm -f "$file"
}

real_parts() {
  section "1. Real parts: Kubernetes control plane, PostgreSQL, Redis, SMSC simulator"
  "$E2E_SCRIPTS/prereqs.sh"
  ensure_pkg envsubst gettext-base
  "$E2E_SCRIPTS/env-up.sh"
  # shellcheck source=/dev/null
  source "$env_file"
}

how_to_reach() {
  section "2. How to reach each part (after: source $env_file)"
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
  echo "  system_id $SMSC_SYSTEM_ID, password in $env_file (SMSC_PASSWORD)"
  show curl -fsS "$SMSC_STATS_URL"
  echo
}

build_and_crd() {
  section "3. Build smpp-operator and smpp-gateway; install the CRD and RBAC"
  local blog=$demo_dir/build.log
  echo "\$ cargo build --bins -p smpp-operator -p smpp-gateway   (log: $blog)"
  cargo build --bins -p smpp-operator -p smpp-gateway >"$blog" 2>&1 ||
    die "cargo build of smpp-operator/smpp-gateway failed (last line: $(last_log_line "$blog"))"
  show kubectl apply --server-side --force-conflicts -f crds/smppvendor.yaml ||
    die "the apiserver refused crds/smppvendor.yaml (see kubectl's message above)"
  show kubectl wait --for=condition=Established crd/smppvendors.smpp.io --timeout="${DEADLINE}s" ||
    die "CRD smppvendors.smpp.io not Established within ${DEADLINE}s (kube-apiserver log: $ENV_ROOT/controlplane)"
  # rbac.yaml puts the operator's ServiceAccount in smpp-system; the namespace must exist first.
  kubectl create namespace smpp-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  show kubectl apply -f crds/rbac.yaml || die "the apiserver refused crds/rbac.yaml (see above)"
}

http_ok() { curl -fsS --max-time 2 "$1" >/dev/null; }

# The demo's API key, kept across runs: $demo_dir/api-keys (name:token, what the gateway's
# --api-keys-file reads) and $demo_dir/auth-header (the header curl sends with -H @file, so the
# token shows neither on screen nor in `ps`).
keys_file=$demo_dir/api-keys
auth_header=$demo_dir/auth-header
api_keys() {
  if [ ! -s "$keys_file" ] || [ ! -s "$auth_header" ]; then
    local token
    token=demo$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (
      umask 077
      printf '# make demo: name:token per line\ndemo:%s\n' "$token" >"$keys_file"
      printf 'Authorization: Bearer %s\n' "$token" >"$auth_header"
    )
  fi
}

start_services() {
  section "4. Start smpp-operator and smpp-gateway (logs in $demo_dir)"
  stop_demo operator
  stop_demo gateway
  local bin=$CARGO_TARGET_DIR/debug op_port gw_port
  op_port=$(free_port)
  gw_port=$(free_port)
  # The operator watches only the demo namespace, so tests sharing this environment keep
  # their own vendors to their own operators. DATABASE_URL and REDIS_URL (exported by the env
  # file) reach them through the environment, so no password shows in `ps`. The gateway sends
  # messages with REDIS_URL and the demo's API key (API_KEYS_FILE).
  : >"$demo_dir/operator.log"
  : >"$demo_dir/gateway.log"
  on_fail "stop_demo operator"
  spawn_daemon "$demo_dir/operator.pid" "$demo_dir/operator.log" \
    env RUST_LOG=info "$bin/smpp-operator" --pod-name demo-operator \
    --http-addr "127.0.0.1:$op_port" --watch-namespace "$NS" \
    --lease-namespace smpp-system --lease-name smpp-operator-demo
  on_fail "stop_demo gateway"
  api_keys
  spawn_daemon "$demo_dir/gateway.pid" "$demo_dir/gateway.log" \
    env RUST_LOG=info POD_NAME=demo-gateway REDIS_URL="$REDIS_URL" API_KEYS_FILE="$keys_file" \
    "$bin/smpp-gateway" --http-addr "127.0.0.1:$gw_port"
  OP_URL=http://127.0.0.1:$op_port
  GW_URL=http://127.0.0.1:$gw_port
  wait_until "smpp-operator /ready on $OP_URL" "$DEADLINE" "$(cat "$demo_dir/operator.pid")" \
    "$demo_dir/operator.log" http_ok "$OP_URL/ready"
  # The gateway's /ready stays 503 until a vendor is bound, so /health says it is up.
  wait_until "smpp-gateway /health on $GW_URL" "$DEADLINE" "$(cat "$demo_dir/gateway.pid")" \
    "$demo_dir/gateway.log" http_ok "$GW_URL/health"
  echo "smpp-operator: pid $(cat "$demo_dir/operator.pid"), $OP_URL (/health /ready /metrics)"
  echo "smpp-gateway:  pid $(cat "$demo_dir/gateway.pid"), $GW_URL (/health /ready /metrics /api/v1/vendors /api/v1/messages)"
  echo "               Redis $REDIS_URL, API keys $keys_file"
}

# Ready condition's message of one vendor (empty while there is none).
ready_message() {
  kubectl -n "$NS" get smppvendor "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}'
}
has_last_error() { [ -n "$(kubectl -n "$NS" get smppvendor "$1" -o jsonpath='{.status.lastError}')" ]; }

example_vendor() {
  section "5. The example vendor (examples/smppvendor.yaml): written to PostgreSQL, bind failure explained"
  # Server-side apply: client-side apply would copy the Secret's password into the
  # last-applied-configuration annotation.
  show kubectl apply --server-side -f examples/smppvendor-secret.yaml -f examples/smppvendor.yaml ||
    die "the apiserver refused examples/smppvendor*.yaml (see above)"
  show kubectl wait --for=condition=Synced -n "$NS" smppvendor/sinch-atlanta --timeout="${DEADLINE}s" ||
    die "sinch-atlanta not Synced within ${DEADLINE}s: $(kubectl -n "$NS" get smppvendor sinch-atlanta \
      -o jsonpath='{.status.conditions[?(@.type=="Synced")].message}') (operator log: $demo_dir/operator.log)"
  show psql "$DATABASE_URL" -c \
    "select id, instance_name, host, port, username, owner_namespace, owner_name from vendor_mgmt.service_providers where instance_name = '$NS.sinch-atlanta'"
  # smpp.example.net does not exist for this machine: the gateway reports why the bind fails.
  wait_until "sinch-atlanta status.lastError (the gateway's bind error)" "$DEADLINE" \
    "$(cat "$demo_dir/gateway.pid")" "$demo_dir/gateway.log" has_last_error sinch-atlanta
  show kubectl get smppvendors -n "$NS" sinch-atlanta
  local err
  err=$(kubectl -n "$NS" get smppvendor sinch-atlanta -o jsonpath='{.status.lastError}')
  echo "\$ kubectl get smppvendor -n $NS sinch-atlanta -o jsonpath='{.status.lastError}'"
  echo "$err"
  echo "Ready message: $(ready_message sinch-atlanta)"
  echo "-> Synced: the row is in PostgreSQL. Not bound, and REASON BindFailed with the gateway's"
  case $err in
    dns_*) echo "   classified error says why: the DNS lookup of smpp.example.net fails (a placeholder host)." ;;
    *) echo "   classified error above says why (smpp.example.net is a placeholder host)." ;;
  esac
  echo "   This is the diagnostics story: no gateway log reading needed to see why a bind fails."
}

# True when this run's gateway itself reports local-smsc bound (its own view, never stale).
gateway_bound() {
  curl -fsS --max-time 2 "$GW_URL/api/v1/vendors" | python3 -c '
import json, sys
vs = json.load(sys.stdin)["vendors"].values()
sys.exit(0 if any(v["vendor_name"] == sys.argv[1] and v["sessions_bound"] == 1 for v in vs) else 1)
' "$NS.local-smsc"
}

# True when kubectl shows local-smsc BOUND 1/1 READY True. On a rerun the status can still be
# the previous gateway's, so the new gateway must report the bind too.
bound_row() {
  local row
  gateway_bound || return 1
  row=$(kubectl -n "$NS" get smppvendors local-smsc --no-headers 2>/dev/null) || return 1
  # NAME HOST PORT TLS MODE BOUND READY ...
  [ "$(awk '{print $6 " " $7}' <<<"$row")" = "1/1 True" ]
}

local_vendor() {
  section "6. A vendor bound over TLS to the local SMSC simulator (examples/local-smsc.yaml)"
  SMSC_CA_B64=$(base64 -w0 "$SMSC_CA_FILE")
  export SMSC_CA_B64 SMSC_PASSWORD SMSC_SYSTEM_ID SMSC_TLS_PORT
  echo "\$ envsubst < examples/local-smsc.yaml | kubectl apply --server-side -f -   (ports and credentials from $env_file)"
  envsubst '${SMSC_PASSWORD} ${SMSC_CA_B64} ${SMSC_TLS_PORT} ${SMSC_SYSTEM_ID}' \
    <examples/local-smsc.yaml | kubectl apply --server-side -f - ||
    die "the apiserver refused examples/local-smsc.yaml after envsubst (see above)"
  local t0
  t0=$(date +%s%3N)
  wait_until "local-smsc BOUND 1/1 READY True (gateway log: $demo_dir/gateway.log)" "$DEADLINE" \
    "$(cat "$demo_dir/gateway.pid")" "$demo_dir/gateway.log" bound_row
  echo "(BOUND 1/1 READY True shown by kubectl $(($(date +%s%3N) - t0)) ms after the apply)"
  echo
  show kubectl get smppvendors -A
  echo
  echo "\$ curl -s $GW_URL/api/v1/vendors"
  curl -fsS "$GW_URL/api/v1/vendors" | pretty_json
  echo
  echo "\$ curl -s $SMSC_STATS_URL   (the simulator sees the bind of system_id $SMSC_SYSTEM_ID)"
  curl -fsS "$SMSC_STATS_URL" | pretty_json
}

# json_field FIELD: the top-level FIELD of the JSON on stdin ("" when absent).
json_field() {
  python3 -c 'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"
}

# api METHOD PATH [BODY [HEADER...]]: calls the gateway with the demo's key; prints the body,
# then the HTTP status on a line of its own. Fails only when the gateway cannot be reached.
api() {
  local method=$1 path=$2 body=${3:-}
  shift $(($# < 3 ? $# : 3))
  local args=(-sS --max-time 30 -X "$method" -H "@$auth_header" -w '\n%{http_code}')
  [ -z "$body" ] || args+=(-H 'Content-Type: application/json' -d "$body")
  for h in "$@"; do args+=(-H "$h"); done
  curl "${args[@]}" "$GW_URL$path"
}

send_message() {
  section "7. A message that comes back delivered"
  local body out code answer id msg status t0
  body='{"to":"+15551234567","from":"ACME","text":"Hello from make demo: 10 € off!","client_ref":"demo-1"}'
  # A fresh Idempotency-Key per run: a retry of this request (on any pod) would get the same answer.
  local idem
  idem=demo-$(date +%s%N)
  echo "\$ curl -X POST $GW_URL/api/v1/messages -H @$auth_header -H 'Idempotency-Key: $idem' \\"
  echo "    -H 'Content-Type: application/json' -d '$body'"
  t0=$(date +%s%3N)
  out=$(api POST /api/v1/messages "$body" "Idempotency-Key: $idem") ||
    die "step 7, submit: cannot reach the gateway at $GW_URL (gateway log: $demo_dir/gateway.log)"
  code=${out##*$'\n'}
  answer=${out%$'\n'*}
  [ "$code" = 201 ] ||
    die "step 7, submit: POST /api/v1/messages answered HTTP $code, not 201: $answer (gateway log: $demo_dir/gateway.log)"
  echo "HTTP $code ($(($(date +%s%3N) - t0)) ms: the vendor acknowledged every part)"
  pretty_json <<<"$answer"
  id=$(json_field id <<<"$answer")
  [ -n "$id" ] || die "step 7, submit: the 201 answer has no id: $answer"

  echo
  echo "Waiting for the delivery receipt (GET /api/v1/messages/$id, up to ${DEADLINE}s)"
  local end=$((SECONDS + DEADLINE))
  while :; do
    out=$(api GET "/api/v1/messages/$id") ||
      die "step 7, status: cannot reach the gateway at $GW_URL (gateway log: $demo_dir/gateway.log)"
    code=${out##*$'\n'}
    msg=${out%$'\n'*}
    [ "$code" = 200 ] ||
      die "step 7, status: GET /api/v1/messages/$id answered HTTP $code: $msg (gateway log: $demo_dir/gateway.log)"
    status=$(json_field status <<<"$msg")
    case $status in
      delivered) break ;;
      submitted) ;;
      *) die "step 7, status: message $id ended $status, not delivered: $msg" ;;
    esac
    [ $SECONDS -lt $end ] ||
      die "step 7, status: message $id still $status after ${DEADLINE}s, no delivery receipt (gateway log: $demo_dir/gateway.log, simulator: $SMSC_STATS_URL)"
    sleep 0.2
  done
  echo "(delivered $(($(date +%s%3N) - t0)) ms after the submit)"
  echo
  echo "\$ curl $GW_URL/api/v1/messages/$id -H @$auth_header"
  pretty_json <<<"$msg"
  echo "-> status delivered: the simulator's receipt (stat:DELIVRD) was correlated in Redis to the"
  echo "   message by its vendor message id; history shows each step."
}

look_around() {
  section "Done: look around"
  cat <<EOT
The environment stays up.  source $env_file   then:
  kubectl get smppvendors -A                  kubectl describe smppvendor -n $NS local-smsc
  kubectl get events -n $NS                   kubectl explain smppvendor.spec --recursive
  psql "\$DATABASE_URL" -c 'select id, instance_name, host, port from vendor_mgmt.service_providers'
  psql "\$DATABASE_URL" -c 'select * from vendor_mgmt.vendor_sessions'
  curl $GW_URL/api/v1/vendors   curl $GW_URL/ready   curl $GW_URL/metrics
  curl -H @$auth_header -d '{"to":"+15551234567","from":"ACME","text":"hi"}' $GW_URL/api/v1/messages
  curl -H @$auth_header $GW_URL/api/v1/messages/<id>
  curl $OP_URL/ready   curl $OP_URL/metrics   curl $SMSC_STATS_URL
  logs: $demo_dir/operator.log  $demo_dir/gateway.log
Try: kubectl -n $NS patch secret local-smsc-smpp -p '{"stringData":{"password":"wrongpw1"}}'
     and watch REASON in kubectl get smppvendors -n $NS -w
Stop everything (operator, gateway and the real parts): make env-down
EOT
}

main() {
  mkdir -p "$demo_dir"
  real_parts
  how_to_reach
  build_and_crd
  start_services
  example_vendor
  local_vendor
  send_message
  clear_fail_hooks
  look_around
}

case ${1:-} in
  stop)
    stop_demo gateway
    stop_demo operator
    ;;
  "") main ;;
  *) die "usage: demo.sh [stop]" ;;
esac
