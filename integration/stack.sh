#!/usr/bin/env bash
# integration/stack.sh — a local PostgreSQL 15 + Apache Kafka 3.9.1 stack for the
# integration tests and the quickstart. No Docker: Postgres comes from Debian,
# Kafka from Maven Central jars (integration/kafka/pom.xml), both run as plain
# processes on loopback with their state under one directory.
#
#   stack.sh up                       start both (idempotent: running parts are left alone)
#   stack.sh down                     stop both, verify nothing is left, remove the state dir
#   stack.sh env                      print `export` lines for the tests (eval "$(stack.sh env)")
#   stack.sh status                   show what runs; exit 0 only if both are up
#   stack.sh kafka-stop               SIGTERM the broker, wait until it is gone
#   stack.sh kafka-kill               SIGKILL the broker, wait until it is gone
#   stack.sh kafka-start              start the broker on the same data dir, wait until ready
#   stack.sh kafka-pause              SIGSTOP the broker (it keeps its sockets but answers nothing)
#   stack.sh kafka-resume             SIGCONT it
#   stack.sh pg-stop [fast|immediate] stop Postgres (default fast)
#   stack.sh pg-start                 start Postgres
#   stack.sh pg-restart [fast|immediate]
#   stack.sh psql [args...]           psql against the stack database (outbox_test)
#   stack.sh create-topic NAME PARTITIONS
#
# Environment:
#   OUTBOX_STACK_DIR                    state dir (default /tmp/outbox-relay-stack)
#   OUTBOX_STACK_PG_PORT                Postgres port (default 55432)
#   OUTBOX_STACK_KAFKA_PORT             Kafka PLAINTEXT port (default 19092)
#   OUTBOX_STACK_KAFKA_CONTROLLER_PORT  Kafka CONTROLLER port (default 19093)
#   XDG_CACHE_HOME                      jar cache root (default ~/.cache)
#
# Why Kafka 3.9.1 and not 4.x: librdkafka 2.0.2 (the Debian 12 version we build
# against) turns on its high-level consumer and several features only if the broker
# serves specific OLD protocol versions (JoinGroup v0, ...). Kafka 4.0 removed those
# (KIP-896), so 2.0.2's group consumer is disabled against it (librdkafka #4948).
# 3.9.x still serves them and runs in KRaft mode without ZooKeeper.
set -euo pipefail
# runuser lives in /usr/sbin, which a non-login root shell (CI, cron) may lack.
export PATH="$PATH:/usr/sbin:/sbin"

readonly SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
readonly SCRIPT_DIR="$(dirname "$SCRIPT_PATH")"
readonly STATE="${OUTBOX_STACK_DIR:-/tmp/outbox-relay-stack}"

readonly PG_BIN=/usr/lib/postgresql/15/bin
readonly PG_DB=outbox_test
readonly PG_DATA="$STATE/pg/data"
readonly PG_SOCK="$STATE/pg/run"
readonly PG_LOG="$STATE/pg/postgres.log"

readonly KAFKA_VERSION=3.9.1
readonly KAFKA_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay/kafka-$KAFKA_VERSION/libs"
readonly KAFKA_DIR="$STATE/kafka"
readonly KAFKA_PID="$KAFKA_DIR/kafka.pid"
readonly KAFKA_LOG="$KAFKA_DIR/kafka.log"
readonly KAFKA_READY_SECONDS=60

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

# Ports are fixed at `up` time and remembered in the state dir, so `env` and the
# fault verbs agree with the running stack even if the caller's environment differs.
load_ports() {
    if [[ -f "$STATE/ports" ]]; then
        # shellcheck disable=SC1091
        source "$STATE/ports"
    else
        PG_PORT="${OUTBOX_STACK_PG_PORT:-55432}"
        KAFKA_PORT="${OUTBOX_STACK_KAFKA_PORT:-19092}"
        CONTROLLER_PORT="${OUTBOX_STACK_KAFKA_CONTROLLER_PORT:-19093}"
    fi
}

pg_conninfo() { printf 'host=127.0.0.1 port=%s dbname=%s user=postgres' "$PG_PORT" "$PG_DB"; }
brokers() { printf '127.0.0.1:%s' "$KAFKA_PORT"; }

# One mutating verb at a time (two `up`s racing would both initdb). The lock file
# lives next to the state dir because `down` deletes the dir itself. Daemons we start
# get fd 9 closed, or they would hold the lock for their whole life.
take_lock() {
    exec 9>"${STATE%/}.lock"
    flock -w 600 9 || die "could not lock ${STATE%/}.lock within 600 s"
}

# Postgres refuses to run as root, so as root every Postgres binary runs as the
# `postgres` OS user; as anyone else it runs as that user.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# ---------------------------------------------------------------- Postgres

pg_running() { [[ -f "$PG_DATA/PG_VERSION" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

pg_init() {
    [[ -f "$PG_DATA/PG_VERSION" ]] && return 0
    log "pg: initdb dir=$PG_DATA"
    mkdir -p "$STATE/pg" "$PG_SOCK"
    [[ $EUID -eq 0 ]] && chown -R postgres:postgres "$STATE/pg"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$STATE/pg/initdb.log" 2>&1 \
        || { cat "$STATE/pg/initdb.log" >&2; die "initdb failed"; }
    # Settings the relay needs (logical decoding, slots and walsenders for several
    # tests at once) and isolation from any other Postgres on the machine: own port,
    # loopback only, socket inside the state dir.
    cat >>"$PG_DATA/postgresql.conf" <<EOF

# --- outbox-relay integration stack
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
wal_level = logical
max_replication_slots = 16
max_wal_senders = 16
max_connections = 100
log_line_prefix = '%m [%p] %q%a '
log_min_messages = warning
log_replication_commands = on
EOF
    # Trust on loopback, for SQL and replication alike. The `replication` keyword does
    # not match logical (replication=database) connections, which match on the
    # database name instead: `all` covers both.
    cat >"$PG_DATA/pg_hba.conf" <<'EOF'
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
local   replication  all                  trust
host    all          all   127.0.0.1/32   trust
host    replication  all   127.0.0.1/32   trust
EOF
    [[ $EUID -eq 0 ]] && chown postgres:postgres "$PG_DATA/postgresql.conf" "$PG_DATA/pg_hba.conf"
    return 0
}

pg_start() {
    pg_init
    if pg_running; then
        log "pg: already running port=$PG_PORT"
    else
        log "pg: start port=$PG_PORT"
        # pg_ctl -w returns once the server accepts connections (or failed to start).
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 120 start >/dev/null 9>&- \
            || { tail -n 30 "$PG_LOG" >&2 || true; die "postgres did not start (log: $PG_LOG)"; }
    fi
    local have
    have="$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")"
    if [[ "$have" != 1 ]]; then
        psql_admin -qc "CREATE DATABASE $PG_DB" >/dev/null
        log "pg: created database=$PG_DB"
    fi
}

pg_stop() {
    local mode="${1:-fast}"
    case "$mode" in fast|immediate|smart) ;; *) die "pg-stop: mode must be fast or immediate, got '$mode'";; esac
    if ! pg_running; then
        log "pg: not running"
        return 0
    fi
    log "pg: stop mode=$mode"
    # A fast shutdown waits for walsenders whose client never confirms (up to
    # wal_sender_timeout, PROTOCOL.md 1.5). Give it 60 s, then fall back to immediate.
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m "$mode" -w -t 60 stop >/dev/null; then
        log "pg: $mode stop timed out, stopping immediate"
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null || true
    fi
    pg_running && die "postgres still running after stop"
    return 0
}

psql_admin() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "host=127.0.0.1 port=$PG_PORT dbname=postgres user=postgres" "$@"
}

# ---------------------------------------------------------------- Kafka

# Alive = exists and is not a zombie (an unreaped zombie still answers kill -0).
pid_alive() {
    [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
    [[ "$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" != Z ]]
}

kafka_pid() {
    local pid
    [[ -f "$KAFKA_PID" ]] || return 1
    pid="$(cat "$KAFKA_PID")"
    # Guard against a recycled pid: it must still be our broker.
    pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    printf '%s' "$pid"
}

# Resolve the broker's runtime jars once. The marker holds a hash of the pom, so
# editing the pom re-resolves, and a warm cache needs no network at all.
kafka_jars() {
    local pom="$SCRIPT_DIR/kafka/pom.xml" want
    want="$(sha256sum "$pom" | cut -d' ' -f1)"
    if [[ -f "$KAFKA_CACHE/.complete" && "$(cat "$KAFKA_CACHE/.complete")" == "$want" ]]; then
        return 0
    fi
    log "kafka: resolving jars for $KAFKA_VERSION from Maven Central into $KAFKA_CACHE"
    command -v mvn >/dev/null || die "mvn not found (run integration/install-deps.sh)"
    local tmp="${KAFKA_CACHE}.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # Maven 3.8's -q still emits bare ANSI reset codes; strip them from the log.
    mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2 \
        || { rm -rf "$tmp"; die "maven could not resolve the Kafka jars"; }
    ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "kafka_2.13 jar missing after mvn"; }
    rm -rf "$KAFKA_CACHE"
    mv "$tmp" "$KAFKA_CACHE"
    printf '%s\n' "$want" >"$KAFKA_CACHE/.complete"
}

java_cmd() {
    # Mirrors kafka-run-class.sh; the heap is capped because the machine is small.
    printf '%s\n' java -Xmx512m -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dkafka.logs.dir="$KAFKA_DIR/logs" \
        -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" \
        -cp "$KAFKA_CACHE/*"
}

kafka_configure() {
    mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
    sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$KAFKA_DIR/data|g" \
        "$SCRIPT_DIR/kafka/server.properties.in" >"$KAFKA_DIR/server.properties"
    cp "$SCRIPT_DIR/kafka/log4j.properties" "$KAFKA_DIR/log4j.properties"
    # Format the KRaft metadata log exactly once; a restart reuses the data dir.
    if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
        local cid
        # A cluster id is 16 random bytes in unpadded base64url (what
        # `StorageTool random-uuid` prints); making it here saves a JVM start.
        # Kafka's own generator avoids a leading '-', so do we.
        cid=-
        while [[ "$cid" == -* ]]; do
            cid="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        done
        mapfile -t J < <(java_cmd)
        "${J[@]}" kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_DIR/server.properties" \
            >"$KAFKA_DIR/format.log" 2>&1 || { cat "$KAFKA_DIR/format.log" >&2; die "kafka storage format failed"; }
        log "kafka: formatted cluster_id=$cid"
    fi
}

# Something accepts TCP connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ready = a real metadata request answered, listing broker 1.
kafka_ready() {
    kcat -L -b "$(brokers)" -m 5 2>/dev/null | grep -q 'broker 1 at'
}

kafka_wait_ready() {
    local pid="$1" deadline=$((SECONDS + KAFKA_READY_SECONDS)) delay=0.2
    while ! kafka_ready; do
        if ! pid_alive "$pid"; then
            tail -n 40 "$KAFKA_LOG" >&2 || true
            die "kafka exited during startup (log: $KAFKA_LOG)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 40 "$KAFKA_LOG" >&2 || true
            die "kafka not ready after ${KAFKA_READY_SECONDS}s (log: $KAFKA_LOG)"
        fi
        sleep "$delay"
        delay=0.5
    done
}

kafka_start() {
    local pid
    if pid="$(kafka_pid)"; then
        kafka_wait_ready "$pid"
        log "kafka: already running pid=$pid brokers=$(brokers)"
        return 0
    fi
    # Readiness is judged by a metadata request on the port, so a foreign broker
    # already listening there would make a failed start look ready.
    local port
    for port in "$KAFKA_PORT" "$CONTROLLER_PORT"; do
        if port_in_use "$port"; then
            die "port $port is already in use by another process (set OUTBOX_STACK_KAFKA_PORT / OUTBOX_STACK_KAFKA_CONTROLLER_PORT)"
        fi
    done
    kafka_jars
    kafka_configure
    mapfile -t J < <(java_cmd)
    log "kafka: start version=$KAFKA_VERSION brokers=$(brokers)"
    # setsid: the broker must outlive the shell (and ctest) that started it and must
    # not get their terminal signals. Its stdio goes to the log, never to our caller's
    # pipes, or `stack.sh up | tee` would never see EOF. No fork inside setsid here
    # (a background job is not a group leader), so $! is the JVM itself.
    setsid "${J[@]}" kafka.Kafka "$KAFKA_DIR/server.properties" </dev/null >>"$KAFKA_LOG" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$KAFKA_PID"
    kafka_wait_ready "$pid"
    log "kafka: ready pid=$pid brokers=$(brokers)"
}

# Stop with the given signal and wait until the process is gone. After SIGTERM the
# broker does a controlled shutdown; if it hangs past the deadline, SIGKILL.
kafka_stop() {
    local sig="$1" pid deadline
    if ! pid="$(kafka_pid)"; then
        log "kafka: not running"
        rm -f "$KAFKA_PID"
        return 0
    fi
    log "kafka: stop signal=$sig pid=$pid"
    kill -s "$sig" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 60))
    while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "kafka: still alive 60 s after $sig, sending KILL"
            kill -s KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
            sig=KILL
        fi
        sleep 0.1
    done
    rm -f "$KAFKA_PID"
    # The listener port must be free before a restart can bind it again.
    log "kafka: stopped pid=$pid"
}

create_topic() {
    local name="${1:-}" parts="${2:-}"
    [[ -n "$name" && "$parts" =~ ^[1-9][0-9]*$ ]] || die "usage: stack.sh create-topic NAME PARTITIONS"
    kafka_pid >/dev/null || die "kafka is not running"
    kafka_jars
    # Client-side logging only at WARN, to stderr.
    local l4j="$KAFKA_DIR/tools-log4j.properties"
    [[ -f "$l4j" ]] || printf '%s\n' 'log4j.rootLogger=WARN, stderr' \
        'log4j.appender.stderr=org.apache.log4j.ConsoleAppender' 'log4j.appender.stderr.Target=System.err' \
        'log4j.appender.stderr.layout=org.apache.log4j.PatternLayout' \
        'log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n' >"$l4j"
    java -Xmx128m -Dlog4j.configuration="file:$l4j" -cp "$KAFKA_CACHE/*" \
        "$SCRIPT_DIR/kafka/CreateTopic.java" "$(brokers)" "$name" "$parts"
}

# ---------------------------------------------------------------- verbs

cmd_up() {
    take_lock
    mkdir -p "$STATE"
    chmod 755 "$STATE"
    load_ports
    printf 'PG_PORT=%s\nKAFKA_PORT=%s\nCONTROLLER_PORT=%s\n' "$PG_PORT" "$KAFKA_PORT" "$CONTROLLER_PORT" \
        >"$STATE/ports"
    pg_start
    kafka_start
    log "up: postgres=$(pg_conninfo) brokers=$(brokers) dir=$STATE"
}

cmd_down() {
    take_lock
    if [[ ! -d "$STATE" ]]; then
        log "down: nothing at $STATE"
        return 0
    fi
    load_ports
    kafka_stop TERM
    if [[ -f "$PG_DATA/PG_VERSION" ]]; then
        pg_stop fast || true
        # Belt and braces: if pg_ctl could not stop it, kill the postmaster by its pid file.
        if [[ -f "$PG_DATA/postmaster.pid" ]]; then
            local pm
            pm="$(head -n1 "$PG_DATA/postmaster.pid")"
            if pid_alive "$pm"; then
                log "pg: killing postmaster pid=$pm"
                kill -KILL "$pm" 2>/dev/null || true
                local deadline=$((SECONDS + 30))
                while pid_alive "$pm" && ((SECONDS < deadline)); do sleep 0.1; done
                pid_alive "$pm" && die "postmaster pid=$pm survived SIGKILL"
            fi
        fi
    fi
    # Verify: nothing of ours may still run, and the ports must be free.
    if pgrep -f -- "$KAFKA_DIR/server.properties" >/dev/null || pgrep -f -- "-D $PG_DATA" >/dev/null; then
        die "processes of the stack are still running: $(pgrep -af -- "$STATE" | tr '\n' ';')"
    fi
    rm -rf "$STATE"
    log "down: stopped and removed $STATE"
}

cmd_status() {
    load_ports
    local rc=0 pid
    if pg_running; then
        echo "postgres: running port=$PG_PORT conninfo='$(pg_conninfo)'"
    else
        echo "postgres: stopped"
        rc=3
    fi
    if pid="$(kafka_pid)"; then
        if kafka_ready; then
            echo "kafka: running pid=$pid brokers=$(brokers) ready=yes"
        else
            echo "kafka: running pid=$pid brokers=$(brokers) ready=no"
            rc=3
        fi
    else
        echo "kafka: stopped"
        rc=3
    fi
    echo "state: $STATE"
    return "$rc"
}

cmd_env() {
    load_ports
    echo "# outbox-relay local stack (integration/stack.sh); eval \"\$(integration/stack.sh env)\""
    printf 'export OUTBOX_TEST_PG=%q\n' "$(pg_conninfo)"
    printf 'export OUTBOX_TEST_BROKERS=%q\n' "$(brokers)"
    printf 'export OUTBOX_STACK_DIR=%q\n' "$STATE"
    printf 'export OUTBOX_STACK_SH=%q\n' "$SCRIPT_PATH"
}

# A paused broker is the hard case for clients: connections stay open and
# accept requests, and nothing is answered (a GC stall, a frozen VM).
kafka_signal() {
    local sig="$1" pid
    pid="$(kafka_pid)" || die "kafka: not running"
    kill -s "$sig" "$pid"
    log "kafka: signal=$sig pid=$pid"
}

main() {
    local verb="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$verb" in
        up) cmd_up ;;
        down) cmd_down ;;
        env) cmd_env ;;
        status) cmd_status ;;
        kafka-stop) take_lock; load_ports; kafka_stop TERM ;;
        kafka-kill) take_lock; load_ports; kafka_stop KILL ;;
        kafka-pause) load_ports; kafka_signal STOP ;;
        kafka-resume) load_ports; kafka_signal CONT ;;
        kafka-start) take_lock; load_ports; [[ -d "$KAFKA_DIR/data" ]] || die "no broker data dir; run up first"; kafka_start ;;
        pg-stop) take_lock; load_ports; pg_stop "${1:-fast}" ;;
        pg-start) take_lock; load_ports; [[ -f "$PG_DATA/PG_VERSION" ]] || die "no Postgres data dir; run up first"; pg_start ;;
        pg-restart) take_lock; load_ports; pg_stop "${1:-fast}"; pg_start ;;
        psql) load_ports; exec "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -d "$(pg_conninfo)" "$@" ;;
        create-topic) load_ports; create_topic "$@" ;;
        ""|-h|--help|help) sed -n '2,30p' "$SCRIPT_PATH" | sed 's/^# \{0,1\}//'; [[ -n "$verb" ]] ;;
        *) die "unknown verb '$verb' (try: stack.sh help)" ;;
    esac
}

main "$@"
