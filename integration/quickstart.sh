#!/usr/bin/env bash
# integration/quickstart.sh — from a fresh Debian 12 checkout to a running local
# Postgres + Kafka stack: install packages, build, start the stack, show how to
# connect. Safe to run again (every step is idempotent). The stack stays up; stop it
# with `bash integration/stack.sh down`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STACK="$ROOT/integration/stack.sh"

echo "== 1/3 packages"
bash integration/install-deps.sh

echo "== 2/3 build (Release, build/)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j"$(nproc)" outbox-relay

echo "== 3/3 local stack"
bash "$STACK" up
eval "$(bash "$STACK" env)"

cat <<EOF

The stack is up (state in $OUTBOX_STACK_DIR).

  Postgres 15   $OUTBOX_TEST_PG
                bash integration/stack.sh psql          # psql on the test database
  Kafka 3.9.1   $OUTBOX_TEST_BROKERS
                kcat -L -b $OUTBOX_TEST_BROKERS          # brokers and topics
                kcat -C -b $OUTBOX_TEST_BROKERS -t TOPIC -e -f '%k %s\n'

  Environment for the tests and the relay:
                eval "\$(bash integration/stack.sh env)"
  Relay binary: $ROOT/build/outbox-relay
                build/outbox-relay run --postgres "$OUTBOX_TEST_PG" --brokers $OUTBOX_TEST_BROKERS

  Stop everything:  bash integration/stack.sh down
EOF
