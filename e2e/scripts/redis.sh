#!/usr/bin/env bash
# A private Redis (Debian's redis-server) on a free loopback port, without persistence
# (REDIS_APPENDONLY=yes: with an append-only file in DIR, so data survives down/up).
#
#   redis.sh up DIR      start; prints `export REDIS_URL=redis://127.0.0.1:PORT/0`
#   redis.sh down DIR    stop by PID
#   redis.sh status DIR  exit 0 when it answers PING
#
# Port override: REDIS_PORT. DIR keeps the pid file, log and port.
STAGE=redis
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

REDIS_DEADLINE=${REDIS_DEADLINE:-30}

cmd=${1:-}
dir=${2:-$ENV_ROOT/redis}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

url() { echo "redis://127.0.0.1:$(cat "$dir/port")/0"; }

server_pid() {
  local pid
  pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] && echo "$pid"
}

ping() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

healthy() {
  [ -f "$dir/port" ] && pid_alive "$(server_pid || true)" && ping "$(cat "$dir/port")"
}

stop() {
  local pid
  pid=$(server_pid || true)
  [ -n "$pid" ] && stop_pid redis "$pid" TERM
  rm -f "$dir/redis.pid"
}

up() {
  if healthy; then
    log "already running on 127.0.0.1:$(cat "$dir/port")"
    echo "export REDIS_URL=$(url)"
    return 0
  fi
  ensure_pkg redis-server redis-server
  ensure_pkg redis-cli redis-tools
  stop
  local port logf=$dir/redis.log
  port=$(pick_port REDIS_PORT "$dir/port" "redis")
  log "starting on 127.0.0.1:$port"
  on_fail stop
  # Not daemonized, so the PID we record is the server's from the first instant.
  spawn_daemon "$dir/redis.pid" "$logf" redis-server --port "$port" --bind 127.0.0.1 \
    --save '' --appendonly "${REDIS_APPENDONLY:-no}" --daemonize no --dir "$dir" --protected-mode yes
  wait_until "redis on 127.0.0.1:$port" "$REDIS_DEADLINE" "$(cat "$dir/redis.pid")" "$logf" ping "$port"
  clear_fail_hooks
  log "ready: $(url)"
  echo "export REDIS_URL=$(url)"
}

case "$cmd" in
  up) up ;;
  down) stop ;;
  status) healthy ;;
  *) die "usage: $0 up|down|status [DIR]" ;;
esac
