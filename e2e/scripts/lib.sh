# shellcheck shell=bash
# Shared helpers for the real-parts scripts. Source it; it sets `set -euo pipefail`.
#
# Conventions:
# - Progress goes to stderr; only `export NAME=value` lines go to stdout, so callers can
#   collect them (`eval "$(postgres.sh up DIR)"`).
# - Every failure ends with ONE line on stderr: "<stage>: <reason>" (see `die`).
# - A script that spawns a server registers its stop function with `on_fail`; if the script
#   then fails, the EXIT trap runs it, so no half-started server stays behind.
set -euo pipefail

E2E_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_SCRIPTS/../.." && pwd)
ENV_ROOT=${SMPP_ENV_DIR:-$REPO_ROOT/target/env}
STAGE=${STAGE:-env}

log() { echo "$STAGE: $*" >&2; }

# The one-line failure. Also used by the EXIT trap to clean up.
die() {
  echo "$STAGE: FAILED: $*" >&2
  exit 1
}

_fail_hooks=()
on_fail() { _fail_hooks+=("$*"); }
clear_fail_hooks() { _fail_hooks=(); }
_run_fail_hooks() {
  local rc=$?
  if [ $rc -ne 0 ] && [ ${#_fail_hooks[@]} -gt 0 ]; then
    local i
    for ((i = ${#_fail_hooks[@]} - 1; i >= 0; i--)); do
      eval "${_fail_hooks[$i]}" >/dev/null 2>&1 || true
    done
  fi
  exit $rc
}
trap _run_fail_hooks EXIT

# True when something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Dies when $1 is taken; $2 names what wanted it.
require_free_port() {
  if port_in_use "$1" || ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; then
    die "port $1 for $2 is already in use on 127.0.0.1 (stop whatever listens there, or pick another port)"
  fi
}

# Prints a free loopback port from the ephemeral-free range 20000-32767, avoiding ports that
# this shell already handed out (two servers started back to back could otherwise collide).
_handed_out=" "
free_port() {
  local p tries=0
  while [ $tries -lt 200 ]; do
    p=$((20000 + RANDOM % 12768))
    tries=$((tries + 1))
    case "$_handed_out" in *" $p "*) continue ;; esac
    if ! port_in_use "$p" && ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
      _handed_out+="$p "
      echo "$p"
      return 0
    fi
  done
  die "no free loopback port found in 20000-32767 after 200 tries"
}

# Port to use: the override in variable $1 if set (checked free), else the one remembered in
# file $2 (a restart on the same data dir keeps its port), else a fresh free one.
pick_port() {
  local var=$1 file=$2 what=$3 p
  p=${!var:-}
  if [ -z "$p" ] && [ -f "$file" ]; then p=$(cat "$file"); fi
  if [ -n "$p" ]; then
    require_free_port "$p" "$what"
  else
    p=$(free_port)
  fi
  echo "$p" >"$file"
  echo "$p"
}

# apt-get update at most once per run (marker shared with child scripts via the environment).
_apt_update_once() {
  if [ -z "${SMPP_APT_UPDATED:-}" ]; then
    log "apt-get update"
    if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$ENV_ROOT/apt.log" 2>&1; then
      die "apt-get update failed (no network to Debian's mirrors? see $ENV_ROOT/apt.log)"
    fi
    export SMPP_APT_UPDATED=1
  fi
}

# ensure_pkg COMMAND-PATH PACKAGE: installs the Debian package when the command is missing.
# Services are kept from auto-starting (policy-rc.d), so the install leaves no daemon running.
ensure_pkg() {
  local cmd=$1 pkg=$2
  [ -x "$cmd" ] || command -v "$cmd" >/dev/null 2>&1 && return 0
  mkdir -p "$ENV_ROOT"
  [ "$(id -u)" = 0 ] || die "$cmd is missing and installing $pkg needs root (run: sudo apt-get install $pkg)"
  _apt_update_once
  log "installing Debian package $pkg"
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && made_policy=1
  fi
  local ok=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" \
    >>"$ENV_ROOT/apt.log" 2>&1 || ok=$?
  [ $made_policy = 1 ] && rm -f $policy
  [ $ok = 0 ] || die "could not install Debian package $pkg (apt-get exit $ok; see $ENV_ROOT/apt.log)"
  [ -x "$cmd" ] || command -v "$cmd" >/dev/null 2>&1 ||
    die "package $pkg installed but $cmd is still missing"
}

# pid_alive PID
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# wait_until WHAT DEADLINE_S PID LOGFILE CMD...: polls CMD until it succeeds. Dies with one
# line when PID exits first (the server crashed or was killed) or the deadline passes.
wait_until() {
  local what=$1 deadline=$2 pid=$3 logf=$4
  shift 4
  local end=$((SECONDS + deadline))
  while ! "$@" >/dev/null 2>&1; do
    if [ -n "$pid" ] && ! pid_alive "$pid"; then
      die "$what exited during startup (last log line: $(last_log_line "$logf"))"
    fi
    if [ $SECONDS -ge $end ]; then
      die "$what not up within ${deadline}s (last log line: $(last_log_line "$logf"))"
    fi
    sleep 0.2
  done
}

last_log_line() {
  local line
  if [ -f "$1" ]; then
    line=$(grep -v '^[[:space:]]*$' "$1" | tail -n 1 | cut -c1-200)
    echo "${line:-$1 is empty}"
  else
    echo "no log at $1"
  fi
}

# stop_pid NAME PID [SIGNAL]: sends SIGNAL (TERM by default), waits up to 20 s, then KILLs.
stop_pid() {
  local name=$1 pid=$2 sig=${3:-TERM} i
  pid_alive "$pid" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pid" || { log "stopped $name (pid $pid)"; return 0; }
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
  log "killed $name (pid $pid) after it ignored SIG$sig for 20s"
}

# stop_pidfile NAME FILE [SIGNAL]
stop_pidfile() {
  local name=$1 file=$2 sig=${3:-TERM}
  [ -f "$file" ] || return 0
  stop_pid "$name" "$(head -n1 "$file")" "$sig"
  rm -f "$file"
}

# spawn_daemon PIDFILE LOGFILE CMD...: runs CMD detached (own session, no stdio shared with
# the caller, so `make` and pipes don't wait on it) and records its PID.
spawn_daemon() {
  local pidfile=$1 logf=$2
  shift 2
  setsid "$@" </dev/null >>"$logf" 2>&1 &
  echo $! >"$pidfile"
  # Not a job of this shell any more: its death is reported by wait_until, not by bash.
  disown $!
}
