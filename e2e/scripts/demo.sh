#!/usr/bin/env bash
# `make demo`: the guided tour on a fresh machine. Brings up the real parts, installs the CRD
# from the Helm chart (charts/smpp-gateway), starts smpp-operator and smpp-gateway against
# them, applies examples/, shows `kubectl get smppvendors` bound over TLS to the local SMSC
# simulator, sends a message through the gateway that comes back delivered with its history,
# then breaks the vendor (a wrong password in its Secret), shows the reason in kubectl (row,
# lastError, Warning Event), heals it, then has a customer (examples/smppaccount*.yaml) bind
# to the gateway's SMPP server with Python smpplib, submit a message and get its delivery
# receipt back as deliver_sm, shows BOUND 1/4 in kubectl while it is bound, and prints where
# to look next and how to stop.
# Each section is a function called from `main`; a failure is one line naming its step
# ("demo step 8: FAILED: ...").
# The environment stays up afterwards so you can look around; `make env-down` stops it
# (it calls `demo.sh stop` for the operator and gateway). SMPP_ENV_DIR and SMPP_ENV_FILE
# (lib.sh, env-up.sh) put the whole environment elsewhere.
# Re-running is idempotent: the earlier demo operator and gateway are replaced.
STAGE=demo
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$("$E2E_SCRIPTS/cargo-target-dir.sh")}
export CARGO_TARGET_DIR
env_file=${SMPP_ENV_FILE:-$REPO_ROOT/target/env.sh}
demo_dir=$ENV_ROOT/demo
NS=messaging
DEADLINE=${DEMO_DEADLINE:-60}

# section N TITLE: the heading; from here on a failure names step N.
section() {
  STAGE="demo step $1"
  printf '\n\033[1m== %s. %s ==\033[0m\n' "$1" "$2"
}
# show CMD...: prints CMD as a line a shell runs as is (arguments with spaces, quotes, braces
# or $ in single quotes), then runs it.
show() { echo "\$ $(shell_line "$@")"; "$@"; }
shell_line() {
  local words=() a q="'"
  for a in "$@"; do
    if [[ $a =~ ^[-A-Za-z0-9_./:=@%+,]+$ ]]; then
      words+=("$a")
    else
      words+=("$q${a//$q/$q\\$q$q}$q")
    fi
  done
  echo "${words[*]}"
}
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
  section 1 "Real parts: Kubernetes control plane, PostgreSQL, Redis, SMSC simulator"
  # Each ends a failure with its own one line ("env-up/redis: FAILED: ...").
  "$E2E_SCRIPTS/prereqs.sh"
  ensure_pkg envsubst gettext-base
  "$E2E_SCRIPTS/env-up.sh"
  # shellcheck source=/dev/null
  source "$env_file"
}

how_to_reach() {
  section 2 "How to reach each part (after: source $env_file)"
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

# The CRDs as the Helm chart installs them (templates/crds.yaml renders files/crds/, the chart's
# copy of crds/): what `helm install` gives a user, without the Deployments, which need a
# kubelet this machine does not have. The chart requires database.secretName; only the CRDs
# are rendered, so any name does.
chart_crds=(helm template smpp charts/smpp-gateway --show-only templates/crds.yaml --set database.secretName=unused)

build_and_crd() {
  section 3 "Build smpp-operator and smpp-gateway; install the CRDs from the Helm chart"
  local blog=$demo_dir/build.log crds
  echo "\$ cargo build --bins -p smpp-operator -p smpp-gateway   (log: $blog)"
  cargo build --bins -p smpp-operator -p smpp-gateway >"$blog" 2>&1 ||
    die "cargo build of smpp-operator/smpp-gateway failed (last line: $(last_log_line "$blog"))"
  echo "\$ ${chart_crds[*]} \\"
  echo "    | kubectl apply --server-side --force-conflicts -f -"
  crds=$("${chart_crds[@]}" 2>&1) ||
    die "helm template of charts/smpp-gateway failed: $(tail -n1 <<<"$crds")"
  kubectl apply --server-side --force-conflicts -f - <<<"$crds" ||
    die "the apiserver refused the chart's CRD (see kubectl's message above)"
  show kubectl wait --for=condition=Established crd/smppvendors.smpp.io crd/smppaccounts.smpp.io --timeout="${DEADLINE}s" ||
    die "CRDs smppvendors.smpp.io, smppaccounts.smpp.io not Established within ${DEADLINE}s (kube-apiserver log: $ENV_ROOT/controlplane)"
  show kubectl get crd smppvendors.smpp.io smppaccounts.smpp.io -L app.kubernetes.io/part-of,helm.sh/chart
  # The demo operator runs with the environment's admin kubeconfig (the chart's RBAC is for
  # its pods); its leader Lease lives in smpp-system, which must exist.
  kubectl create namespace smpp-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null ||
    die "cannot create namespace smpp-system (see above)"
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
  section 4 "Start smpp-operator and smpp-gateway (logs in $demo_dir)"
  stop_demo operator
  stop_demo gateway
  local bin=$CARGO_TARGET_DIR/debug op_port gw_port
  op_port=$(free_port)
  gw_port=$(free_port)
  SMPP_PORT=$(free_port)
  # The operator watches only the demo namespace, so tests sharing this environment keep
  # their own vendors to their own operators. DATABASE_URL and REDIS_URL (exported by the env
  # file) reach them through the environment, so no password shows in `ps`. The gateway sends
  # messages with REDIS_URL and the demo's API key (API_KEYS_FILE), and runs the SMPP server
  # for customers on a loopback port (--smpp-addr; the chart sets 0.0.0.0:2775).
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
    "$bin/smpp-gateway" --http-addr "127.0.0.1:$gw_port" --smpp-addr "127.0.0.1:$SMPP_PORT"
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
  echo "               SMPP server for customers: 127.0.0.1:$SMPP_PORT (--smpp-addr)"
}

# Ready condition's message of one vendor (empty while there is none).
ready_message() {
  kubectl -n "$NS" get smppvendor "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}'
}
has_last_error() { [ -n "$(kubectl -n "$NS" get smppvendor "$1" -o jsonpath='{.status.lastError}')" ]; }

example_vendor() {
  section 5 "The example vendor (examples/smppvendor.yaml): written to PostgreSQL, bind failure explained"
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
  section 6 "A vendor bound over TLS to the local SMSC simulator (examples/local-smsc.yaml)"
  # env.sh exports SMSC_CA_B64 (env-up.sh); an env.sh from before it did lacks it.
  [ -n "${SMSC_CA_B64:-}" ] || SMSC_CA_B64=$(base64 -w0 "$SMSC_CA_FILE") ||
    die "cannot read the simulator's CA $SMSC_CA_FILE"
  export SMSC_CA_B64
  # What the file's header tells a person to run, with the env file of this environment.
  echo "\$ source $env_file && envsubst < examples/local-smsc.yaml | kubectl apply --server-side -f -"
  envsubst <examples/local-smsc.yaml | kubectl apply --server-side --force-conflicts -f - ||
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
  section 7 "A message that comes back delivered"
  local body out code answer id msg status t0
  body='{"to":"+15551234567","from":"ACME","text":"Hello from make demo: 10 € off!","client_ref":"demo-1"}'
  # A fresh Idempotency-Key per run: a retry of this request (on any pod) would get the same answer.
  local idem
  idem=demo-$(date +%s%N)
  echo "\$ curl -X POST $GW_URL/api/v1/messages -H @$auth_header -H 'Idempotency-Key: $idem' \\"
  echo "    -H 'Content-Type: application/json' -d '$body'"
  t0=$(date +%s%3N)
  out=$(api POST /api/v1/messages "$body" "Idempotency-Key: $idem") ||
    die "submit: cannot reach the gateway at $GW_URL (gateway log: $demo_dir/gateway.log)"
  code=${out##*$'\n'}
  answer=${out%$'\n'*}
  [ "$code" = 201 ] ||
    die "submit: POST /api/v1/messages answered HTTP $code, not 201: $answer (gateway log: $demo_dir/gateway.log)"
  echo "HTTP $code ($(($(date +%s%3N) - t0)) ms: the vendor acknowledged every part)"
  pretty_json <<<"$answer"
  id=$(json_field id <<<"$answer")
  [ -n "$id" ] || die "submit: the 201 answer has no id: $answer"

  echo
  echo "Waiting for the delivery receipt (GET /api/v1/messages/$id, up to ${DEADLINE}s)"
  local end=$((SECONDS + DEADLINE))
  while :; do
    out=$(api GET "/api/v1/messages/$id") ||
      die "status: cannot reach the gateway at $GW_URL (gateway log: $demo_dir/gateway.log)"
    code=${out##*$'\n'}
    msg=${out%$'\n'*}
    [ "$code" = 200 ] ||
      die "status: GET /api/v1/messages/$id answered HTTP $code: $msg (gateway log: $demo_dir/gateway.log)"
    status=$(json_field status <<<"$msg")
    case $status in
      delivered) break ;;
      submitted) ;;
      *) die "status: message $id ended $status, not delivered: $msg" ;;
    esac
    [ $SECONDS -lt $end ] ||
      die "status: message $id still $status after ${DEADLINE}s, no delivery receipt (gateway log: $demo_dir/gateway.log, simulator: $SMSC_STATS_URL)"
    sleep 0.2
  done
  echo "(delivered $(($(date +%s%3N) - t0)) ms after the submit)"
  echo
  echo "\$ curl $GW_URL/api/v1/messages/$id -H @$auth_header"
  pretty_json <<<"$msg"
  echo "-> status delivered: the simulator's receipt (stat:DELIVRD) was correlated in Redis to the"
  echo "   message by its vendor message id; history shows each step."
}

# The vendor the tour breaks and heals, and its password Secret.
VENDOR=local-smsc
SECRET=local-smsc-smpp
# set_password PASSWORD: server-side applies the Secret with PASSWORD, given on stdin (never
# on a command line, so not in `ps`; server-side apply keeps it out of the
# last-applied-configuration annotation). Quiet: prints only kubectl's one-line result.
set_password() {
  printf '%s' "$1" |
    kubectl create secret generic "$SECRET" -n "$NS" --from-file=password=/dev/stdin \
      --dry-run=client -o yaml |
    kubectl apply --server-side --force-conflicts -f -
}
set_password_shown() {
  echo "\$ printf %s \"\$$2\" | kubectl create secret generic $SECRET -n $NS --from-file=password=/dev/stdin \\"
  echo "    --dry-run=client -o yaml | kubectl apply --server-side --force-conflicts -f -   ($3)"
  set_password "$1" || die "the apiserver refused Secret $NS/$SECRET (see above)"
}

# The vendor's row: READY and REASON columns ("False BindFailed").
ready_reason() {
  kubectl -n "$NS" get smppvendors "$VENDOR" --no-headers 2>/dev/null | awk '{print $7 " " $8}'
}
broken_row() { [ "$(ready_reason)" = "False BindFailed" ]; }

# Events about the vendor: event_names TYPE [REASON] lists their names (sorted);
# new_event TYPE FILE [REASON] is true once one exists that FILE (an earlier list) lacks.
event_selector() {
  echo "type=$1,involvedObject.name=$VENDOR${2:+,reason=$2}"
}
event_names() {
  kubectl -n "$NS" get events --field-selector "$(event_selector "$@")" \
    -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort
}
new_event() {
  local type=$1 before=$2
  shift 2
  [ -n "$(comm -13 "$before" <(event_names "$type" "$@"))" ]
}
# show_new_events FILE TYPE [REASON]: kubectl's table of those Events, the header and the rows
# of the ones FILE (an earlier list) lacks, which are the newest.
show_new_events() {
  local before=$1 n
  shift
  n=$(comm -13 "$before" <(event_names "$@") | wc -l)
  echo "\$ kubectl get events -n $NS --field-selector $(event_selector "$@") --sort-by=.metadata.creationTimestamp"
  kubectl -n "$NS" get events --field-selector "$(event_selector "$@")" \
    --sort-by=.metadata.creationTimestamp | { IFS= read -r header && echo "$header" && tail -n "$n"; }
  [ "$n" -le 1 ] || echo "($n new since the Secret changed, oldest first)"
}

# wait_vendor WHAT CMD...: polls CMD for up to DEADLINE seconds; on timeout one line says what
# kubectl shows instead.
wait_vendor() {
  local what=$1 end=$((SECONDS + DEADLINE)) pid
  shift
  pid=$(cat "$demo_dir/gateway.pid")
  until "$@" >/dev/null 2>&1; do
    pid_alive "$pid" || die "smpp-gateway exited while waiting for $VENDOR $what (last log line: $(last_log_line "$demo_dir/gateway.log"))"
    [ $SECONDS -lt $end ] ||
      die "$VENDOR not $what within ${DEADLINE}s: kubectl shows READY/REASON '$(ready_reason)', lastError '$(kubectl -n "$NS" get smppvendor "$VENDOR" -o jsonpath='{.status.lastError}' 2>/dev/null)' (gateway log: $demo_dir/gateway.log)"
    sleep 0.2
  done
}

break_vendor() {
  section 8 "Break a vendor: a wrong bind password in $VENDOR's Secret"
  local before=$demo_dir/events.before wrong t0 err
  event_names Warning >"$before" || die "cannot list Events in $NS"
  # 8 characters, like the right one may be (SMPP 3.4's limit); never printed.
  wrong=wr$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
  [ "$wrong" != "$SMSC_PASSWORD" ] || wrong=wr000000
  # If the tour stops from here on, the right password goes back (hooks run last-in first).
  on_fail 'set_password "$SMSC_PASSWORD"'
  t0=$(date +%s%3N)
  set_password_shown "$wrong" WRONG_PASSWORD "a wrong password; not shown"
  wait_vendor "READY False REASON BindFailed after the wrong password" broken_row
  echo "(READY False, REASON BindFailed shown by kubectl $(($(date +%s%3N) - t0)) ms after the apply)"
  wait_until "a new Warning Event BindFailed for $VENDOR (operator log: $demo_dir/operator.log)" \
    "$DEADLINE" "$(cat "$demo_dir/operator.pid")" "$demo_dir/operator.log" new_event Warning "$before" BindFailed
  echo
  show kubectl get smppvendors -n "$NS" "$VENDOR"
  echo
  err=$(kubectl -n "$NS" get smppvendor "$VENDOR" -o jsonpath='{.status.lastError}')
  echo "\$ kubectl get smppvendor -n $NS $VENDOR -o jsonpath='{.status.lastError}'"
  echo "$err"
  echo
  show_new_events "$before" Warning
  echo "-> The reason is in kubectl: REASON BindFailed, and lastError names the bind_resp status the"
  case $err in
    *esme_rinvpaswd* | *ESME_RINVPASWD*) echo "   simulator answered (ESME_RINVPASWD: wrong password)." ;;
    *) echo "   simulator answered." ;;
  esac
  echo "   docs/troubleshooting.md, \"bind_resp error status\", says what to do about each code."
}

heal_vendor() {
  section 9 "Heal it: the right password back"
  local before=$demo_dir/events.before t0
  event_names Normal Ready >"$before" || die "cannot list Events in $NS"
  t0=$(date +%s%3N)
  set_password_shown "$SMSC_PASSWORD" SMSC_PASSWORD "the right one, from $env_file"
  wait_vendor "BOUND 1/1 READY True again after the right password" bound_row
  echo "(BOUND 1/1 READY True again $(($(date +%s%3N) - t0)) ms after the apply)"
  wait_until "a new Normal Ready Event for $VENDOR (operator log: $demo_dir/operator.log)" \
    "$DEADLINE" "$(cat "$demo_dir/operator.pid")" "$demo_dir/operator.log" new_event Normal "$before" Ready
  echo
  show kubectl get smppvendors -n "$NS" "$VENDOR"
  echo
  show_new_events "$before" Normal Ready
  rm -f "$before"
}

# The customer the tour binds over SMPP (examples/smppaccount.yaml) and its password Secret.
ACCOUNT=acme
ACCOUNT_SECRET=acme-smpp
# What the example needs on this machine: binds from loopback, and messages to local-smsc.
ACCOUNT_PATCH='{"spec":{"allowedSourceCidrs":["127.0.0.0/8"],"route":{"vendors":[{"vendor":"messaging.local-smsc","priority":10}]}}}'

# The account's row: BOUND and READY columns ("1/4 True").
account_bound_ready() {
  kubectl -n "$NS" get smppaccounts "$ACCOUNT" --no-headers 2>/dev/null | awk '{print $3 " " $4}'
}
account_shows() { [ "$(account_bound_ready)" = "$1" ]; }

# wait_account WHAT CMD...: polls CMD for up to DEADLINE seconds; on timeout one line says what
# kubectl shows instead.
wait_account() {
  local what=$1 end=$((SECONDS + DEADLINE))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] ||
      die "$ACCOUNT not $what within ${DEADLINE}s: kubectl shows BOUND/READY '$(account_bound_ready)' (operator log: $demo_dir/operator.log, gateway log: $demo_dir/gateway.log)"
    sleep 0.2
  done
}

customer() {
  section 10 "A customer over SMPP (examples/smppaccount*.yaml): bound with Python smpplib, its receipt back"
  show kubectl apply --server-side --force-conflicts -f examples/smppaccount-secret.yaml -f examples/smppaccount.yaml ||
    die "the apiserver refused examples/smppaccount*.yaml (see above)"
  echo "The example admits binds from 203.0.113.0/24 and 2001:db8:5::/48 and routes to placeholder"
  echo "vendors; on this machine the customer binds from 127.0.0.1 and its messages go to local-smsc:"
  show kubectl patch smppaccount "$ACCOUNT" -n "$NS" --type merge -p "$ACCOUNT_PATCH" ||
    die "the apiserver refused the patch of smppaccount $ACCOUNT (see above)"
  local gen
  gen=$(kubectl -n "$NS" get smppaccount "$ACCOUNT" -o jsonpath='{.metadata.generation}') ||
    die "cannot read smppaccount $ACCOUNT"
  show kubectl wait --for=jsonpath='{.status.observedGeneration}'="$gen" -n "$NS" smppaccount/"$ACCOUNT" --timeout="${DEADLINE}s" ||
    die "$ACCOUNT's patch not reconciled within ${DEADLINE}s (operator log: $demo_dir/operator.log)"
  wait_account "READY True" account_shows "0/4 True"
  show kubectl get smppaccounts -n "$NS"
  echo "-> READY True: the operator wrote the account to PostgreSQL with only an argon2id hash of the"
  echo "   Secret's password; the gateway reloads it with no restart:"
  show psql "$DATABASE_URL" -c \
    "select system_id, left(password_hash, 10) || '...' as password_hash, allowed_cidrs, max_binds, route from vendor_mgmt.customer_accounts where system_id = '$ACCOUNT'"
  echo

  # The customer: demo-customer.py binds, submits with registered_delivery, prints the
  # submit_sm_resp id and the deliver_sm receipt, then holds the bind until a line arrives on
  # its stdin (a fifo), so kubectl can show it bound.
  local out=$demo_dir/customer.out fifo=$demo_dir/customer.in pid hold shown pw
  pw=$(kubectl -n "$NS" get secret "$ACCOUNT_SECRET" -o jsonpath='{.data.password}' | base64 -d) ||
    die "cannot read the password of Secret $NS/$ACCOUNT_SECRET"
  echo "\$ SMPP_PASSWORD=\$(kubectl -n $NS get secret $ACCOUNT_SECRET -o jsonpath='{.data.password}' | base64 -d) \\"
  echo "    python3 e2e/scripts/demo-customer.py 127.0.0.1 $SMPP_PORT $ACCOUNT --hold"
  rm -f "$fifo"
  mkfifo "$fifo"
  : >"$out"
  local t0
  t0=$(date +%s%3N)
  SMPP_PASSWORD=$pw python3 -u e2e/scripts/demo-customer.py 127.0.0.1 "$SMPP_PORT" "$ACCOUNT" --hold \
    <"$fifo" >"$out" 2>&1 &
  pid=$!
  exec {hold}>"$fifo"
  on_fail "kill $pid"
  local end=$((SECONDS + DEADLINE + 10))
  until grep -q '^bound, holding' "$out"; do
    if ! pid_alive "$pid"; then
      cat "$out"
      wait "$pid" || die "the customer (Python smpplib) failed with exit status $? (its output above; gateway log: $demo_dir/gateway.log)"
      die "the customer (Python smpplib) exited before holding its bind (its output above)"
    fi
    [ $SECONDS -lt $end ] || { cat "$out"; die "the customer got no receipt within ${DEADLINE}s (its output above; gateway log: $demo_dir/gateway.log)"; }
    sleep 0.2
  done
  cat "$out"
  echo "(bound, submitted and the receipt back $(($(date +%s%3N) - t0)) ms after the customer started)"
  shown=$(wc -l <"$out")
  wait_account "BOUND 1/4 while the customer is bound" account_shows "1/4 True"
  echo
  show kubectl get smppaccounts -n "$NS"
  show kubectl get smppaccount "$ACCOUNT" -n "$NS" -o jsonpath='{range .status.sessions[*]}{.pod} {.bindType} {.remoteAddr}{"\n"}{end}'
  echo
  echo "(Enter to the customer: it unbinds)"
  echo >&"$hold"
  exec {hold}>&-
  local rc=0
  wait "$pid" || rc=$?
  tail -n +"$((shown + 1))" "$out"
  [ "$rc" = 0 ] || die "the customer (Python smpplib) failed with exit status $rc (its output above; gateway log: $demo_dir/gateway.log)"
  rm -f "$fifo"
  wait_account "BOUND 0/4 after the unbind" account_shows "0/4 True"
  show kubectl get smppaccounts -n "$NS"
  echo "-> The customer's message went out through local-smsc; the simulator's receipt came back to it"
  echo "   as deliver_sm (stat:DELIVRD, receipted_message_id = the submit_sm_resp id). Receipts for an"
  echo "   unbound customer wait in its outbox in Redis. docs/customers.md: binding, limits, error codes."
}

look_around() {
  section 11 "Where to look next"
  cat <<EOT
The environment stays up.  source $env_file   then:
  kubectl get smppvendors -A          kubectl describe smppvendor -n $NS $VENDOR
  kubectl get smppaccounts -A         kubectl describe smppaccount -n $NS $ACCOUNT
  kubectl get events -n $NS     kubectl explain smppvendor.spec --recursive
  psql "\$DATABASE_URL" -c 'select id, instance_name, host, port from vendor_mgmt.service_providers'
  psql "\$DATABASE_URL" -c 'select * from vendor_mgmt.vendor_sessions'
  curl $GW_URL/api/v1/vendors     (the gateway's own view of each vendor and session)
  curl $GW_URL/metrics            curl $OP_URL/metrics     (Prometheus metrics)
  curl $GW_URL/ready              curl $OP_URL/ready       curl $SMSC_STATS_URL
  curl -H @$auth_header -d '{"to":"+15551234567","from":"ACME","text":"hi"}' $GW_URL/api/v1/messages
  curl -H @$auth_header $GW_URL/api/v1/messages/<id>
  SMPP_PASSWORD=\$(kubectl -n $NS get secret $ACCOUNT_SECRET -o jsonpath='{.data.password}' | base64 -d) \\
    python3 e2e/scripts/demo-customer.py 127.0.0.1 $SMPP_PORT $ACCOUNT   (a customer over SMPP; --hold to stay bound)
  logs: $demo_dir/operator.log  $demo_dir/gateway.log
Docs:
  docs/troubleshooting.md         every bind failure code and alert, and what to do
  docs/operator.md                the SmppVendor resource, its conditions and Events
  docs/smppaccount.md             the SmppAccount resource (customers)
  docs/customers.md               for customers: binding over SMPP, limits, error codes
  docs/observability.md           metrics, the Grafana dashboard deploy/grafana/smpp-gateway.json,
                                  the alerts deploy/prometheus/alerts.yaml
  docs/openapi.yaml               the HTTP API
  charts/smpp-gateway, README.md  install on a real cluster: helm install -f examples/helm-values.yaml
Break it yourself: kubectl -n $NS patch secret $SECRET -p '{"stringData":{"password":"wrongpw1"}}'
  and watch REASON in: kubectl get smppvendors -n $NS -w   (make demo puts the right one back)
Stop everything (operator, gateway and the real parts): make env-down
EOT
  echo "(the tour took $((SECONDS - tour_start)) s)"
}

main() {
  tour_start=$SECONDS
  mkdir -p "$demo_dir"
  real_parts
  how_to_reach
  build_and_crd
  start_services
  example_vendor
  local_vendor
  send_message
  break_vendor
  heal_vendor
  customer
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
