#pragma once
// Built-in PostgreSQL type OIDs (src/include/catalog/pg_type.dat): fixed
// across server versions. The mappers read a column differently by its type.

#include <cstdint>

namespace outbox::pg_oid {

inline constexpr std::uint32_t bool_ = 16, bytea = 17, int8 = 20, int2 = 21, text = 25, int4 = 23, oid = 26,
                               json = 114, float4 = 700, float8 = 701, date = 1082, timestamp = 1114,
                               timestamptz = 1184, numeric = 1700, jsonb = 3802;

}  // namespace outbox::pg_oid
