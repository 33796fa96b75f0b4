#!/usr/bin/env bash
# pg_emit_rate.sh: how fast can PostgreSQL itself emit pgoutput for outbox
# inserts? Inserts ROWS rows (default 200000; ~300-byte jsonb payload, 7
# columns, 1000 rows per transaction) into a fresh table, then times
# `pg_recvlogical --start --endpos <LSN after the inserts> -f /dev/null` with
# pgoutput proto_version 1, and prints msgs/s next to decode_bench's figure.
#
#   bench/pg_emit_rate.sh [conninfo] [rows]
#
# conninfo: a superuser (or REPLICATION + CREATE) libpq conninfo for a
# database on a wal_level=logical server. Default: OUTBOX_TEST_PG from
# `integration/stack.sh env` if that script exists, otherwise a THROWAWAY
# PostgreSQL 15 like tests/fixtures/capture/capture.sh starts (initdb into
# mktemp -d as the postgres OS user, 127.0.0.1:55499), stopped on exit.
# The slot, publication and table it creates are dropped on exit.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
rows="${2:-200000}"
pgbin="${PGBIN:-/usr/lib/postgresql/15/bin}"
conninfo="${1:-}"
work=""
tag="bench_emit_$$"

if [ -z "$conninfo" ] && [ -x "$repo/integration/stack.sh" ]; then
    conninfo="$(eval "$("$repo/integration/stack.sh" env 2>/dev/null)" && echo "${OUTBOX_TEST_PG:-}")" || conninfo=""
    # `stack.sh env` prints the conninfo whether or not the stack is up.
    if [ -n "$conninfo" ] && ! psql -X -q -Atc "SELECT 1" "$conninfo" >/dev/null 2>&1; then
        echo "pg_emit_rate: stack Postgres not reachable, using a throwaway server" >&2
        conninfo=""
    fi
fi

as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }

cleanup() {
    if [ -n "$conninfo" ]; then
        psql -X -q "$conninfo" -c "SELECT pg_drop_replication_slot('$tag') FROM pg_replication_slots WHERE slot_name = '$tag'" \
            -c "DROP PUBLICATION IF EXISTS $tag" -c "DROP TABLE IF EXISTS $tag" >/dev/null 2>&1 || true
    fi
    if [ -n "$work" ]; then
        as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$work"
    fi
}
trap cleanup EXIT

if [ -z "$conninfo" ]; then
    work="$(mktemp -d)"
    chmod 755 "$work"
    chown postgres: "$work" 2>/dev/null || true
    as_pg "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = 55499
unix_socket_directories = '$work'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = off
CONF
    as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
    conninfo="host=127.0.0.1 port=55499 user=postgres dbname=postgres"
    echo "pg_emit_rate: started throwaway PostgreSQL at 127.0.0.1:55499" >&2
fi

q() { psql -X -q -v ON_ERROR_STOP=1 "$conninfo" "$@"; }

q -c "CREATE TABLE $tag (id bigint PRIMARY KEY, aggregate_type text NOT NULL, aggregate_id text NOT NULL,
        event_type text NOT NULL, payload jsonb, headers jsonb, created_at timestamptz NOT NULL)" \
  -c "CREATE PUBLICATION $tag FOR TABLE $tag" \
  -c "SELECT pg_create_logical_replication_slot('$tag', 'pgoutput')" >/dev/null

t0=$(date +%s.%N)
q >/dev/null <<SQL
DO \$\$
DECLARE
    batches int := ceil($rows / 1000.0);
BEGIN
    FOR t IN 0..batches - 1 LOOP
        INSERT INTO $tag
        SELECT t * 1000 + i, 'order', 'order-' || (t * 1000 + i), 'order.created',
               jsonb_build_object('order_id', t * 1000 + i, 'customer', 'customer-' || (i % 7),
                                  'items', jsonb_build_array(jsonb_build_object('sku', 'SKU-' || i, 'qty', i % 3 + 1),
                                                             jsonb_build_object('sku', 'SKU-X' || t, 'qty', 1)),
                                  'note', repeat('z', 150)),
               jsonb_build_object('trace_id', md5((t * 1000 + i)::text)),
               now()
        FROM generate_series(1, least(1000, $rows - t * 1000)) AS i;
        COMMIT;
    END LOOP;
END
\$\$;
SQL
t1=$(date +%s.%N)
endpos="$(q -Atc "SELECT pg_current_wal_lsn()")"

"$pgbin/pg_recvlogical" -d "$conninfo" --slot "$tag" --start --endpos "$endpos" --no-loop \
    -o proto_version=1 -o "publication_names=$tag" -f /dev/null
t2=$(date +%s.%N)

awk -v rows="$rows" -v t0="$t0" -v t1="$t1" -v t2="$t2" 'BEGIN {
    printf "pg_emit_rate rows=%d insert_seconds=%.2f stream_seconds=%.2f pg_emit_msgs_per_s=%.0f\n",
           rows, t1 - t0, t2 - t1, rows / (t2 - t1) }'

bench=""
for b in "${DECODE_BENCH:-}" "$repo"/build*/bench/decode_bench; do
    if [ -n "$b" ] && [ -x "$b" ]; then bench="$b"; break; fi
done
if [ -n "$bench" ]; then
    echo "pg_emit_rate: decode_bench=$bench" >&2
    "$bench" "$repo/tests/fixtures/pgoutput/bench_outbox_inserts.bin" 2 | tail -1
else
    echo "pg_emit_rate: no decode_bench found (build with OUTBOX_BENCH=ON) to print alongside" >&2
fi
