#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver, no controller-manager) on loopback.
#
#   controlplane.sh up DIR      build (cached), start; writes DIR/kubeconfig; prints `export KUBECONFIG=...`
#   controlplane.sh down DIR    stop by PID, apiserver first
#   controlplane.sh status DIR  exit 0 when /readyz answers ok
#
# Port overrides: ETCD_PORT, APISERVER_PORT. Certificates (CA, apiserver serving cert, admin
# client cert CN=admin O=system:masters, service-account key pair) are generated into DIR/pki.
# Without kube-controller-manager namespaces can be created but not deleted cleanly, so tests
# use unique namespaces.
STAGE=controlplane
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

ETCD_DEADLINE=${ETCD_DEADLINE:-60}
APISERVER_DEADLINE=${APISERVER_DEADLINE:-180}
BIN=${CONTROLPLANE_BIN:-$REPO_ROOT/e2e/.bin}

cmd=${1:-}
dir=${2:-$ENV_ROOT/controlplane}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pki=$dir/pki
kubeconfig=$(realpath -m "${KUBECONFIG_OUT:-$dir/kubeconfig}")

named_pid() { # NAME PIDFILE: the PID, only while it still runs NAME
  local pid
  pid=$(cat "$2" 2>/dev/null) || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

readyz() {
  [ "$(curl -sS --max-time 3 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$(cat "$dir/apiserver.port")/readyz" 2>/dev/null)" = ok ]
}

etcd_health() {
  curl -sS --max-time 3 "http://127.0.0.1:$1/health" 2>/dev/null | grep -q '"health":"true"'
}

healthy() {
  [ -f "$dir/apiserver.port" ] && [ -f "$kubeconfig" ] &&
    pid_alive "$(named_pid etcd "$dir/etcd.pid" || true)" &&
    pid_alive "$(named_pid kube-apiserver "$dir/apiserver.pid" || true)" && readyz
}

stop() {
  local pid
  pid=$(named_pid kube-apiserver "$dir/apiserver.pid" || true)
  [ -n "$pid" ] && stop_pid kube-apiserver "$pid"
  pid=$(named_pid etcd "$dir/etcd.pid" || true)
  [ -n "$pid" ] && stop_pid etcd "$pid"
  rm -f "$dir/apiserver.pid" "$dir/etcd.pid"
}

# sign NAME SUBJECT EXTENSIONS: an EC key and a certificate signed by the test CA.
sign() {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$pki/$1.key" -subj "$2" -out "$pki/$1.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -out "$pki/$1.crt" -extfile <(printf '%s\n' "$3") 2>/dev/null
  rm -f "$pki/$1.csr"
}

gen_pki() {
  [ -f "$pki/admin.crt" ] && [ -f "$pki/sa.pub" ] && return 0
  log "generating certificates in $pki"
  rm -rf "$pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  {
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 3650 -subj "/CN=smpp-e2e-kubernetes-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null &&
      sign apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
        'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1' \
        'extendedKeyUsage=serverAuth' 'keyUsage=critical,digitalSignature,keyEncipherment')" &&
      sign admin "/O=system:masters/CN=admin" \
        "$(printf '%s\n' 'extendedKeyUsage=clientAuth' 'keyUsage=critical,digitalSignature,keyEncipherment')" &&
      openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null &&
      openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  } || die "openssl failed to generate the control-plane certificates in $pki"
}

write_kubeconfig() {
  local port=$1 tmp=$kubeconfig.tmp
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smpp-e2e
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 <"$pki/admin.crt")
    client-key-data: $(base64 -w0 <"$pki/admin.key")
contexts:
- name: smpp-e2e
  context: {cluster: smpp-e2e, user: admin, namespace: default}
current-context: smpp-e2e
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$kubeconfig"
}

up() {
  if healthy; then
    log "already running on https://127.0.0.1:$(cat "$dir/apiserver.port")"
    echo "export KUBECONFIG=$kubeconfig"
    return 0
  fi
  command -v openssl >/dev/null || ensure_pkg openssl openssl
  command -v curl >/dev/null || ensure_pkg curl curl
  # Progress of the (cached) Go build goes to stderr; its failure line is the one that matters.
  "$REPO_ROOT/e2e/controlplane/build.sh" >&2 ||
    die "building kube-apiserver/etcd/kubectl/helm failed (go build; see the output above)"
  stop
  gen_pki
  local etcd_port peer_port api_port
  etcd_port=$(pick_port ETCD_PORT "$dir/etcd.port" "etcd")
  peer_port=$(free_port)
  api_port=$(pick_port APISERVER_PORT "$dir/apiserver.port" "kube-apiserver")
  on_fail stop

  # etcd holds only test data: start it fresh each time.
  rm -rf "$dir/etcd-data"
  log "starting etcd on 127.0.0.1:$etcd_port"
  : >"$dir/etcd.log"
  spawn_daemon "$dir/etcd.pid" "$dir/etcd.log" "$BIN/etcd" --name e2e --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn
  wait_until "etcd on 127.0.0.1:$etcd_port" "$ETCD_DEADLINE" "$(cat "$dir/etcd.pid")" "$dir/etcd.log" \
    etcd_health "$etcd_port"

  log "starting kube-apiserver on https://127.0.0.1:$api_port"
  : >"$dir/apiserver.log"
  spawn_daemon "$dir/apiserver.pid" "$dir/apiserver.log" "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --secure-port "$api_port" --cert-dir "$dir/certs" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode RBAC \
    --service-cluster-ip-range 10.0.0.0/24 --service-account-issuer "https://127.0.0.1:$api_port/" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --disable-admission-plugins ServiceAccount --endpoint-reconciler-type none --profiling=false --v=1
  wait_until "kube-apiserver on 127.0.0.1:$api_port" "$APISERVER_DEADLINE" "$(cat "$dir/apiserver.pid")" \
    "$dir/apiserver.log" readyz
  write_kubeconfig "$api_port"
  "$BIN/kubectl" --kubeconfig "$kubeconfig" get --raw /version >/dev/null 2>&1 ||
    die "kubectl cannot reach the apiserver with $kubeconfig"
  clear_fail_hooks
  log "ready: https://127.0.0.1:$api_port (kubeconfig $kubeconfig)"
  echo "export KUBECONFIG=$kubeconfig"
}

case "$cmd" in
  up) up ;;
  down) stop ;;
  status) healthy ;;
  *) die "usage: $0 up|down|status [DIR]" ;;
esac
