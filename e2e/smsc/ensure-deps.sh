#!/usr/bin/env bash
# Installs the simulator's npm packages with `npm ci` when node_modules is missing or was
# installed from a different package-lock.json. Safe to run concurrently (flock).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
command -v node >/dev/null || { echo "smsc: node not found (install Node.js >= 18, e.g. apt-get install nodejs npm)" >&2; exit 1; }
command -v npm >/dev/null || { echo "smsc: npm not found (apt-get install npm)" >&2; exit 1; }
want=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.package-lock.sha256
current() { cat "$stamp" 2>/dev/null || true; }
[ "$(current)" = "$want" ] && exit 0
exec 9>"$here/.npm-ci.lock"
flock 9
[ "$(current)" = "$want" ] && exit 0
echo "smsc: installing npm packages (npm ci)" >&2
log=$(mktemp)
if ! npm ci --no-audit --no-fund --loglevel=error >"$log" 2>&1; then
  echo "smsc: npm ci failed: $(grep -m1 -i 'err' "$log" || tail -n1 "$log") (registry reachable? full log: $log)" >&2
  exit 1
fi
rm -f "$log"
echo "$want" >"$stamp"
