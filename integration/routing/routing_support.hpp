#pragma once
// Helpers of the routing scenarios (integration/routing/4N_*.cpp): the Java
// client's partitioner, written from its definition, so a test can say which
// partition a key must land on; relay arguments without the scenario's
// default routing; and small record lookups.
#include "faults_support.hpp"
#include "harness.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace outbox::it::routing {

using namespace outbox::it::faults;

// Kafka's Utils.murmur2 (seed 0x9747b28c), as the Java producer's default
// partitioner hashes a key: partition = (murmur2(key) & 0x7fffffff) % n.
inline std::uint32_t java_murmur2(std::string_view data) {
    const std::uint32_t m = 0x5bd1e995;
    const int r = 24;
    const auto len = static_cast<std::uint32_t>(data.size());
    std::uint32_t h = 0x9747b28cu ^ len;
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    const std::uint32_t blocks = len / 4;
    for (std::uint32_t i = 0; i < blocks; ++i) {
        std::uint32_t k = std::uint32_t(p[4 * i]) | std::uint32_t(p[4 * i + 1]) << 8 |
                          std::uint32_t(p[4 * i + 2]) << 16 | std::uint32_t(p[4 * i + 3]) << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const unsigned char* tail = p + 4 * blocks;
    switch (len % 4) {
        case 3: h ^= std::uint32_t(tail[2]) << 16; [[fallthrough]];
        case 2: h ^= std::uint32_t(tail[1]) << 8; [[fallthrough]];
        case 1:
            h ^= std::uint32_t(tail[0]);
            h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

inline int java_partition(std::string_view key, int partitions) {
    return static_cast<int>((java_murmur2(key) & 0x7fffffffu) % static_cast<std::uint32_t>(partitions));
}

// `run` with the scenario's connection, slot and publication only: the
// caller gives every routing option.
inline std::vector<std::string> base_args(const scenario& sc, const std::vector<std::string>& extra) {
    std::vector<std::string> a{"run",  "--postgres", env().pg,          "--brokers",     env().brokers,
                               "--slot", sc.slot(),  "--publication", sc.publication()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
}

// A SQL string literal (standard_conforming_strings: quotes doubled).
inline std::string sql_quote(std::string_view s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
    return out + "'";
}

inline bool has_null_header(const outbox::it::kafka_record& r, std::string_view name) {
    return std::find(r.null_headers.begin(), r.null_headers.end(), name) != r.null_headers.end();
}

// The record whose header "id" is `id`; nullptr when none.
inline const outbox::it::kafka_record* by_id(const std::vector<outbox::it::kafka_record>& recs, const std::string& id) {
    for (const auto& r : recs)
        if (r.header("id") == std::optional<std::string>(id)) return &r;
    return nullptr;
}

// How many headers named `name` the record has.
inline std::size_t header_count(const outbox::it::kafka_record& r, std::string_view name) {
    return static_cast<std::size_t>(
        std::count_if(r.headers.begin(), r.headers.end(), [&](const auto& h) { return h.first == name; }));
}

}  // namespace outbox::it::routing
