#!/usr/bin/env bash
# A private PostgreSQL (Debian's server) on a free loopback port, run as the `postgres` user.
#
#   postgres.sh up DIR      start (initdb on first use); prints `export DATABASE_URL=...`
#   postgres.sh down DIR    stop by PID (fast shutdown)
#   postgres.sh status DIR  exit 0 when it answers a query
#   postgres.sh destroy DIR stop, then remove DIR and its data
#
# DIR keeps the data dir and the port, so `up` after `down` restarts on the same port.
# Port override: PG_PORT. Database `smpp`, user `smpp`, password `smpp` (test-only).
STAGE=postgres
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

PG_VERSION=${PG_VERSION:-15}
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
PG_DEADLINE=${PG_DEADLINE:-60}

cmd=${1:-}
dir=${2:-$ENV_ROOT/postgres}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# The postgres user must be able to reach the data dir. A clone under /root (mode 700) is not
# reachable, so the data then lives in /var/tmp and $dir/data links to it.
data_dir() {
  if [ -L "$dir/data" ] || [ -d "$dir/data" ]; then
    echo "$dir/data"
    return
  fi
  if runuser -u postgres -- test -x "$dir" 2>/dev/null; then
    install -d -o postgres -g postgres -m 700 "$dir/data"
  else
    local alt
    alt=/var/tmp/smpp-pg-$(echo "$dir" | sha256sum | cut -c1-12)
    rm -rf "$alt"
    install -d -o postgres -g postgres -m 700 "$alt"
    ln -s "$alt" "$dir/data"
  fi
  echo "$dir/data"
}

url() { echo "postgres://smpp:smpp@127.0.0.1:$(cat "$dir/port")/smpp"; }

as_pg() { runuser -u postgres -- "$@"; }

psql_admin() { # SQL over the private socket, as the superuser
  as_pg "$PG_BIN/psql" -X -q -h "$(readlink -f "$dir/data")" -p "$(cat "$dir/port")" -U postgres \
    -d postgres -v ON_ERROR_STOP=1 -tA "$@"
}

# The postmaster's PID, only if that process is still a postgres (a stale pid file after a
# crash may name a reused PID, which must not be signalled).
server_pid() {
  local pid
  pid=$(head -n1 "$dir/data/postmaster.pid" 2>/dev/null) || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] && echo "$pid"
}

healthy() {
  [ -f "$dir/port" ] || return 1
  pid_alive "$(server_pid || true)" || return 1
  PGPASSWORD=smpp PGCONNECT_TIMEOUT=3 psql -X -q "$(url)" -tAc 'select 1' >/dev/null 2>&1
}

stop() {
  local pid
  pid=$(server_pid || true)
  # SIGINT = fast shutdown: disconnects clients instead of waiting for them.
  [ -n "$pid" ] && stop_pid postgres "$pid" INT
  return 0
}

up() {
  if healthy; then
    log "already running on 127.0.0.1:$(cat "$dir/port")"
    echo "export DATABASE_URL=$(url)"
    return 0
  fi
  ensure_pkg "$PG_BIN/initdb" "postgresql-$PG_VERSION"
  ensure_pkg psql "postgresql-client-$PG_VERSION"
  # A dead server may have left a stale pid file; postgres refuses to start over a live one.
  stop
  local data port logf
  # The real path: the postgres user may not be able to follow $dir/data (see data_dir).
  data=$(readlink -f "$(data_dir)")
  port=$(pick_port PG_PORT "$dir/port" "postgres")
  logf=$data/server.log
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initdb in $data"
    as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
      die "initdb failed (see $dir/initdb.log)"
  fi
  log "starting on 127.0.0.1:$port"
  on_fail stop
  # -W: don't let pg_ctl wait; our own wait notices a crash through the PID and names the log.
  as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$logf" -W start -o \
    "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$(readlink -f "$data")' -c fsync=off -c full_page_writes=off -c max_connections=200" \
    >/dev/null 2>&1 || die "pg_ctl start failed (see $logf)"
  # The pid file first holds a negative PID (startup in progress); wait for the real one.
  local end=$((SECONDS + 10))
  until server_pid >/dev/null; do
    [ $SECONDS -lt $end ] || die "postgres did not start within 10s (last log line: $(last_log_line "$logf"))"
    sleep 0.05
  done
  wait_until "postgres on 127.0.0.1:$port" "$PG_DEADLINE" "$(server_pid)" "$logf" \
    as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"
  # First start: the test role and database (CREATEDB so tests can make throwaway databases).
  if [ "$(psql_admin -c "select count(*) from pg_roles where rolname='smpp'")" != 1 ]; then
    psql_admin -c "create role smpp login createdb password 'smpp'" >/dev/null ||
      die "could not create role smpp (see $logf)"
    psql_admin -c "create database smpp owner smpp" >/dev/null ||
      die "could not create database smpp (see $logf)"
  fi
  healthy || die "postgres is up but smpp@127.0.0.1:$port/smpp does not answer (see $logf)"
  clear_fail_hooks
  log "ready: $(url | sed 's/:smpp@/:***@/')"
  echo "export DATABASE_URL=$(url)"
}

case "$cmd" in
  up) up ;;
  down) stop ;;
  status) healthy ;;
  destroy)
    stop
    [ -L "$dir/data" ] && rm -rf "$(readlink -f "$dir/data")"
    rm -rf "$dir"
    ;;
  *) die "usage: $0 up|down|status|destroy [DIR]" ;;
esac
