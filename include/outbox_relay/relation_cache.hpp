#pragma once
// relid -> relation, as last announced by a pgoutput Relation message. The
// server resends Relation on every new connection and after schema changes;
// each one replaces the entry. Owns copies of the names (the decoder's views
// die with the payload).
#include "outbox_relay/errc.hpp"
#include "outbox_relay/pgoutput.hpp"

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace outbox {

struct cached_column {
    std::string name;
    std::uint32_t type_oid = 0;
    std::int32_t type_modifier = -1;
    bool key = false;
};

struct cached_relation {
    std::uint32_t relid = 0;
    std::string nspname;  // "pg_catalog" when the message said ""
    std::string relname;
    char replica_identity = 'd';
    std::vector<cached_column> columns;
    std::uint64_t generation = 0;  // bumped on every replacement (lets users cache lookups)

    // Index of the column named `name`, or -1.
    int column_index(std::string_view name) const noexcept;
};

class relation_cache {
public:
    // Inserts or replaces the entry for rel.relid. Returns the stored entry
    // (valid until the next apply() for the same relid or clear()).
    const cached_relation& apply(const pgoutput::relation& rel);

    // The entry for relid, or nullptr when none was announced.
    const cached_relation* find(std::uint32_t relid) const noexcept;

    // Checks that `t` can be read against relid's relation: errc::unknown_relation
    // when relid is unknown, errc::column_count_mismatch when the counts differ.
    result<const cached_relation*> check(std::uint32_t relid, const pgoutput::tuple_data& t) const noexcept;

    void clear() noexcept { map_.clear(); }
    std::size_t size() const noexcept { return map_.size(); }

private:
    std::unordered_map<std::uint32_t, cached_relation> map_;
    std::uint64_t next_generation_ = 1;
};

}  // namespace outbox
