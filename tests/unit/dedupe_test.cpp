#include "outbox_relay/dedupe.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <unordered_set>

using outbox::errc;
using outbox::lsn;
using outbox::parse_position;
using outbox::position_set;
using outbox::record_position;
using outbox::record_position_hash;

namespace {

record_position pos(std::uint64_t l, std::uint32_t seq) { return {lsn{l}, seq}; }

}  // namespace

TEST_CASE("parse_position_good") {
    // The header text the relay writes: lsn::to_string and std::to_string.
    const lsn commit{0x16B374D848ull};
    auto r = parse_position(commit.to_string(), std::to_string(42u));
    REQUIRE(r.has_value());
    CHECK(r->commit_lsn == commit);
    CHECK(r->seq == 42u);
}

TEST_CASE("parse_position_seq_zero_and_max") {
    auto zero = parse_position("0/1", "0");
    REQUIRE(zero.has_value());
    CHECK(zero->seq == 0u);
    auto max = parse_position("0/1", std::to_string(UINT32_MAX));
    REQUIRE(max.has_value());
    CHECK(max->seq == UINT32_MAX);
}

TEST_CASE("parse_position_lower_case_lsn") {
    auto r = parse_position("a/bc", "1");
    REQUIRE(r.has_value());
    CHECK(r->commit_lsn == lsn{0xA000000BCull});
}

TEST_CASE("parse_position_malformed_lsn") {
    for (const char* bad : {"", "16", "16/", "/B3", "16/B3/1", "16/XYZ", " 16/B3", "16/B3 ", "123456789/0"}) {
        CAPTURE(bad);
        auto r = parse_position(bad, "0");
        REQUIRE(r.has_error());
        CHECK(r.error() == errc::bad_lsn_text);
    }
}

TEST_CASE("parse_position_malformed_seq") {
    for (const char* bad : {"", "-1", "+1", " 1", "1 ", "1a", "0x1", "1.0", "１"}) {
        CAPTURE(bad);
        auto r = parse_position("0/1", bad);
        REQUIRE(r.has_error());
        CHECK(r.error() == errc::bad_value);
    }
}

TEST_CASE("parse_position_overflowing_seq") {
    const std::string just_over = std::to_string(static_cast<std::uint64_t>(UINT32_MAX) + 1);
    for (const std::string& bad : {just_over, std::string("99999999999999999999999999")}) {
        CAPTURE(bad);
        auto r = parse_position("0/1", bad);
        REQUIRE(r.has_error());
        CHECK(r.error() == errc::bad_value);
    }
}

TEST_CASE("parse_position_bad_lsn_reported_before_bad_seq") {
    // Both malformed: the LSN is checked first, so the error names it.
    auto r = parse_position("nope", "nope");
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::bad_lsn_text);
}

TEST_CASE("record_position_equality_uses_both_fields") {
    CHECK(pos(100, 1) == pos(100, 1));
    CHECK_FALSE(pos(100, 1) == pos(100, 2));
    CHECK_FALSE(pos(100, 1) == pos(101, 1));
}

TEST_CASE("record_position_hash_spreads_neighbours") {
    // Neighbouring transactions and seqs must not collide wholesale: 64 x 64
    // positions should give (nearly) as many distinct hashes.
    std::unordered_set<std::size_t> hashes;
    record_position_hash h;
    for (std::uint64_t l = 0; l < 64; ++l)
        for (std::uint32_t s = 0; s < 64; ++s) hashes.insert(h(pos(0x1000000 + l * 8, s)));
    CHECK(hashes.size() == 64u * 64u);
    CHECK(h(pos(5, 7)) == h(pos(5, 7)));
}

TEST_CASE("position_set_insert_contains_size") {
    position_set s;
    CHECK(s.empty());
    CHECK(s.insert(pos(100, 0)));
    CHECK(s.insert(pos(100, 1)));
    CHECK(s.insert(pos(200, 0)));
    CHECK_FALSE(s.insert(pos(100, 1)));  // already present
    CHECK(s.size() == 3u);
    CHECK(s.contains(pos(100, 0)));
    CHECK(s.contains(pos(100, 1)));
    CHECK(s.contains(pos(200, 0)));
    CHECK_FALSE(s.contains(pos(100, 2)));
    CHECK_FALSE(s.contains(pos(200, 1)));
    CHECK_FALSE(s.contains(pos(300, 0)));
}

TEST_CASE("position_set_gap_is_not_contained") {
    // A failed record (seq 1) between delivered ones stays absent, so the
    // relay re-produces it instead of assuming everything up to seq 2 is there.
    position_set s;
    s.insert(pos(100, 0));
    s.insert(pos(100, 2));
    CHECK_FALSE(s.contains(pos(100, 1)));
}

TEST_CASE("position_set_merge_is_union") {
    position_set a, b;
    a.insert(pos(1, 0));
    a.insert(pos(2, 0));
    b.insert(pos(2, 0));
    b.insert(pos(3, 5));
    a.merge(b);
    CHECK(a.size() == 3u);
    CHECK(a.contains(pos(1, 0)));
    CHECK(a.contains(pos(2, 0)));
    CHECK(a.contains(pos(3, 5)));
    CHECK(b.size() == 2u);  // source untouched
    CHECK_FALSE(b.contains(pos(1, 0)));
}

TEST_CASE("position_set_merge_empty") {
    position_set a, empty;
    a.insert(pos(7, 7));
    a.merge(empty);
    CHECK(a.size() == 1u);
    empty.merge(a);
    CHECK(empty.size() == 1u);
    CHECK(empty.contains(pos(7, 7)));
}

TEST_CASE("position_set_erase_below") {
    position_set s;
    s.insert(pos(99, 3));
    s.insert(pos(100, 0));
    s.insert(pos(101, 0));
    s.erase_below(lsn{100});
    CHECK(s.size() == 2u);
    CHECK_FALSE(s.contains(pos(99, 3)));
    CHECK(s.contains(pos(100, 0)));  // the bound itself is kept (>= is replayed)
    CHECK(s.contains(pos(101, 0)));
}
