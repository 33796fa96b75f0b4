#!/usr/bin/env bash
# bench/relay_drain_rate.sh — end-to-end throughput of the relay next to what
# this Postgres can decode, on the same backlog.
#
# Two pgoutput slots are created at the same WAL position, then ROWS outbox
# rows are written (transactions of TXN rows, ~300-byte jsonb payload). Then:
#   1. pg_recvlogical drains slot B to /dev/null  -> what Postgres can emit
#   2. outbox-relay drains slot A into Kafka      -> records acked per second
# Both figures are printed with their ratio. It prints figures; it asserts
# nothing (timings on a shared machine are noisy: compare the ratio).
#
#   bench/relay_drain_rate.sh [ROWS] [TXN]        (default 100000 1000)
# Needs the local stack (integration/stack.sh up) and build/outbox-relay
# (RELAY_BIN overrides the path).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${1:-100000}"
TXN="${2:-1000}"
BIN="${RELAY_BIN:-$ROOT/build/outbox-relay}"
eval "$(bash "$ROOT/integration/stack.sh" env)"
PG="$OUTBOX_TEST_PG"
PGBIN=/usr/lib/postgresql/15/bin
tag="bench_drain_$$"
port=$((20000 + $$ % 10000))
sql() { psql "$PG" -v ON_ERROR_STOP=1 -qtAc "$1"; }

cleanup() {
    [[ -n "${relay_pid:-}" ]] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null || true
    sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('${tag}_a', '${tag}_b')" >/dev/null || true
    sql "DROP PUBLICATION IF EXISTS ${tag}_pub; DROP TABLE IF EXISTS public.${tag}" >/dev/null || true
}
trap cleanup EXIT

sql "CREATE TABLE public.${tag} (id uuid PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text NOT NULL,
     type text NOT NULL, payload jsonb, created_at timestamptz NOT NULL DEFAULT now())"
sql "CREATE PUBLICATION ${tag}_pub FOR TABLE public.${tag} WITH (publish = 'insert')"
sql "SELECT pg_create_logical_replication_slot('${tag}_a', 'pgoutput')" >/dev/null
sql "SELECT pg_create_logical_replication_slot('${tag}_b', 'pgoutput')" >/dev/null

echo "writing $ROWS rows in transactions of $TXN ..."
for ((done_rows = 0; done_rows < ROWS; done_rows += TXN)); do
    echo "INSERT INTO public.${tag} (id, aggregatetype, aggregateid, type, payload)
          SELECT gen_random_uuid(), 'bench', 'agg-' || (i % 97), 'BenchEvent',
                 jsonb_build_object('n', i, 'pad', repeat('x', 250))
          FROM generate_series($done_rows + 1, $done_rows + $TXN) i;"
done | psql "$PG" -v ON_ERROR_STOP=1 -q
end_lsn=$(sql "SELECT pg_current_wal_lsn()")
echo "backlog written, end LSN $end_lsn"

# 1. What Postgres emits: pg_recvlogical to /dev/null up to the end LSN.
t0=$(date +%s.%N)
"$PGBIN/pg_recvlogical" -d "$PG" --slot "${tag}_b" --start --endpos "$end_lsn" --no-loop -f /dev/null \
    -o proto_version=1 -o publication_names="${tag}_pub"
t1=$(date +%s.%N)
pg_s=$(echo "$t1 - $t0" | bc -l)

# 2. The relay: from start until every record is acked (its metrics).
t0=$(date +%s.%N)
"$BIN" run --postgres "$PG" --brokers "$OUTBOX_TEST_BROKERS" --slot "${tag}_a" --publication "${tag}_pub" \
    --table "public.${tag}" --topic "${tag}.{aggregatetype}" --metrics-listen "127.0.0.1:$port" \
    --create-slot false >"/tmp/${tag}.log" 2>&1 &
relay_pid=$!
acked=0
deadline=$((SECONDS + 600))
while ((acked < ROWS)); do
    if ((SECONDS >= deadline)) || ! kill -0 "$relay_pid" 2>/dev/null; then
        echo "relay stopped or timed out: acked=$acked of $ROWS" >&2
        tail "/tmp/${tag}.log" >&2
        exit 1
    fi
    sleep 0.05
    acked=$(curl -s "127.0.0.1:$port/metrics" | awk '$1 == "outbox_relay_records_acked_total" {print $2}' || true)
    acked=${acked:-0}  # not listening yet
done
t1=$(date +%s.%N)
relay_s=$(echo "$t1 - $t0" | bc -l)

printf 'rows=%d txn_rows=%d\n' "$ROWS" "$TXN"
printf 'pg_recvlogical (Postgres decode, to /dev/null): %.2f s  %.0f rows/s\n' "$pg_s" "$(echo "$ROWS / $pg_s" | bc -l)"
printf 'outbox-relay (decode + Kafka acks, incl. start): %.2f s  %.0f rows/s\n' "$relay_s" "$(echo "$ROWS / $relay_s" | bc -l)"
printf 'relay / postgres = %.2f\n' "$(echo "$pg_s / $relay_s" | bc -l)"
