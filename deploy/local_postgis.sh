#!/usr/bin/env bash
# Local PostGIS cluster for the glacial-lake inventory, by hand.
#
# The same lifecycle as db/local_cluster.py (which `glacial-lakes demo` uses when
# DATABASE_URL is unset): a private cluster under one directory, listening on 127.0.0.1
# only, on a private port (never the system cluster's 5432), trust authentication
# (development and tests only: any local user can connect as postgres).
#
# Usage:
#   deploy/local_postgis.sh start    # install PostGIS if missing (root + apt-get), initdb, start, create DB
#   deploy/local_postgis.sh stop
#   deploy/local_postgis.sh status
#   deploy/local_postgis.sh url      # print the DATABASE_URL to export
#   deploy/local_postgis.sh psql     # open psql on the database
#
# Settings (environment):
#   GL_PG_ROOT  cluster directory              (default: ./.glacial-lakes/pg)
#   GL_PG_PORT  TCP port on 127.0.0.1          (default: 55432)
#   GL_PG_DB    database to create             (default: glacial_lakes)
#
# Layout: $GL_PG_ROOT/data (PGDATA), $GL_PG_ROOT/run (Unix socket), $GL_PG_ROOT/log/postgres.log.
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` user, which
# must be able to enter every parent of GL_PG_ROOT (a root under /root, mode 700, fails).
# Then: DATABASE_URL=$(deploy/local_postgis.sh url) glacial-lakes db upgrade
set -euo pipefail

ROOT="${GL_PG_ROOT:-$PWD/.glacial-lakes/pg}"
PORT="${GL_PG_PORT:-55432}"
DB="${GL_PG_DB:-glacial_lakes}"
PACKAGE="postgresql-15-postgis-3"

die() { echo "local_postgis: $*" >&2; exit 1; }

pg_bin() {
    # Highest installed major version (Debian layout), not tied to 15.
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V | tail -n 1 || true)
    [[ -n "$dir" && -x "$dir/pg_ctl" ]] && echo "$dir"
}

ensure_postgis() {
    local bin
    bin=$(pg_bin || true)
    if [[ -n "$bin" && -f "/usr/share/postgresql/$(basename "$(dirname "$bin")")/extension/postgis.control" ]]; then
        return
    fi
    command -v apt-get >/dev/null || die "PostGIS is not installed and apt-get is not available: install $PACKAGE or set DATABASE_URL"
    [[ $(id -u) -eq 0 ]] || die "PostGIS is not installed and installing it needs root: install $PACKAGE or set DATABASE_URL"
    echo "local_postgis: installing $PACKAGE" >&2
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$PACKAGE" >&2
}

as_pg() {
    # Run a server binary as the cluster's owner: postgres when we are root, else ourselves.
    if [[ $(id -u) -eq 0 ]]; then
        (cd "$ROOT" && runuser -u postgres -- "$@")
    else
        (cd "$ROOT" && "$@")
    fi
}

prepare() {
    mkdir -p "$ROOT/data" "$ROOT/run" "$ROOT/log"
    ROOT=$(cd "$ROOT" && pwd)
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- sh -c 'cd "$1"' _ "$ROOT" 2>/dev/null \
            || die "$ROOT (or a parent) is not traversable by the postgres user: choose another GL_PG_ROOT or set DATABASE_URL"
        chown postgres: "$ROOT/data" "$ROOT/run" "$ROOT/log"
    fi
    chmod 700 "$ROOT/data"
}

running() {
    [[ -f "$ROOT/data/PG_VERSION" ]] && as_pg "$BIN/pg_ctl" status -D "$ROOT/data" >/dev/null 2>&1
}

cmd_start() {
    ensure_postgis
    BIN=$(pg_bin) || die "PostgreSQL binaries not found under /usr/lib/postgresql"
    prepare
    if [[ ! -f "$ROOT/data/PG_VERSION" ]]; then
        as_pg "$BIN/initdb" -D "$ROOT/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    if ! running; then
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            die "port $PORT on 127.0.0.1 is in use by another server: set GL_PG_PORT or DATABASE_URL"
        fi
        as_pg "$BIN/pg_ctl" start -w -t 60 -D "$ROOT/data" -l "$ROOT/log/postgres.log" \
            -o "-p $PORT -k '$ROOT/run' -c listen_addresses=127.0.0.1" >/dev/null \
            || die "PostgreSQL did not start on port $PORT: see $ROOT/log/postgres.log"
    fi
    if [[ -z $("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -Atc \
        "SELECT 1 FROM pg_database WHERE datname = '$DB'") ]]; then
        "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
    fi
    cmd_url
}

cmd_stop() {
    BIN=$(pg_bin) || exit 0
    [[ -d "$ROOT" ]] || exit 0
    ROOT=$(cd "$ROOT" && pwd)
    if running; then as_pg "$BIN/pg_ctl" stop -w -m fast -D "$ROOT/data" >/dev/null; fi
}

cmd_status() {
    BIN=$(pg_bin) || die "PostgreSQL is not installed"
    [[ -d "$ROOT" ]] && ROOT=$(cd "$ROOT" && pwd)
    if [[ -d "$ROOT" ]] && running; then echo "running: $ROOT on 127.0.0.1:$PORT"; else echo "stopped: $ROOT"; exit 3; fi
}

cmd_url() { echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/$DB"; }

cmd_psql() {
    BIN=$(pg_bin) || die "PostgreSQL is not installed"
    exec "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    url) cmd_url ;;
    psql) cmd_psql ;;
    *) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
