#!/usr/bin/env bash
# Starts the SMSC simulator in the background for `make env-up`. Usage: up.sh <state-dir>
# stdout: only the `export SMSC_...=...` lines; progress and the one-line failure go to stderr.
# Idempotent: a simulator already running from <state-dir> is kept and its exports re-printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${1:?usage: up.sh <state-dir>}
mkdir -p "$state"
state=$(cd "$state" && pwd)
pidfile=$state/smsc.pid
ready=$state/ready.json
config=$state/config.json
logfile=$state/smsc.log
system_id=${SMSC_SYSTEM_ID:-smppclient1}
password=${SMSC_PASSWORD:-password}
deadline_s=${SMSC_START_TIMEOUT:-20}

fail() { echo "smsc up: FAILED: $*" >&2; exit 1; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null \
  && tr '\0' ' ' <"/proc/$(cat "$pidfile")/cmdline" 2>/dev/null | grep -q "smsc.js"; }

print_exports() {
  node -e '
    const r = require(process.argv[1]);
    const { system_id: id, password: pw } = require(process.argv[2]).credentials[0];
    const ca = process.argv[3];
    // Plain values stay unquoted (simple parsers read env.sh too); anything else is shell-quoted.
    const q = (s) => /^[A-Za-z0-9_.\/:@%+,-]+$/.test(s) ? s : "\x27" + String(s).replace(/\x27/g, "\x27\\\x27\x27") + "\x27";
    console.log(`export SMSC_HOST=${r.host}`);
    console.log(`export SMSC_PORT=${r.listeners.plain.port}`);
    console.log(`export SMSC_TLS_PORT=${r.listeners.tls.port}`);
    console.log(`export SMSC_CA_FILE=${q(ca)}`);
    console.log(`export SMSC_SYSTEM_ID=${q(id)}`);
    console.log(`export SMSC_PASSWORD=${q(pw)}`);
    console.log(`export SMSC_STATS_URL=http://${r.host}:${r.stats_port}/stats`);
  ' "$ready" "$config" "$state/pki/ca.crt"
}

if running && [ -f "$ready" ]; then
  echo "smsc up: already running (pid $(cat "$pidfile"))" >&2
  print_exports
  exit 0
fi

"$here/ensure-deps.sh" || fail "npm packages could not be installed (see the line above)"
"$here/gen-pki.sh" "$state/pki" || fail "could not generate the test PKI in $state/pki"

# The default environment: one plain and one TLS listener, normal behaviour.
umask 077
node -e '
  const [pki, id, pw] = process.argv.slice(1);
  console.log(JSON.stringify({
    credentials: [{ system_id: id, password: pw }],
    dlr_delay_ms: Number(process.env.SMSC_DLR_DELAY_MS || 200),
    stats_port: 0,
    listeners: [
      { name: "plain", port: Number(process.env.SMSC_PORT_WANTED || 0) },
      { name: "tls", port: Number(process.env.SMSC_TLS_PORT_WANTED || 0),
        tls: { cert: pki + "/server.crt", key: pki + "/server.key" } },
    ],
  }, null, 2));
' "$state/pki" "$system_id" "$password" >"$config"
umask 022

rm -f "$ready" "$pidfile"
echo "smsc up: starting the simulator (log: $logfile)" >&2
setsid node "$here/smsc.js" --config "$config" --ready-file "$ready" </dev/null >>"$logfile" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"

stop_it() { kill -TERM "$pid" 2>/dev/null || true; sleep 0.2; kill -KILL "$pid" 2>/dev/null || true; rm -f "$pidfile"; }
end=$((SECONDS + deadline_s))
until [ -f "$ready" ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$pidfile"
    fail "the simulator exited during start-up: $(grep 'smsc:' "$logfile" | tail -n1)"
  fi
  if [ $SECONDS -ge $end ]; then
    stop_it
    fail "the simulator was not ready within ${deadline_s}s (log: $logfile)"
  fi
  sleep 0.1
done
echo "smsc up: ready (pid $pid)" >&2
print_exports
