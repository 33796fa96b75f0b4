#!/bin/sh
# Sets the outbox_relay role's password from the relay_pg_password secret, on
# the first start of the compose Postgres. The password goes to psql as a
# variable on stdin (quoted by psql), never in a file under sql/.
set -eu
pw="$(cat /run/secrets/relay_pg_password)"
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -v pw="$pw" <<'SQL'
ALTER ROLE outbox_relay WITH PASSWORD :'pw';
SQL
