#!/usr/bin/env bash
# integration/quickstart.sh — from a fresh Debian 12 checkout to outbox-relay
# streaming a local Postgres outbox into a local Kafka: install packages, build,
# start the stack, create the outbox table, start the relay (it creates the
# publication and slot), insert a sample event and show it arriving in Kafka.
# Safe to run again (every step is idempotent). Everything stays up; the last
# lines printed say how to stop it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STACK="$ROOT/integration/stack.sh"

echo "== 1/5 packages"
bash integration/install-deps.sh

echo "== 2/5 build (Release, build/)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j"$(nproc)" outbox-relay

echo "== 3/5 local stack"
bash "$STACK" up
eval "$(bash "$STACK" env)"

echo "== 4/5 outbox table (sql/01_outbox_table.sql) and the relay"
psql "$OUTBOX_TEST_PG" -v ON_ERROR_STOP=1 -q -f sql/01_outbox_table.sql
RELAY_LOG="$OUTBOX_STACK_DIR/relay.log"
RELAY_PID_FILE="$OUTBOX_STACK_DIR/relay.pid"
if [[ -f "$RELAY_PID_FILE" ]] && kill -0 "$(cat "$RELAY_PID_FILE")" 2>/dev/null; then
    echo "relay already running (pid $(cat "$RELAY_PID_FILE"))"
else
    # Defaults: slot outbox_relay, publication outbox_relay_pub, table public.outbox,
    # topic outbox.event.{aggregatetype}. The relay creates publication and slot.
    nohup "$ROOT/build/outbox-relay" run --postgres "$OUTBOX_TEST_PG" --brokers "$OUTBOX_TEST_BROKERS" \
        --metrics-listen 127.0.0.1:9187 >"$RELAY_LOG" 2>&1 </dev/null &
    echo $! >"$RELAY_PID_FILE"
fi
# Ready = its walsender holds the slot.
slot_active() {
    psql "$OUTBOX_TEST_PG" -tAc \
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'outbox_relay' AND active"
}
deadline=$((SECONDS + 60))
until [[ "$(slot_active)" == 1 ]]; do
    if ! kill -0 "$(cat "$RELAY_PID_FILE")" 2>/dev/null || ((SECONDS > deadline)); then
        echo "the relay did not start streaming; the end of its log ($RELAY_LOG):" >&2
        tail -n 20 "$RELAY_LOG" >&2
        exit 1
    fi
    sleep 0.2
done
echo "relay streaming (pid $(cat "$RELAY_PID_FILE"), log $RELAY_LOG)"

echo "== 5/5 a sample event, from INSERT to Kafka"
event_id=$(psql "$OUTBOX_TEST_PG" -v ON_ERROR_STOP=1 -tAqc \
    "INSERT INTO public.outbox (id, aggregatetype, aggregateid, type, payload)
     VALUES (gen_random_uuid(), 'order', 'order-42', 'OrderCreated', '{\"orderId\": 42, \"total\": 99.5}')
     RETURNING id")
echo "inserted event $event_id into public.outbox"
found=""
deadline=$((SECONDS + 30))
while [[ -z "$found" ]] && ((SECONDS < deadline)); do
    found=$(kcat -C -b "$OUTBOX_TEST_BROKERS" -t outbox.event.order -o beginning -e -q \
        -f 'topic=%t partition=%p offset=%o key=%k headers=%h value=%s\n' 2>/dev/null |
        grep -F "id=$event_id" || true)
    [[ -n "$found" ]] || sleep 0.3
done
if [[ -z "$found" ]]; then
    echo "event $event_id did not reach Kafka within 30 s; the end of the relay log:" >&2
    tail -n 20 "$RELAY_LOG" >&2
    exit 1
fi
echo "arrived in Kafka:"
echo "  $found"

cat <<MSG

Running: Postgres $OUTBOX_TEST_PG_VERSION, Kafka $OUTBOX_TEST_KAFKA_VERSION ($OUTBOX_TEST_KAFKA_NODES node(s)) and outbox-relay (state in $OUTBOX_STACK_DIR).

  Insert events:  bash integration/stack.sh psql -c "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
                      VALUES (gen_random_uuid(), 'order', 'order-43', 'OrderPaid', '{}')"
  Watch Kafka:    kcat -C -b $OUTBOX_TEST_BROKERS -t outbox.event.order -f '%k %h %s\n'
  Metrics:        curl -s 127.0.0.1:9187/metrics
  Relay log:      $RELAY_LOG
  Stop the relay: kill \$(cat $RELAY_PID_FILE)     (SIGTERM: drains acks, confirms, exits 0)
  Stop it all:    kill \$(cat $RELAY_PID_FILE); bash integration/stack.sh down
MSG
