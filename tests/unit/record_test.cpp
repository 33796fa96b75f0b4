#include "outbox_relay/record.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using outbox::header;
using outbox::record;

TEST_CASE("valid_topic_name_follows_kafka") {
    CHECK(outbox::valid_topic_name("orders"));
    CHECK(outbox::valid_topic_name("outbox.event.Order_v2-eu"));
    CHECK(outbox::valid_topic_name(std::string(249, 'a')));
    CHECK_FALSE(outbox::valid_topic_name(std::string(250, 'a')));
    CHECK_FALSE(outbox::valid_topic_name(""));
    CHECK_FALSE(outbox::valid_topic_name("."));
    CHECK_FALSE(outbox::valid_topic_name(".."));
    CHECK(outbox::valid_topic_name("..."));
    for (std::string bad : {"a b", "a/b", "a:b", "ordérs", "a\nb", "a+b", "a*"}) {
        INFO(bad);
        CHECK_FALSE(outbox::valid_topic_name(bad));
    }
    // Every byte outside [a-zA-Z0-9._-] is refused, at any position.
    for (int c = 0; c < 256; ++c) {
        const bool legal = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                           c == '_' || c == '-';
        std::string name = "ab";
        name.insert(name.begin() + 1, static_cast<char>(c));
        INFO(c);
        CHECK(outbox::valid_topic_name(name) == legal);
    }
}

TEST_CASE("record_find_returns_the_first_header_of_a_name") {
    const std::vector<header> hs = {{"id", "e-1"}, {"type", "", true}, {"id", "e-2"}};
    record r;
    r.headers = hs;
    REQUIRE(r.find("id") != nullptr);
    CHECK(r.find("id")->value == "e-1");
    REQUIRE(r.find("type") != nullptr);
    CHECK(r.find("type")->value_null);
    CHECK(r.find("missing") == nullptr);
    CHECK(record{}.find("id") == nullptr);
}
