#include "outbox_relay/relation_cache.hpp"

#include <doctest/doctest.h>

#include <array>

using namespace outbox;

namespace {
pgoutput::relation make_rel(std::uint32_t relid, std::string_view nsp, std::string_view name, char ri,
                            std::span<const pgoutput::relation_column> cols) {
    return pgoutput::relation{std::nullopt, relid, nsp, name, ri, cols};
}
const std::array<pgoutput::relation_column, 2> two_cols{{{1, "id", 20, -1}, {0, "payload", 3802, -1}}};
const std::array<pgoutput::relation_column, 3> three_cols{
    {{1, "id", 20, -1}, {0, "payload", 3802, -1}, {0, "trace_id", 25, 40}}};
}  // namespace

TEST_CASE("relation_cache_apply_and_find") {
    relation_cache c;
    CHECK(c.find(7) == nullptr);
    const auto& e = c.apply(make_rel(7, "public", "outbox", 'd', two_cols));
    CHECK(e.relid == 7u);
    CHECK(e.nspname == "public");
    CHECK(e.relname == "outbox");
    CHECK(e.replica_identity == 'd');
    REQUIRE(e.columns.size() == 2u);
    CHECK(e.columns[0].name == "id");
    CHECK(e.columns[0].key);
    CHECK(e.columns[1].type_oid == 3802u);
    CHECK_FALSE(e.columns[1].key);
    CHECK(c.find(7) == &e);
    CHECK(c.size() == 1u);
}

TEST_CASE("relation_cache_owns_copies_of_names") {
    relation_cache c;
    std::string nsp = "public", name = "outbox", col = "id";
    std::array<pgoutput::relation_column, 1> cols{{{1, col, 20, -1}}};
    c.apply(make_rel(1, nsp, name, 'd', cols));
    // The decoder's views die with the payload; the cache must not care.
    nsp.assign("XXXXXX");
    name.assign("YYYYYY");
    col.assign("ZZ");
    CHECK(c.find(1)->nspname == "public");
    CHECK(c.find(1)->relname == "outbox");
    CHECK(c.find(1)->columns[0].name == "id");
}

TEST_CASE("relation_cache_empty_nspname_means_pg_catalog") {
    relation_cache c;
    CHECK(c.apply(make_rel(3, "", "pg_thing", 'n', two_cols)).nspname == "pg_catalog");
}

TEST_CASE("relation_replaced_mid_stream") {
    relation_cache c;
    auto gen1 = c.apply(make_rel(7, "public", "outbox", 'd', two_cols)).generation;
    const auto& e = c.apply(make_rel(7, "public", "outbox", 'f', three_cols));
    CHECK(e.generation > gen1);
    CHECK(e.replica_identity == 'f');
    REQUIRE(e.columns.size() == 3u);  // replaced, not merged
    CHECK(e.columns[2].name == "trace_id");
    CHECK(e.columns[2].type_modifier == 40);
    CHECK(c.size() == 1u);
}

TEST_CASE("relation_cache_check_unknown_relation") {
    relation_cache c;
    std::array<pgoutput::tuple_column, 2> t{};
    auto r = c.check(42, pgoutput::tuple_data{t});
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::unknown_relation);
}

TEST_CASE("relation_cache_check_column_count_mismatch") {
    relation_cache c;
    c.apply(make_rel(7, "public", "outbox", 'd', two_cols));
    std::array<pgoutput::tuple_column, 3> t3{};
    auto bad = c.check(7, pgoutput::tuple_data{t3});
    REQUIRE(bad.has_error());
    CHECK(bad.error() == errc::column_count_mismatch);
    std::array<pgoutput::tuple_column, 2> t2{};
    auto ok = c.check(7, pgoutput::tuple_data{t2});
    REQUIRE(ok.has_value());
    CHECK(*ok == c.find(7));
}

TEST_CASE("relation_cache_column_index") {
    relation_cache c;
    const auto& e = c.apply(make_rel(7, "public", "outbox", 'd', three_cols));
    CHECK(e.column_index("id") == 0);
    CHECK(e.column_index("trace_id") == 2);
    CHECK(e.column_index("nope") == -1);
}

TEST_CASE("relation_cache_clear") {
    relation_cache c;
    c.apply(make_rel(1, "a", "b", 'd', two_cols));
    c.apply(make_rel(2, "a", "c", 'd', two_cols));
    CHECK(c.size() == 2u);
    c.clear();
    CHECK(c.size() == 0u);
    CHECK(c.find(1) == nullptr);
}
