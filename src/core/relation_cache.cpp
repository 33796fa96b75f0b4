#include "outbox_relay/relation_cache.hpp"

namespace outbox {

int cached_relation::column_index(std::string_view name) const noexcept {
    for (std::size_t i = 0; i < columns.size(); ++i)
        if (columns[i].name == name) return static_cast<int>(i);
    return -1;
}

const cached_relation& relation_cache::apply(const pgoutput::relation& rel) {
    // Replace, never merge: after ALTER TABLE the server resends the whole
    // Relation, and tuples that follow are laid out by it alone.
    cached_relation& e = map_[rel.relid];
    e.relid = rel.relid;
    // pgoutput sends "" for pg_catalog (logicalrep_write_namespace).
    e.nspname = rel.nspname.empty() ? std::string("pg_catalog") : std::string(rel.nspname);
    e.relname = std::string(rel.relname);
    e.replica_identity = rel.replica_identity;
    e.columns.clear();
    e.columns.reserve(rel.columns.size());
    for (const auto& c : rel.columns)
        e.columns.push_back(cached_column{std::string(c.name), c.type_oid, c.type_modifier, (c.flags & 1) != 0});
    e.generation = next_generation_++;
    return e;
}

const cached_relation* relation_cache::find(std::uint32_t relid) const noexcept {
    auto it = map_.find(relid);
    return it == map_.end() ? nullptr : &it->second;
}

result<const cached_relation*> relation_cache::check(std::uint32_t relid,
                                                     const pgoutput::tuple_data& t) const noexcept {
    const cached_relation* e = find(relid);
    if (e == nullptr) return errc::unknown_relation;
    if (e->columns.size() != t.columns.size()) return errc::column_count_mismatch;
    return e;
}

}  // namespace outbox
