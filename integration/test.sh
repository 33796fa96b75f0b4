#!/usr/bin/env bash
# integration/test.sh — THE test command of outbox-relay (README; .ci/run calls it).
#
#   1. install missing Debian packages            (integration/install-deps.sh)
#   2. Release build of everything                 build/
#   3. ASan+UBSan build, unit tests under it        build-asan/
#   4. start a local Postgres + Kafka stack         (integration/stack.sh; always torn down on exit)
#      PostgreSQL 15 (Debian) + one Kafka 3.9.1 node
#   5. a second stack: PostgreSQL 18 + Kafka 4.4.0, 3 nodes (the version matrix)
#   6. side by side: ctest -L 'unit|component|integration' against the first stack,
#      ctest -L matrix against the second (the relay scenarios, the fault suite and
#      the version tests: label `matrix`, integration/CMakeLists.txt)
#   7. libFuzzer targets, OUTBOX_FUZZ_SECONDS each  build-fuzz/ (when clang is installed)
#
# Every step runs even if an earlier independent one failed, so one run shows all
# problems; the exit status is non-zero if any step failed. A summary ends the output.
#
# Each stack gets its own state dir and ports (not the defaults of a developer's
# `stack.sh up`), so running the suite never tears down a stack someone is using:
#   OUTBOX_TEST_STACK_DIR (default /tmp/outbox-relay-test-stack), OUTBOX_TEST_PG_PORT
#   (55433), OUTBOX_TEST_KAFKA_PORT (19094), OUTBOX_TEST_KAFKA_CONTROLLER_PORT (19095).
# The matrix stack derives its own from those unless set: OUTBOX_TEST_MATRIX_STACK_DIR
#   (<stack dir>-matrix), OUTBOX_TEST_MATRIX_PG_PORT (PG port + 1),
#   OUTBOX_TEST_MATRIX_KAFKA_PORT (Kafka port + 10; nodes 2 and 3 at +20, +30),
#   OUTBOX_TEST_MATRIX_KAFKA_CONTROLLER_PORT (controller port + 10, likewise), and its
#   versions: OUTBOX_TEST_MATRIX_PG_VERSION (18), OUTBOX_TEST_MATRIX_KAFKA_VERSION
#   (4.4.0), OUTBOX_TEST_MATRIX_KAFKA_NODES (3).
# Other knobs: OUTBOX_FUZZ_SECONDS (30), OUTBOX_TEST_JOBS (nproc), and the build dirs
# OUTBOX_TEST_BUILD_DIR (build), OUTBOX_TEST_ASAN_DIR (build-asan),
# OUTBOX_TEST_FUZZ_DIR (build-fuzz), relative to the repo root or absolute.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
JOBS="${OUTBOX_TEST_JOBS:-$(nproc)}"
FUZZ_SECONDS="${OUTBOX_FUZZ_SECONDS:-30}"
B="${OUTBOX_TEST_BUILD_DIR:-build}"
BA="${OUTBOX_TEST_ASAN_DIR:-build-asan}"
BF="${OUTBOX_TEST_FUZZ_DIR:-build-fuzz}"

# The two stacks, as the OUTBOX_STACK_* settings stack.sh reads. Every stack.sh call
# below goes through with_stack, so neither inherits the other's settings.
PRIMARY_DIR="${OUTBOX_TEST_STACK_DIR:-/tmp/outbox-relay-test-stack}"
PRIMARY_PG_PORT="${OUTBOX_TEST_PG_PORT:-55433}"
PRIMARY_KAFKA_PORT="${OUTBOX_TEST_KAFKA_PORT:-19094}"
PRIMARY_CONTROLLER_PORT="${OUTBOX_TEST_KAFKA_CONTROLLER_PORT:-19095}"
primary_stack=(
    OUTBOX_STACK_DIR="$PRIMARY_DIR"
    OUTBOX_STACK_PG_PORT="$PRIMARY_PG_PORT"
    OUTBOX_STACK_KAFKA_PORT="$PRIMARY_KAFKA_PORT"
    OUTBOX_STACK_KAFKA_CONTROLLER_PORT="$PRIMARY_CONTROLLER_PORT"
    OUTBOX_STACK_PG_VERSION=15
    OUTBOX_STACK_KAFKA_VERSION=3.9.1
    OUTBOX_STACK_KAFKA_NODES=1
)
MATRIX_PG_VERSION="${OUTBOX_TEST_MATRIX_PG_VERSION:-18}"
MATRIX_KAFKA_VERSION="${OUTBOX_TEST_MATRIX_KAFKA_VERSION:-4.4.0}"
MATRIX_KAFKA_NODES="${OUTBOX_TEST_MATRIX_KAFKA_NODES:-3}"
matrix_stack=(
    OUTBOX_STACK_DIR="${OUTBOX_TEST_MATRIX_STACK_DIR:-${PRIMARY_DIR%/}-matrix}"
    OUTBOX_STACK_PG_PORT="${OUTBOX_TEST_MATRIX_PG_PORT:-$((PRIMARY_PG_PORT + 1))}"
    OUTBOX_STACK_KAFKA_PORT="${OUTBOX_TEST_MATRIX_KAFKA_PORT:-$((PRIMARY_KAFKA_PORT + 10))}"
    OUTBOX_STACK_KAFKA_CONTROLLER_PORT="${OUTBOX_TEST_MATRIX_KAFKA_CONTROLLER_PORT:-$((PRIMARY_CONTROLLER_PORT + 10))}"
    OUTBOX_STACK_PG_VERSION="$MATRIX_PG_VERSION"
    OUTBOX_STACK_KAFKA_VERSION="$MATRIX_KAFKA_VERSION"
    OUTBOX_STACK_KAFKA_NODES="$MATRIX_KAFKA_NODES"
)
MATRIX_NAME="PG$MATRIX_PG_VERSION+Kafka $MATRIX_KAFKA_VERSION x$MATRIX_KAFKA_NODES"
STACK="$ROOT/integration/stack.sh"

# with_stack primary|matrix CMD... — CMD with that stack's OUTBOX_STACK_* settings.
with_stack() {
    local which="$1"
    shift
    if [[ "$which" == primary ]]; then
        env "${primary_stack[@]}" "$@"
    else
        env "${matrix_stack[@]}" "$@"
    fi
}

declare -a summary=()
failed=0
suite_start=$SECONDS

banner() { printf '\n==================== %s ====================\n' "$*"; }

# step NAME CMD... — run one step, record PASS/FAIL and its duration, never abort.
step() {
    local name="$1" start=$SECONDS rc=0
    shift
    banner "$name"
    "$@" || rc=$?
    local took=$((SECONDS - start))
    if [[ $rc -eq 0 ]]; then
        summary+=("$(printf 'PASS  %-44s %5ss' "$name" "$took")")
    else
        summary+=("$(printf 'FAIL  %-44s %5ss  (exit %s)' "$name" "$took" "$rc")")
        failed=1
    fi
    return "$rc"
}

skip() {
    summary+=("$(printf 'SKIP  %-44s        %s' "$1" "$2")")
    printf '\n[skip] %s: %s\n' "$1" "$2"
}

print_summary() {
    banner "summary ($((SECONDS - suite_start))s)"
    printf '%s\n' "${summary[@]}"
    if [[ $failed -eq 0 ]]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
}

stack_down() {  # primary|matrix
    with_stack "$1" bash "$STACK" down >/dev/null 2>&1 || with_stack "$1" bash "$STACK" down
}

# Background ctest runs (ctest_bg below): pids, step names, logs, start times.
declare -a bg_pids=() bg_names=() bg_logs=() bg_starts=()

kill_tree() {  # PID — the process and everything below it
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}

cleanup() {
    local rc=$? p
    for p in "${bg_pids[@]}"; do kill_tree "$p"; done
    # Whatever happened (failure, Ctrl-C, a test that hung), leave nothing running.
    stack_down primary || true
    stack_down matrix || true
    print_summary
    if [[ $failed -ne 0 && $rc -eq 0 ]]; then rc=1; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

configure_build() {  # DIR TARGETS... -- CMAKE_ARGS...
    local dir="$1"
    shift
    local targets=()
    while [[ $# -gt 0 && "$1" != -- ]]; do targets+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    mkdir -p "$dir"
    cmake -S "$ROOT" -B "$dir" -G Ninja "$@" >"$dir/configure.log" 2>&1 \
        || { cat "$dir/configure.log"; return 1; }
    if [[ "${targets[*]}" == "@fuzz" ]]; then
        # Only the fuzz_* executables: the rest of the tree is built (with gcc) in build/.
        mapfile -t targets < <(ninja -C "$dir" -t targets all | sed -n 's/^\(fuzz_[A-Za-z0-9_]*\): phony$/\1/p')
        if [[ ${#targets[@]} -eq 0 ]]; then
            echo "no fuzz_* targets defined (fuzz/CMakeLists.txt has none yet)"
            return 0
        fi
        echo "fuzz targets: ${targets[*]}"
    fi
    ninja -C "$dir" -j"$JOBS" "${targets[@]}"
}

run_fuzzers() {
    local fuzzers=() f name corpus rc=0
    for f in "$BF"/fuzz/fuzz_*; do
        [[ -f "$f" && -x "$f" ]] && fuzzers+=("$f")
    done
    if [[ ${#fuzzers[@]} -eq 0 ]]; then
        echo "no fuzz targets in $BF/fuzz/ (nothing to run)"
        return 0
    fi
    mkdir -p "$BF/artifacts"
    for f in "${fuzzers[@]}"; do
        name="$(basename "$f")"
        # fuzz/CMakeLists.txt copies seeds to $BF/fuzz/corpus/<name without fuzz_>.
        corpus="$BF/fuzz/corpus/${name#fuzz_}"
        mkdir -p "$corpus"
        echo "fuzz: $name for ${FUZZ_SECONDS}s, corpus $corpus"
        # libFuzzer exits non-zero on a crash, leak, timeout or sanitizer report and
        # writes the input to $BF/artifacts/<name>-crash-<sha1>.
        if ! "$f" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$BF/artifacts/$name-" "$corpus" 2>"$BF/$name.log"; then
            tail -n 60 "$BF/$name.log"
            echo "fuzz: $name FAILED (full log $BF/$name.log, inputs in $BF/artifacts/)"
            rc=1
        else
            grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$BF/$name.log" || true
            echo "fuzz: $name ok"
        fi
    done
    return "$rc"
}

# ---------------------------------------------------------------- steps

step "install deps" bash integration/install-deps.sh || exit 1

build_ok=1
step "build Release ($B/)" configure_build "$B" all -- -DCMAKE_BUILD_TYPE=Release || build_ok=0

# A unity build with line tables only (-g1: enough for sanitizer stack traces)
# compiles the ASan tree in about 40 % of the time; build/ stays a normal build,
# so a file that misses an include still fails there.
asan_ok=1
step "build ASan+UBSan unit_tests" configure_build "$BA" unit_tests -- \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOUTBOX_SANITIZE=ON -DOUTBOX_BENCH=OFF \
    -DCMAKE_UNITY_BUILD=ON -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" || asan_ok=0
if [[ $asan_ok -eq 1 ]]; then
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" ASAN_OPTIONS="detect_leaks=1" \
        step "unit tests under ASan+UBSan" ctest --test-dir "$BA" --output-on-failure -L unit -j"$JOBS" || true
else
    skip "unit tests under ASan+UBSan" "ASan build failed"
fi

# stack_up primary|matrix — a fresh stack: whatever a killed earlier run left in this
# state dir is removed first, so no leftover state leaks into the results.
stack_up() {
    stack_down "$1" && with_stack "$1" bash "$STACK" up
}

# run_ctest primary|matrix CTEST_ARGS... — ctest with that stack's test environment
# (OUTBOX_TEST_PG, OUTBOX_TEST_BROKERS, ... from `stack.sh env`), in a subshell so the
# other stack's run does not see it. Unit and component tests run in parallel;
# integration tests hold RESOURCE_LOCK stack, so ctest runs them one at a time.
# --timeout applies to tests without their own TIMEOUT property.
run_ctest() {
    local which="$1"
    shift
    (
        eval "$(with_stack "$which" bash "$STACK" env)"
        echo "OUTBOX_TEST_PG=$OUTBOX_TEST_PG OUTBOX_TEST_BROKERS=$OUTBOX_TEST_BROKERS" \
            "pg=$OUTBOX_TEST_PG_VERSION kafka=$OUTBOX_TEST_KAFKA_VERSION nodes=$OUTBOX_TEST_KAFKA_NODES"
        ctest --test-dir "$B" --output-on-failure -j"$JOBS" --timeout 600 "$@"
    )
}

# The two stacks run side by side, each running its own tests one at a time
# (RESOURCE_LOCK stack): they share no port, state dir, slot or topic (every
# scenario names its objects after its pid), and most of a scenario's time is
# waiting for a condition, so together they take little longer than the slower
# one alone. Each ctest writes to its own log, printed whole once both are done.
stack_ok=1
step "stack up: PG15+Kafka 3.9.1 x1" stack_up primary || stack_ok=0
# The same relay scenarios and fault suite on the newest servers users run, on a real
# 3-broker cluster (RF 3, min.insync.replicas 2).
matrix_ok=1
step "stack up: $MATRIX_NAME" stack_up matrix || matrix_ok=0

# ctest_bg NAME LOG primary|matrix CTEST_ARGS... — one ctest in the background;
# its pid goes to bg_pids, its step name and log to bg_names/bg_logs.
ctest_bg() {
    local name="$1" log="$2"
    shift 2
    # The subshell notes when its ctest ended: the runs are waited for in order.
    rm -f "$log.end"
    ( rc=0; run_ctest "$@" || rc=$?; echo "$SECONDS" >"$log.end"; exit "$rc" ) >"$log" 2>&1 &
    bg_pids+=("$!")
    bg_names+=("$name")
    bg_logs+=("$log")
    bg_starts+=("$SECONDS")
    echo "started: $name (log $log)"
}

banner "ctest on both stacks, side by side"
if [[ $build_ok -eq 1 && $stack_ok -eq 1 ]]; then
    ctest_bg "ctest unit|component|integration" "$B/ctest-primary.log" primary -L 'unit|component|integration'
else
    skip "ctest unit|component|integration" "build or stack failed"
fi
if [[ $build_ok -eq 1 && $matrix_ok -eq 1 ]]; then
    ctest_bg "ctest matrix on $MATRIX_NAME" "$B/ctest-matrix.log" matrix -L matrix
else
    skip "ctest matrix on $MATRIX_NAME" "build or stack failed"
fi
for i in "${!bg_pids[@]}"; do
    rc=0
    wait "${bg_pids[$i]}" || rc=$?
    took=$(( $(cat "${bg_logs[$i]}.end" 2>/dev/null || echo "$SECONDS") - bg_starts[i] ))
    banner "${bg_names[$i]} (log ${bg_logs[$i]})"
    cat "${bg_logs[$i]}"
    if [[ $rc -eq 0 ]]; then
        summary+=("$(printf 'PASS  %-44s %5ss' "${bg_names[$i]}" "$took")")
    else
        summary+=("$(printf 'FAIL  %-44s %5ss  (exit %s)' "${bg_names[$i]}" "$took" "$rc")")
        failed=1
    fi
done
stack_down primary || true
stack_down matrix || true

if command -v clang++ >/dev/null; then
    if CXX=clang++ step "build fuzz targets ($BF/)" configure_build "$BF" @fuzz -- \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOUTBOX_FUZZ=ON -DOUTBOX_BENCH=OFF; then
        step "fuzz ${FUZZ_SECONDS}s per target" run_fuzzers || true
    fi
else
    skip "fuzz" "clang++ not installed"
fi
