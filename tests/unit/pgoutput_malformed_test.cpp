// Malformed pgoutput input: each case is its own named test and checks the
// error code and the error site (tag, field, offset). The loop tests feed
// every truncation and many corruptions of a sample of each message kind; the
// suite runs under ASan+UBSan, so "never a crash" is checked there too.
#include "outbox_relay/pgoutput.hpp"

#include "../support/pgoutput_encoder.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <string_view>
#include <vector>

using namespace outbox;
using namespace outbox::pgoutput;

namespace {

struct failure {
    errc code;
    error site;  // tag, field and offset of the failure
};

failure expect_error(decoder& d, std::string_view payload) {
    auto r = d.decode(payload);
    REQUIRE(r.has_error());
    return {r.error().code, r.error()};
}

failure expect_error(std::string_view payload, decoder_options o = {}) {
    decoder d(o);
    return expect_error(d, payload);
}

std::string field(const failure& f) { return f.site.field; }

const std::vector<test::enc_column> row = {{'t', "1"}, {'n', ""}, {'t', "abc"}};

}  // namespace

TEST_CASE("empty_payload") {
    auto f = expect_error("");
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "tag");
    CHECK(f.site.offset == 0);
    CHECK(f.site.tag == 0);
}

TEST_CASE("unknown_tag") {
    for (char tag : {'Z', 'x', '\0', 'w', 'k'}) {
        CAPTURE(tag);
        auto f = expect_error(std::string(1, tag) + "abcd", {4, true});
        CHECK(f.code == errc::unknown_tag);
        CHECK(f.site.tag == tag);
        CHECK(field(f) == "tag");
    }
}

TEST_CASE("truncated_after_relid") {
    std::string p = test::enc_insert(std::nullopt, 16384, row).substr(0, 5);  // 'I' + relid
    auto f = expect_error(p);
    CHECK(f.code == errc::truncated);
    CHECK(f.site.tag == 'I');
    CHECK(field(f) == "new_tuple.marker");
    CHECK(f.site.offset == 5);
}

TEST_CASE("truncated_inside_relid") {
    auto f = expect_error(std::string("I\0\0", 3));
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "relid");
    CHECK(f.site.offset == 1);
}

TEST_CASE("truncated_begin_xid") {
    std::string p = test::enc_begin(1, 2, 3);
    auto f = expect_error(std::string_view(p).substr(0, p.size() - 1));
    CHECK(f.code == errc::truncated);
    CHECK(f.site.tag == 'B');
    CHECK(field(f) == "xid");
    CHECK(f.site.offset == 17);
}

TEST_CASE("truncated_column_value") {
    std::string p = test::enc_insert(std::nullopt, 1, {{'t', "abcdef"}});
    // 'I' relid(4) 'N' ncols(2) 't' len(4) = 13 bytes before the value.
    auto f = expect_error(std::string_view(p).substr(0, p.size() - 2));
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "column.value");
    CHECK(f.site.offset == 13);
}

TEST_CASE("truncated_tuple_fewer_columns_than_ncols") {
    std::string p = test::bytes_builder{}.ch('I').u32(1).ch('N').i16(3).ch('n').ch('n').take();
    auto f = expect_error(p);
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "column.kind");
    CHECK(f.site.offset == p.size());
}

TEST_CASE("relation_name_missing_nul") {
    std::string p = test::bytes_builder{}.ch('R').u32(1).str("public").raw("outbox").take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_string);
    CHECK(field(f) == "relname");
    CHECK(f.site.offset == 12);
}

TEST_CASE("relation_bad_replica_identity") {
    std::string p = test::enc_relation(std::nullopt, 1, "s", "t", 'x', {});
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_value);
    CHECK(field(f) == "replident");
    CHECK(f.site.offset == 9);
}

TEST_CASE("relation_negative_ncols") {
    std::string p = test::bytes_builder{}.ch('R').u32(1).str("s").str("t").ch('d').i16(-1).take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_value);
    CHECK(field(f) == "ncols");
    CHECK(f.site.offset == 10);
}

TEST_CASE("relation_column_name_missing_nul") {
    std::string p = test::bytes_builder{}.ch('R').u32(1).str("s").str("t").ch('d').i16(1).u8(1).raw("id").take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_string);
    CHECK(field(f) == "column.name");
}

TEST_CASE("negative_tuple_ncols") {
    std::string p = test::bytes_builder{}.ch('I').u32(1).ch('N').i16(-3).take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_value);
    CHECK(field(f) == "tuple.ncols");
    CHECK(f.site.offset == 6);
}

TEST_CASE("negative_column_length") {
    std::string p = test::bytes_builder{}.ch('I').u32(1).ch('N').i16(1).ch('t').i32(-1).take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_value);
    CHECK(field(f) == "column.length");
    CHECK(f.site.offset == 9);
}

TEST_CASE("column_length_beyond_payload") {
    std::string p = test::bytes_builder{}.ch('I').u32(1).ch('N').i16(1).ch('b').i32(INT32_MAX).raw("abc").take();
    auto f = expect_error(p);
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "column.value");
    CHECK(f.site.offset == 13);
}

TEST_CASE("bad_column_kind") {
    std::string p = test::bytes_builder{}.ch('I').u32(1).ch('N').i16(2).ch('n').ch('x').take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_value);
    CHECK(field(f) == "column.kind");
    CHECK(f.site.offset == 9);
}

TEST_CASE("insert_without_new_tuple_marker") {
    std::string p = test::bytes_builder{}.ch('I').u32(1).ch('K').i16(0).take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_value);
    CHECK(field(f) == "new_tuple.marker");
    CHECK(f.site.offset == 5);
}

TEST_CASE("update_bad_first_marker") {
    std::string p = test::bytes_builder{}.ch('U').u32(1).ch('X').i16(0).take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_value);
    CHECK(field(f) == "tuple.marker");
    CHECK(f.site.offset == 5);
}

TEST_CASE("update_old_tuple_not_followed_by_new") {
    std::string p = test::bytes_builder{}.ch('U').u32(1).ch('K').i16(0).ch('K').i16(0).take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_value);
    CHECK(field(f) == "new_tuple.marker");
    CHECK(f.site.offset == 8);
}

TEST_CASE("update_missing_new_tuple") {
    std::string p = test::bytes_builder{}.ch('U').u32(1).ch('O').i16(0).take();
    auto f = expect_error(p);
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "new_tuple.marker");
}

TEST_CASE("delete_bad_marker") {
    for (char k : {'N', 'X'}) {
        CAPTURE(k);
        std::string p = test::bytes_builder{}.ch('D').u32(1).ch(k).i16(0).take();
        auto f = expect_error(p);
        CHECK(f.code == errc::bad_value);
        CHECK(field(f) == "old_tuple.marker");
    }
}

TEST_CASE("truncate_negative_nrels") {
    std::string p = test::bytes_builder{}.ch('T').i32(-1).u8(0).take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_value);
    CHECK(field(f) == "nrels");
    CHECK(f.site.offset == 1);
}

TEST_CASE("truncate_nrels_beyond_payload") {
    // A huge count is rejected before any storage is sized for it.
    std::string p = test::bytes_builder{}.ch('T').i32(INT32_MAX).u8(0).u32(1).take();
    auto f = expect_error(p);
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "relids");
    CHECK(f.site.offset == 6);
}

TEST_CASE("message_negative_length") {
    std::string p = test::bytes_builder{}.ch('M').u8(0).u64(1).str("p").i32(-5).take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_value);
    CHECK(field(f) == "content.length");
    CHECK(f.site.offset == 12);
}

TEST_CASE("message_length_beyond_payload") {
    std::string p = test::bytes_builder{}.ch('M').u8(1).u64(1).str("p").i32(10).raw("short").take();
    auto f = expect_error(p);
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "content");
    CHECK(f.site.offset == 16);
}

TEST_CASE("message_prefix_missing_nul") {
    std::string p = test::bytes_builder{}.ch('M').u8(1).u64(1).raw("prefix").take();
    auto f = expect_error(p);
    CHECK(f.code == errc::bad_string);
    CHECK(field(f) == "prefix");
    CHECK(f.site.offset == 10);
}

TEST_CASE("trailing_bytes_after_commit") {
    std::string p = test::enc_commit(0, 1, 2, 3) + "!";
    auto f = expect_error(p);
    CHECK(f.code == errc::trailing_bytes);
    CHECK(f.site.tag == 'C');
    CHECK(field(f) == "end");
    CHECK(f.site.offset == 26);
}

TEST_CASE("trailing_bytes_after_stream_stop") {
    decoder d({2, false});
    REQUIRE(d.decode(test::enc_stream_start(1, 1)).has_value());
    auto f = expect_error(d, "EE");
    CHECK(f.code == errc::trailing_bytes);
    CHECK(d.in_stream());  // a failed Stop does not end the stream
}

TEST_CASE("trailing_bytes_after_tuple") {
    std::string p = test::enc_insert(std::nullopt, 1, row) + std::string(1, '\0');
    auto f = expect_error(p);
    CHECK(f.code == errc::trailing_bytes);
    CHECK(f.site.offset == p.size() - 1);
}

TEST_CASE("stream_abort_without_parallel_fields_in_parallel_mode") {
    auto f = expect_error(test::enc_stream_abort(1, 2), {4, true});
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "abort_lsn");
    CHECK(f.site.offset == 9);
}

TEST_CASE("stream_abort_with_parallel_fields_in_plain_mode") {
    auto f = expect_error(test::enc_stream_abort(1, 2, true, 3, 4), {4, false});
    CHECK(f.code == errc::trailing_bytes);
    CHECK(f.site.offset == 9);
}

TEST_CASE("stream_stop_outside_stream") {
    auto f = expect_error(test::enc_stream_stop(), {2, false});
    CHECK(f.code == errc::bad_value);
    CHECK(f.site.tag == 'E');
}

TEST_CASE("nested_stream_start") {
    decoder d({2, false});
    REQUIRE(d.decode(test::enc_stream_start(1, 1)).has_value());
    auto f = expect_error(d, test::enc_stream_start(2, 1));
    CHECK(f.code == errc::bad_value);
    CHECK(f.site.tag == 'S');
    CHECK(d.in_stream());
}

TEST_CASE("truncated_stream_start_does_not_enter_stream") {
    decoder d({2, false});
    std::string p = test::enc_stream_start(1, 1);
    auto f = expect_error(d, std::string_view(p).substr(0, 5));
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "first_segment");
    CHECK_FALSE(d.in_stream());
}

TEST_CASE("missing_xid_inside_stream") {
    // Inside a stream an Insert starts with the xid; without it the relid
    // bytes are read as the xid, and the 3 bytes left cannot hold the relid.
    decoder d({2, false});
    REQUIRE(d.decode(test::enc_stream_start(7, 1)).has_value());
    auto f = expect_error(d, test::enc_insert(std::nullopt, 1, {}));
    CHECK(f.code == errc::truncated);
    CHECK(field(f) == "relid");
    CHECK(f.site.offset == 5);
}

TEST_CASE("gid_missing_nul") {
    std::string p = test::enc_commit_prepared(0, 1, 2, 3, 4, "g");
    p.pop_back();
    auto f = expect_error(p, {3, false});
    CHECK(f.code == errc::bad_string);
    CHECK(field(f) == "gid");
    CHECK(f.site.offset == 30);
}

TEST_CASE("error_names_tag_and_location_in_its_text") {
    decoder d;
    auto r = d.decode(test::enc_begin(1, 2, 3).substr(0, 5));
    REQUIRE(r.has_error());
    // The one-line text the relay logs carries the location.
    CHECK(r.error().describe() == "input truncated inside a field (tag 'B', field final_lsn, offset 1)");
    // A failure leaves nothing behind for the next message.
    REQUIRE(d.decode(test::enc_begin(1, 2, 3)).has_value());
}

namespace {

// One sample of every message kind, with the decoder state it needs.
struct sample {
    const char* name;
    decoder_options opts;
    bool in_stream;
    std::string payload;
};

std::vector<sample> samples() {
    using namespace outbox::test;
    std::vector<enc_column> cols = {{'t', "12"}, {'n', ""}, {'u', ""}, {'b', "\x01xy"}};
    std::vector<enc_rel_column> rcols = {{1, "id", 20, -1}, {0, "payload", 3802, -1}};
    return {
        {"begin", {1, false}, false, enc_begin(1, 2, 3)},
        {"commit", {1, false}, false, enc_commit(0, 1, 2, 3)},
        {"origin", {1, false}, false, enc_origin(5, "up")},
        {"relation", {1, false}, false, enc_relation(std::nullopt, 1, "public", "outbox", 'd', rcols)},
        {"relation_in_stream", {2, false}, true, enc_relation(9, 1, "public", "outbox", 'f', rcols)},
        {"type", {1, false}, false, enc_type(std::nullopt, 16501, "public", "st")},
        {"type_in_stream", {2, false}, true, enc_type(9, 16501, "public", "st")},
        {"insert", {1, false}, false, enc_insert(std::nullopt, 1, cols)},
        {"insert_in_stream", {2, false}, true, enc_insert(9, 1, cols)},
        {"update_plain", {1, false}, false, enc_update(std::nullopt, 1, 0, {}, cols)},
        {"update_key", {1, false}, false, enc_update(std::nullopt, 1, 'K', cols, cols)},
        {"update_old", {2, false}, true, enc_update(9, 1, 'O', cols, cols)},
        {"delete_key", {1, false}, false, enc_delete(std::nullopt, 1, 'K', cols)},
        {"delete_old_in_stream", {2, false}, true, enc_delete(9, 1, 'O', cols)},
        {"truncate", {1, false}, false, enc_truncate(std::nullopt, 2, {1, 2})},
        {"truncate_in_stream", {2, false}, true, enc_truncate(9, 1, {1})},
        {"message", {1, false}, false, enc_message(std::nullopt, 1, 7, "pfx", "content")},
        {"message_in_stream", {2, false}, true, enc_message(9, 1, 7, "pfx", "content")},
        {"stream_start", {2, false}, false, enc_stream_start(9, 1)},
        {"stream_stop", {2, false}, true, enc_stream_stop()},
        {"stream_commit", {2, false}, false, enc_stream_commit(9, 0, 1, 2, 3)},
        {"stream_abort", {2, false}, false, enc_stream_abort(9, 10)},
        {"stream_abort_parallel", {4, true}, false, enc_stream_abort(9, 10, true, 11, 12)},
        {"begin_prepare", {3, false}, false, enc_begin_prepare(1, 2, 3, 4, "gid")},
        {"prepare", {3, false}, false, enc_prepare('P', 0, 1, 2, 3, 4, "gid")},
        {"stream_prepare", {3, false}, false, enc_prepare('p', 0, 1, 2, 3, 4, "gid")},
        {"commit_prepared", {3, false}, false, enc_commit_prepared(0, 1, 2, 3, 4, "gid")},
        {"rollback_prepared", {3, false}, false, enc_rollback_prepared(0, 1, 2, 3, 4, 5, "gid")},
    };
}

decoder prepared_decoder(const sample& s) {
    decoder d(s.opts);
    if (s.in_stream) REQUIRE(d.decode(test::enc_stream_start(9, 1)).has_value());
    return d;
}

}  // namespace

TEST_CASE("every_truncation_point_is_an_error") {
    for (const auto& s : samples()) {
        CAPTURE(s.name);
        {
            decoder whole = prepared_decoder(s);
            REQUIRE(whole.decode(s.payload).has_value());  // the sample itself is valid
        }
        for (std::size_t n = 0; n < s.payload.size(); ++n) {
            CAPTURE(n);
            decoder d = prepared_decoder(s);
            // A copy of exactly n bytes: ASan flags any read past it.
            std::string cut = s.payload.substr(0, n);
            auto r = d.decode(cut);
            REQUIRE(r.has_error());
            auto code = r.error().code;
            CHECK((code == errc::truncated || code == errc::bad_string));
            CHECK(r.error().offset <= n);
            CHECK(d.in_stream() == s.in_stream);  // a failed message never changes stream state
        }
    }
}

TEST_CASE("corrupted_samples_never_crash") {
    // Deterministic corruption: flip, overwrite and extend bytes of every
    // sample. Whatever the outcome, an error names an offset inside the input.
    std::mt19937 rng(20240501);
    for (const auto& s : samples()) {
        CAPTURE(s.name);
        for (int round = 0; round < 300; ++round) {
            std::string p = s.payload;
            int edits = 1 + static_cast<int>(rng() % 3);
            for (int e = 0; e < edits; ++e) {
                std::size_t pos = rng() % p.size();
                switch (rng() % 3) {
                    case 0: p[pos] = static_cast<char>(p[pos] ^ (1 << (rng() % 8))); break;
                    case 1: p[pos] = static_cast<char>(rng()); break;
                    default: p.insert(pos, 1, static_cast<char>(rng())); break;
                }
            }
            decoder d = prepared_decoder(s);
            auto r = d.decode(p);
            if (r.has_error()) CHECK(r.error().offset <= p.size());
            else CHECK(p.size() >= 1u);
        }
    }
}
