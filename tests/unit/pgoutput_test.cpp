// Round trips: messages built by the test-side encoder (tests/support), decoded
// by the real decoder, for every message type and every protocol version that
// has it.
#include "outbox_relay/pgoutput.hpp"

#include "../support/pgoutput_encoder.hpp"

#include <doctest/doctest.h>

#include <deque>
#include <string>
#include <vector>

using namespace outbox;
using namespace outbox::pgoutput;
using test::enc_column;

namespace {

// A decoder that keeps every payload it was given alive for the whole test:
// decoded views point into the payload, so a temporary one would dangle.
struct harness : decoder {
    using decoder::decoder;
    std::deque<std::string> kept;

    template <class T>
    T as(std::string payload) {
        kept.push_back(std::move(payload));
        auto r = decode(kept.back());
        if (r.has_error()) FAIL("decode failed: " << r.error().describe());
        REQUIRE(std::holds_alternative<T>(*r));
        return std::get<T>(*r);
    }
};

void check_tuple(const tuple_data& t, const std::vector<enc_column>& expect) {
    REQUIRE(t.columns.size() == expect.size());
    for (std::size_t i = 0; i < expect.size(); ++i) {
        CAPTURE(i);
        CHECK(static_cast<char>(t.columns[i].kind) == expect[i].kind);
        CHECK(t.columns[i].value == expect[i].value);
    }
}

const std::vector<enc_column> all_kinds = {
    {'t', "42"}, {'n', ""}, {'u', ""}, {'b', std::string("\x00\x01\xFF", 3)}, {'t', ""}, {'t', "héllo ✓"}};

constexpr int all_versions[] = {1, 2, 3, 4};

}  // namespace

TEST_CASE("round_trip_begin") {
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<begin>(test::enc_begin(0x1600000123ull, 767880000000000, 0xFFFFFFF0u));
        CHECK(m.final_lsn == lsn{0x1600000123ull});
        CHECK(m.commit_ts == 767880000000000);
        CHECK(m.xid == 0xFFFFFFF0u);
    }
}

TEST_CASE("round_trip_commit") {
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<commit>(test::enc_commit(0, 0x10ull, 0x38ull, -1));
        CHECK(m.flags == 0);
        CHECK(m.commit_lsn == lsn{0x10});
        CHECK(m.end_lsn == lsn{0x38});
        CHECK(m.commit_ts == -1);
    }
}

TEST_CASE("round_trip_origin") {
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<origin>(test::enc_origin(0xABCDEF, "upstream_a"));
        CHECK(m.commit_lsn == lsn{0xABCDEF});
        CHECK(m.name == "upstream_a");
    }
}

TEST_CASE("round_trip_relation") {
    std::vector<test::enc_rel_column> cols = {
        {1, "id", 20, -1}, {0, "payload", 3802, -1}, {0, "name", 1043, 68}, {1, "", 16501, -1}};
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        for (char ri : {'d', 'n', 'f', 'i'}) {
            auto m = d.as<relation>(test::enc_relation(std::nullopt, 16384, "public", "outbox", ri, cols));
            CHECK_FALSE(m.xid.has_value());
            CHECK(m.relid == 16384u);
            CHECK(m.nspname == "public");
            CHECK(m.relname == "outbox");
            CHECK(m.replica_identity == ri);
            REQUIRE(m.columns.size() == cols.size());
            for (std::size_t i = 0; i < cols.size(); ++i) {
                CAPTURE(i);
                CHECK(m.columns[i].flags == cols[i].flags);
                CHECK(m.columns[i].name == cols[i].name);
                CHECK(m.columns[i].type_oid == cols[i].type_oid);
                CHECK(m.columns[i].type_modifier == cols[i].typmod);
            }
        }
    }
}

TEST_CASE("round_trip_relation_without_columns_and_catalog_namespace") {
    harness d;
    auto m = d.as<relation>(test::enc_relation(std::nullopt, 1, "", "t", 'n', {}));
    CHECK(m.nspname.empty());
    CHECK(m.columns.empty());
}

TEST_CASE("round_trip_type") {
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<type>(test::enc_type(std::nullopt, 16501, "public", "outbox_status"));
        CHECK_FALSE(m.xid.has_value());
        CHECK(m.type_oid == 16501u);
        CHECK(m.nspname == "public");
        CHECK(m.typname == "outbox_status");
    }
}

TEST_CASE("round_trip_insert_all_column_kinds") {
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<insert>(test::enc_insert(std::nullopt, 77, all_kinds));
        CHECK_FALSE(m.xid.has_value());
        CHECK(m.relid == 77u);
        check_tuple(m.new_tuple, all_kinds);
    }
}

TEST_CASE("round_trip_insert_zero_columns") {
    harness d;
    auto m = d.as<insert>(test::enc_insert(std::nullopt, 5, {}));
    CHECK(m.new_tuple.columns.empty());
}

TEST_CASE("round_trip_update_without_old_tuple") {
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<update>(test::enc_update(std::nullopt, 77, 0, {}, all_kinds));
        CHECK(m.relid == 77u);
        CHECK(m.old_kind == 0);
        CHECK(m.old_tuple.columns.empty());
        check_tuple(m.new_tuple, all_kinds);
    }
}

TEST_CASE("round_trip_update_with_old_key") {
    std::vector<enc_column> key = {{'t', "60"}, {'n', ""}, {'n', ""}};
    std::vector<enc_column> row = {{'t', "61"}, {'t', "order"}, {'u', ""}};
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<update>(test::enc_update(std::nullopt, 9, 'K', key, row));
        CHECK(m.old_kind == 'K');
        check_tuple(m.old_tuple, key);
        check_tuple(m.new_tuple, row);
    }
}

TEST_CASE("round_trip_update_with_old_tuple") {
    std::vector<enc_column> before = {{'t', "62"}, {'t', "created"}};
    std::vector<enc_column> after = {{'t', "62"}, {'t', "shipped"}};
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<update>(test::enc_update(std::nullopt, 9, 'O', before, after));
        CHECK(m.old_kind == 'O');
        // Old and new tuples live in separate decoder storage: both stay readable.
        check_tuple(m.old_tuple, before);
        check_tuple(m.new_tuple, after);
    }
}

TEST_CASE("round_trip_delete_key_and_full") {
    std::vector<enc_column> key = {{'t', "61"}, {'n', ""}};
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        for (char kind : {'K', 'O'}) {
            auto m = d.as<delete_>(test::enc_delete(std::nullopt, 9, kind, key));
            CHECK(m.relid == 9u);
            CHECK(m.old_kind == kind);
            check_tuple(m.old_tuple, key);
        }
    }
}

TEST_CASE("round_trip_truncate") {
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<pgoutput::truncate>(test::enc_truncate(std::nullopt, 3, {16467, 16477, 1}));
        CHECK(m.options == 3);
        REQUIRE(m.relids.size() == 3u);
        CHECK(m.relids[0] == 16467u);
        CHECK(m.relids[1] == 16477u);
        CHECK(m.relids[2] == 1u);
        auto none = d.as<pgoutput::truncate>(test::enc_truncate(std::nullopt, 0, {}));
        CHECK(none.relids.empty());
    }
}

TEST_CASE("round_trip_message_transactional_and_not") {
    std::string content("bin\0ary\xFF", 8);
    for (int v : all_versions) {
        CAPTURE(v);
        harness d({v, false});
        auto t = d.as<message>(test::enc_message(std::nullopt, 1, 0x2C484B0, "outbox", content));
        CHECK(t.transactional());
        CHECK(t.message_lsn == lsn{0x2C484B0});
        CHECK(t.prefix == "outbox");
        CHECK(t.content == content);
        auto n = d.as<message>(test::enc_message(std::nullopt, 0, 5, "", ""));
        CHECK_FALSE(n.transactional());
        CHECK(n.prefix.empty());
        CHECK(n.content.empty());
    }
}

TEST_CASE("round_trip_stream_start_stop") {
    for (int v : {2, 3, 4}) {
        CAPTURE(v);
        harness d({v, false});
        CHECK_FALSE(d.in_stream());
        auto s = d.as<stream_start>(test::enc_stream_start(886, 1));
        CHECK(s.xid == 886u);
        CHECK(s.first_segment == 1);
        CHECK(d.in_stream());
        d.as<stream_stop>(test::enc_stream_stop());
        CHECK_FALSE(d.in_stream());
        auto s2 = d.as<stream_start>(test::enc_stream_start(886, 0));
        CHECK(s2.first_segment == 0);
    }
}

TEST_CASE("round_trip_xid_prefix_inside_stream") {
    const std::uint32_t xid = 889;  // a subtransaction's xid can differ from the stream's
    for (int v : {2, 3, 4}) {
        CAPTURE(v);
        harness d({v, false});
        d.as<stream_start>(test::enc_stream_start(888, 1));
        auto r = d.as<relation>(
            test::enc_relation(xid, 10, "public", "outbox", 'd', {{1, "id", 20, -1}, {0, "p", 25, -1}}));
        CHECK(r.xid == xid);
        CHECK(r.relid == 10u);
        REQUIRE(r.columns.size() == 2u);
        CHECK(r.columns[1].name == "p");
        auto y = d.as<type>(test::enc_type(xid, 16501, "public", "st"));
        CHECK(y.xid == xid);
        CHECK(y.typname == "st");
        auto i = d.as<insert>(test::enc_insert(xid, 10, all_kinds));
        CHECK(i.xid == xid);
        check_tuple(i.new_tuple, all_kinds);
        auto u = d.as<update>(test::enc_update(xid, 10, 'K', {{'t', "1"}}, {{'t', "2"}}));
        CHECK(u.xid == xid);
        check_tuple(u.old_tuple, {{'t', "1"}});
        check_tuple(u.new_tuple, {{'t', "2"}});
        auto del = d.as<delete_>(test::enc_delete(xid, 10, 'O', {{'t', "3"}}));
        CHECK(del.xid == xid);
        check_tuple(del.old_tuple, {{'t', "3"}});
        auto t = d.as<pgoutput::truncate>(test::enc_truncate(xid, 1, {10}));
        CHECK(t.xid == xid);
        CHECK(t.relids.size() == 1u);
        auto m = d.as<message>(test::enc_message(xid, 1, 99, "p", "c"));
        CHECK(m.xid == xid);
        CHECK(m.content == "c");
        d.as<stream_stop>(test::enc_stream_stop());
        // Outside the stream the same message has no prefix again.
        auto after = d.as<insert>(test::enc_insert(std::nullopt, 10, {{'t', "x"}}));
        CHECK_FALSE(after.xid.has_value());
        CHECK(after.relid == 10u);
    }
}

TEST_CASE("round_trip_stream_commit") {
    for (int v : {2, 3, 4}) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<stream_commit>(test::enc_stream_commit(886, 0, 0x4534528, 0x4534558, 12345));
        CHECK(m.xid == 886u);
        CHECK(m.flags == 0);
        CHECK(m.commit_lsn == lsn{0x4534528});
        CHECK(m.end_lsn == lsn{0x4534558});
        CHECK(m.commit_ts == 12345);
    }
}

TEST_CASE("round_trip_stream_abort_without_parallel") {
    for (int v : {2, 3, 4}) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<stream_abort>(test::enc_stream_abort(888, 889));
        CHECK(m.xid == 888u);
        CHECK(m.subxid == 889u);
        CHECK_FALSE(m.abort_lsn.has_value());
        CHECK_FALSE(m.abort_ts.has_value());
    }
}

TEST_CASE("round_trip_stream_abort_v4_parallel") {
    harness d({4, true});
    auto m = d.as<stream_abort>(test::enc_stream_abort(888, 888, true, 0x4654308, 777));
    CHECK(m.xid == 888u);
    CHECK(m.subxid == 888u);
    REQUIRE(m.abort_lsn.has_value());
    CHECK(*m.abort_lsn == lsn{0x4654308});
    REQUIRE(m.abort_ts.has_value());
    CHECK(*m.abort_ts == 777);
}

TEST_CASE("stream_abort_parallel_flag_ignored_below_v4") {
    // streaming=parallel needs protocol 4; below it the abort has no LSN/time.
    harness d({3, true});
    auto m = d.as<stream_abort>(test::enc_stream_abort(1, 2));
    CHECK_FALSE(m.abort_lsn.has_value());
}

TEST_CASE("round_trip_begin_prepare") {
    for (int v : {3, 4}) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<begin_prepare>(test::enc_begin_prepare(0x100, 0x200, 55, 893, "gid-commit"));
        CHECK(m.prepare_lsn == lsn{0x100});
        CHECK(m.end_lsn == lsn{0x200});
        CHECK(m.prepare_ts == 55);
        CHECK(m.xid == 893u);
        CHECK(m.gid == "gid-commit");
    }
}

TEST_CASE("round_trip_prepare_and_stream_prepare") {
    for (int v : {3, 4}) {
        CAPTURE(v);
        harness d({v, false});
        auto p = d.as<prepare>(test::enc_prepare('P', 0, 0x100, 0x200, 55, 893, "g1"));
        CHECK(p.prepare_lsn == lsn{0x100});
        CHECK(p.end_lsn == lsn{0x200});
        CHECK(p.prepare_ts == 55);
        CHECK(p.xid == 893u);
        CHECK(p.gid == "g1");
        // 'p' decodes to its own alternative, not to prepare.
        auto sp = d.as<stream_prepare>(test::enc_prepare('p', 0, 0x300, 0x400, 66, 895, "g2"));
        CHECK(sp.prepare_lsn == lsn{0x300});
        CHECK(sp.end_lsn == lsn{0x400});
        CHECK(sp.xid == 895u);
        CHECK(sp.gid == "g2");
    }
}

TEST_CASE("round_trip_commit_prepared") {
    for (int v : {3, 4}) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<commit_prepared>(test::enc_commit_prepared(0, 0x4B16670, 0x4B166B0, 9, 893, "g"));
        CHECK(m.commit_lsn == lsn{0x4B16670});
        CHECK(m.end_lsn == lsn{0x4B166B0});
        CHECK(m.commit_ts == 9);
        CHECK(m.xid == 893u);
        CHECK(m.gid == "g");
    }
}

TEST_CASE("round_trip_rollback_prepared") {
    for (int v : {3, 4}) {
        CAPTURE(v);
        harness d({v, false});
        auto m = d.as<rollback_prepared>(
            test::enc_rollback_prepared(0, 0x4B16868, 0x4B168A8, 10, 11, 894, "gid-rollback"));
        CHECK(m.prepare_end_lsn == lsn{0x4B16868});
        CHECK(m.rollback_end_lsn == lsn{0x4B168A8});
        CHECK(m.prepare_ts == 10);
        CHECK(m.rollback_ts == 11);
        CHECK(m.xid == 894u);
        CHECK(m.gid == "gid-rollback");
    }
}

TEST_CASE("stream_tags_not_in_version_1") {
    for (const std::string& p : {test::enc_stream_start(1, 1), test::enc_stream_stop(),
                                 test::enc_stream_commit(1, 0, 1, 2, 3), test::enc_stream_abort(1, 1)}) {
        CAPTURE(p[0]);
        harness d({1, false});
        auto r = d.decode(p);
        REQUIRE(r.has_error());
        CHECK(r.error() == errc::tag_not_in_version);
        CHECK(r.error().tag == p[0]);
        CHECK(r.error().field == "tag");
        CHECK_FALSE(d.in_stream());
    }
}

TEST_CASE("two_phase_tags_not_in_versions_1_and_2") {
    const std::string msgs[] = {test::enc_begin_prepare(1, 2, 3, 4, "g"), test::enc_prepare('P', 0, 1, 2, 3, 4, "g"),
                                test::enc_prepare('p', 0, 1, 2, 3, 4, "g"),
                                test::enc_commit_prepared(0, 1, 2, 3, 4, "g"),
                                test::enc_rollback_prepared(0, 1, 2, 3, 4, 5, "g")};
    for (int v : {1, 2}) {
        for (const auto& p : msgs) {
            CAPTURE(v);
            CAPTURE(p[0]);
            harness d({v, false});
            auto r = d.decode(p);
            REQUIRE(r.has_error());
            CHECK(r.error() == errc::tag_not_in_version);
        }
    }
}

TEST_CASE("decoded_values_are_views_into_the_payload") {
    decoder d;
    std::string payload = test::enc_insert(std::nullopt, 1, {{'t', "value-1"}, {'b', "value-2"}});
    auto r = d.decode(payload);
    REQUIRE(r.has_value());
    const auto& m = std::get<insert>(*r);
    REQUIRE(m.new_tuple.columns.size() == 2u);
    // Column values point at their bytes inside the payload: no copy.
    CHECK(m.new_tuple.columns[0].value.data() == payload.data() + payload.find("value-1"));
    CHECK(m.new_tuple.columns[1].value.data() == payload.data() + payload.find("value-2"));
    std::string rel = test::enc_relation(std::nullopt, 1, "public", "outbox", 'd', {{1, "id", 20, -1}});
    auto rr = d.decode(rel);
    REQUIRE(rr.has_value());
    CHECK(std::get<relation>(*rr).relname.data() == rel.data() + rel.find("outbox"));
}

TEST_CASE("decoder_reuses_column_storage_once_warm") {
    // No allocation per message on the hot path: after the first Insert of a
    // given width the column array is the same buffer every time.
    harness d;
    std::vector<enc_column> cols(7, enc_column{'t', "x"});
    std::string p1 = test::enc_insert(std::nullopt, 1, cols);
    const tuple_column* first = d.as<insert>(p1).new_tuple.columns.data();
    for (int i = 0; i < 100; ++i) {
        cols[0].value = std::to_string(i);
        std::string p = test::enc_insert(std::nullopt, 1, cols);
        auto m = d.as<insert>(p);
        CHECK(m.new_tuple.columns.data() == first);
        CHECK(m.new_tuple.columns[0].value == std::to_string(i));
    }
    // A narrower tuple reuses the same buffer too.
    std::string narrow = test::enc_insert(std::nullopt, 1, {{'t', "a"}});
    CHECK(d.as<insert>(narrow).new_tuple.columns.data() == first);
}

TEST_CASE("decoder_options_are_kept") {
    harness d({4, true});
    CHECK(d.options().proto_version == 4);
    CHECK(d.options().streaming_parallel);
}
