#!/usr/bin/env bash
# Stops the simulator up.sh started from <state-dir>, by PID. Usage: down.sh <state-dir>
set -euo pipefail
state=${1:?usage: down.sh <state-dir>}
pidfile=$state/smsc.pid
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
# Running and not a zombie (an exited child of a slow-reaping init still answers kill -0).
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -c1)" != Z ]; }
# Only signal the process if it is still our simulator (the PID may have been reused).
if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "smsc.js"; then
  kill -TERM "$pid"
  for _ in $(seq 50); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    echo "smsc down: pid $pid ignored SIGTERM for 5s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
rm -f "$pidfile" "$state/ready.json"
