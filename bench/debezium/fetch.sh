#!/usr/bin/env bash
# bench/debezium/fetch.sh — resolve Debezium 3.6.1 and Kafka Connect 4.3.0 from
# Maven Central once, into ~/.cache/outbox-relay/debezium-3.6.1/ (XDG_CACHE_HOME
# respected):
#   jars/     the Connect worker's classpath (connect-runtime, connect-json, log4j2)
#   plugins/  plugin.path: the unpacked debezium-connector-postgres plugin archive
#             (connector + Outbox EventRouter + PostgreSQL JDBC driver)
# A marker holds the hash of pom.xml, so a warm cache needs no network and an
# edited pom re-resolves. Prints the cache dir on stdout; exits non-zero (and
# says why on stderr) when Java 17, Maven or the network is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay/debezium-3.6.1"
want="$(sha256sum "$pom" | cut -d' ' -f1)"

if [[ -f "$cache/.complete" && "$(cat "$cache/.complete")" == "$want" ]]; then
    echo "$cache"
    exit 0
fi
command -v java >/dev/null || { echo "fetch.sh: java not found (Java 17: integration/install-deps.sh)" >&2; exit 1; }
javav="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
[[ "${javav:-0}" -ge 17 ]] || { echo "fetch.sh: Kafka Connect 4.3 needs Java 17+, found ${javav:-none}" >&2; exit 1; }
command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (integration/install-deps.sh)" >&2; exit 1; }

echo "fetch.sh: resolving Debezium 3.6.1.Final + Connect 4.3.0 from Maven Central into $cache" >&2
tmp="$cache.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/jars" "$tmp/plugins"
trap 'rm -rf "$tmp"' EXIT
# Maven 3.8's -q still prints bare ANSI reset codes; strip them.
if ! timeout 600 mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp/jars" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2; then
    echo "fetch.sh: maven could not resolve the Debezium / Connect jars" >&2
    exit 1
fi
archive="$tmp/jars/debezium-connector-postgres-3.6.1.Final-plugin.tar.gz"
[[ -f "$archive" ]] || { echo "fetch.sh: plugin archive missing after mvn" >&2; exit 1; }
tar -xzf "$archive" -C "$tmp/plugins"
rm -f "$archive"
[[ -f "$tmp/plugins/debezium-connector-postgres/debezium-connector-postgres-3.6.1.Final.jar" ]] \
    || { echo "fetch.sh: unexpected plugin archive layout" >&2; exit 1; }
ls "$tmp/jars"/connect-runtime-4.3.0.jar >/dev/null
rm -rf "$cache"
mkdir -p "$(dirname "$cache")"
mv "$tmp" "$cache"
trap - EXIT
printf '%s\n' "$want" >"$cache/.complete"
echo "$cache"
