#!/bin/bash
# PostgreSQL 15 of the compose stack, as the user postgres: makes the cluster on first start (the password from
# POSTGRES_PASSWORD, scram-sha-256 for every connection, the database POSTGRES_DB), then runs the server.
set -euo pipefail
data=${PGDATA:-/var/lib/postgresql/data}
bin=/usr/lib/postgresql/15/bin
if [[ ! -s $data/PG_VERSION ]]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set (deploy/compose/deckhand.env)}"
  user=${POSTGRES_USER:-deckhand}
  password=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" >"$password"
  "$bin/initdb" -D "$data" -U "$user" --pwfile="$password" --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$password"
  printf "listen_addresses = '*'\nmax_connections = 200\n" >>"$data/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"$data/pg_hba.conf"
  echo "CREATE DATABASE \"${POSTGRES_DB:-deckhand}\" OWNER \"$user\";" | "$bin/postgres" --single -D "$data" postgres >/dev/null
  echo "postgres: made the cluster and the database ${POSTGRES_DB:-deckhand}"
fi
exec "$bin/postgres" -D "$data"
