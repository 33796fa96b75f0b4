#include "outbox_relay/lsn.hpp"

#include <doctest/doctest.h>

using outbox::lsn;

TEST_CASE("lsn_parse_and_format_round_trip") {
    auto r = lsn::parse("16/B374D848");
    REQUIRE(r.has_value());
    CHECK(r->value() == 0x16B374D848ull);
    CHECK(r->to_string() == "16/B374D848");
    CHECK(lsn{0}.to_string() == "0/0");
    CHECK(lsn{0xFFFFFFFFFFFFFFFFull}.to_string() == "FFFFFFFF/FFFFFFFF");
}

TEST_CASE("lsn_parse_accepts_lower_case") {
    auto r = lsn::parse("a/bc");
    REQUIRE(r.has_value());
    CHECK(r->value() == 0xA000000BCull);
    CHECK(r->to_string() == "A/BC");
}

TEST_CASE("lsn_parse_rejects_malformed") {
    for (const char* bad : {"", "/", "1/", "/1", "1", "1/2/3", "g/1", "1/x", " 1/2", "1/2 ",
                            "123456789/0", "0/123456789", "-1/0", "+1/0", "0x1/0"}) {
        CAPTURE(bad);
        auto r = lsn::parse(bad);
        REQUIRE(r.has_error());
        CHECK(r.error() == outbox::errc::bad_lsn_text);
    }
}

TEST_CASE("lsn_ordering_and_distance") {
    lsn a{100}, b{200};
    CHECK(a < b);
    CHECK(b > a);
    CHECK(a == lsn{100});
    CHECK(b - a == 100u);
    CHECK(lsn{}.is_zero());
}
