#!/usr/bin/env bash
# Test PKI for the SMSC simulator. Usage: gen-pki.sh <dir>
#   ca.crt/ca.key                 test CA (clients verify the simulator against ca.crt)
#   server.crt/server.key         localhost + 127.0.0.1 (SAN), signed by the test CA
#   wrong-name.crt/wrong-name.key SAN only wrong.example, signed by the test CA (name-mismatch tests)
#   wrong-ca.crt/wrong-ca.key     an unrelated CA (verification-failure tests)
#   client.crt/client.key         client certificate signed by the test CA (mutual-TLS listeners)
# Idempotent: an existing, complete set that still verifies is left alone.
set -euo pipefail

dir=${1:?usage: gen-pki.sh <dir>}
command -v openssl >/dev/null || { echo "gen-pki: openssl not found (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
# Concurrent test processes share one PKI directory: one generates, the others wait and reuse it.
exec 9>.lock
flock 9

files=(ca.crt ca.key server.crt server.key wrong-name.crt wrong-name.key wrong-ca.crt wrong-ca.key client.crt client.key)
complete=1
for f in "${files[@]}"; do [[ -s $f ]] || complete=0; done
if ((complete)) && openssl verify -CAfile ca.crt server.crt wrong-name.crt client.crt >/dev/null 2>&1 \
  && openssl x509 -checkend 86400 -noout -in server.crt >/dev/null; then
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
days=3650

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

new_ca() { # <name> <cn>
  new_key "$tmp/$1.key"
  openssl req -x509 -new -key "$tmp/$1.key" -sha256 -days $days -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$tmp/$1.crt" 2>/dev/null
}

new_leaf() { # <name> <cn> <san> <eku>
  new_key "$tmp/$1.key"
  openssl req -new -key "$tmp/$1.key" -subj "/CN=$2" -out "$tmp/$1.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s' \
    "$4" "${3:+subjectAltName=$3}" >"$tmp/$1.ext"
  openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial \
    -sha256 -days $days -extfile "$tmp/$1.ext" -out "$tmp/$1.crt" 2>/dev/null
}

new_ca ca "smpp-e2e test CA"
new_ca wrong-ca "smpp-e2e unrelated CA"
new_leaf server localhost "DNS:localhost,IP:127.0.0.1" serverAuth
new_leaf wrong-name wrong.example "DNS:wrong.example" serverAuth
new_leaf client smppclient1 "" clientAuth

openssl verify -CAfile "$tmp/ca.crt" "$tmp/server.crt" "$tmp/wrong-name.crt" "$tmp/client.crt" >/dev/null \
  || { echo "gen-pki: generated certificates do not verify against the test CA" >&2; exit 1; }
for f in "${files[@]}"; do
  chmod 600 "$tmp/$f"
  mv -f "$tmp/$f" "$f"
done
chmod 644 ./*.crt
