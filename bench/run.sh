#!/usr/bin/env bash
# bench/run.sh — every benchmark figure of outbox-relay side by side, in one run
# (issue 12): the pg_recvlogical and Kafka-ingest ceilings, the relay's catch-up,
# commit-to-append latency, its RSS/CPU/instructions per event, and Debezium on
# the same Postgres and Kafka. Prints a table and writes bench.json, bench.md and
# bench.png. It prints figures; it fails only when something is broken (a
# process died, a record is missing or doubled, an output file is not written).
#
#   bash bench/run.sh [--smoke] [--no-debezium] [--relay-bin PATH] [--out DIR]
#
#   --smoke        tiny sizes, a few seconds per figure, well under 90 s on a warm
#                  stack; figures meaningless, correctness checked. Debezium runs
#                  (defaults only) if its jars are cached or can be fetched, and is
#                  otherwise skipped WITH A LOUD NOTICE.
#   --no-debezium  leave out the Debezium figures
#   --relay-bin    the relay under test (default: <build>/outbox-relay, built first)
#   --relay-arg A  pass A to every relay run (repeatable; e.g. --relay-arg=-X
#                  --relay-arg=linger.ms=0) to measure a setting; recorded in the results
#   --out          where results go (default bench/results, or <build>/bench-smoke
#                  with --smoke, so a smoke run never overwrites the committed run)
#   --stack-from-env  fail unless OUTBOX_TEST_PG and OUTBOX_TEST_BROKERS are set
#                  (ctest's integration/bench_smoke: never start a stack, never skip)
#
# Postgres and Kafka: if OUTBOX_TEST_PG and OUTBOX_TEST_BROKERS are set, that stack
# is used (and left running). Otherwise integration/stack.sh starts one in
# $OUTBOX_STACK_DIR (default /tmp/outbox-relay-bench-stack) on the ports
# $OUTBOX_STACK_PG_PORT / _KAFKA_PORT / _KAFKA_CONTROLLER_PORT (default 55434,
# 19096, 19097: not the defaults of a developer's stack or of integration/test.sh)
# and `stack.sh down` removes it on exit.
#
# Build dir: $OUTBOX_BENCH_BUILD_DIR (default build/); bench_tool is built there
# with ninja. $OUTBOX_BENCH_TOOL overrides the bench_tool binary (ctest sets it).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${OUTBOX_BENCH_BUILD_DIR:-$ROOT/build}"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"
smoke=0
debezium=1
stack_from_env=0
relay_bin=""
relay_args=()
out=""
command_line="bash bench/run.sh $*"

usage() { sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --no-debezium) debezium=0 ;;
        --stack-from-env) stack_from_env=1 ;;
        --relay-bin) relay_bin="${2:?--relay-bin needs a path}"; shift ;;
        --relay-bin=*) relay_bin="${1#*=}" ;;
        --relay-arg) relay_args+=("--relay-arg=${2:?--relay-arg needs a value}"); shift ;;
        --relay-arg=*) relay_args+=("$1") ;;
        --out) out="${2:?--out needs a directory}"; shift ;;
        --out=*) out="${1#*=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [[ -z "$out" ]]; then
    if [[ $smoke -eq 1 ]]; then out="$BUILD/bench-smoke"; else out="$ROOT/bench/results"; fi
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"

log() { printf 'run.sh: %s\n' "$*" >&2; }

# ---- binaries: bench_tool always from this tree; the relay from --relay-bin or built.
tool="${OUTBOX_BENCH_TOOL:-}"
if [[ -z "$tool" || -z "$relay_bin" ]]; then
    targets=()
    [[ -z "$tool" ]] && targets+=(bench_tool)
    [[ -z "$relay_bin" ]] && targets+=(outbox-relay)
    if [[ ! -f "$BUILD/build.ninja" ]]; then
        log "configuring $BUILD"
        cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$BUILD.configure.log" 2>&1 \
            || { cat "$BUILD.configure.log" >&2; exit 1; }
    fi
    log "building ${targets[*]} in $BUILD"
    ninja -C "$BUILD" -j"${OUTBOX_BENCH_JOBS:-2}" "${targets[@]}" >&2
    [[ -z "$tool" ]] && tool="$BUILD/bench/bench_tool"
    [[ -z "$relay_bin" ]] && relay_bin="$BUILD/outbox-relay"
fi
[[ -x "$relay_bin" ]] || { echo "run.sh: relay binary '$relay_bin' not found or not executable" >&2; exit 1; }
[[ -x "$tool" ]] || { echo "run.sh: bench_tool '$tool' not found" >&2; exit 1; }

# ---- the stack
started_stack=0
stack_down() {
    if [[ $started_stack -eq 1 ]]; then
        log "stopping the stack in $OUTBOX_STACK_DIR"
        bash "$ROOT/integration/stack.sh" down >&2 || true
    fi
}
trap stack_down EXIT
trap 'exit 130' INT TERM
if [[ $stack_from_env -eq 1 && ( -z "${OUTBOX_TEST_PG:-}" || -z "${OUTBOX_TEST_BROKERS:-}" ) ]]; then
    echo "run.sh: --stack-from-env: OUTBOX_TEST_PG and OUTBOX_TEST_BROKERS must be set" \
         '(eval "$(integration/stack.sh env)")' >&2
    exit 1
fi
if [[ -n "${OUTBOX_TEST_PG:-}" && -n "${OUTBOX_TEST_BROKERS:-}" ]]; then
    log "using the stack from the environment: OUTBOX_TEST_PG='$OUTBOX_TEST_PG' OUTBOX_TEST_BROKERS=$OUTBOX_TEST_BROKERS"
else
    export OUTBOX_STACK_DIR="${OUTBOX_STACK_DIR:-/tmp/outbox-relay-bench-stack}"
    export OUTBOX_STACK_PG_PORT="${OUTBOX_STACK_PG_PORT:-55434}"
    export OUTBOX_STACK_KAFKA_PORT="${OUTBOX_STACK_KAFKA_PORT:-19096}"
    export OUTBOX_STACK_KAFKA_CONTROLLER_PORT="${OUTBOX_STACK_KAFKA_CONTROLLER_PORT:-19097}"
    log "starting a stack in $OUTBOX_STACK_DIR (pg $OUTBOX_STACK_PG_PORT, kafka $OUTBOX_STACK_KAFKA_PORT)"
    started_stack=1
    bash "$ROOT/integration/stack.sh" up >&2
    eval "$(bash "$ROOT/integration/stack.sh" env)"
fi

# ---- Debezium jars (cached; the first run needs Maven Central)
dbz_home=""
dbz_skip=""
if [[ $debezium -eq 0 ]]; then
    dbz_skip="--no-debezium given"
elif dbz_home="$(bash "$ROOT/bench/debezium/fetch.sh")"; then
    :
else
    dbz_home=""
    if [[ $smoke -eq 1 ]]; then
        dbz_skip="the Debezium jars could not be fetched (see fetch.sh's message above)"
        log "######################################################################"
        log "# DEBEZIUM SKIPPED: $dbz_skip"
        log "######################################################################"
    else
        echo "run.sh: the Debezium jars could not be fetched; pass --no-debezium to run without them" >&2
        exit 1
    fi
fi

args=(--pg "$OUTBOX_TEST_PG" --brokers "$OUTBOX_TEST_BROKERS" --relay-bin "$relay_bin" --tool-bin "$tool"
      --out "$out" --command "$command_line")
[[ $smoke -eq 1 ]] && args+=(--smoke)
args+=("${relay_args[@]}")
[[ -n "$dbz_home" ]] && args+=(--debezium-home "$dbz_home")
[[ -n "$dbz_skip" ]] && args+=(--debezium-skipped "$dbz_skip")
rc=0
python3 -B "$ROOT/bench/bench.py" "${args[@]}" || rc=$?
exit "$rc"
