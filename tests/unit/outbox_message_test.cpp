#include "outbox_relay/outbox_message.hpp"

#include "outbox_relay/outbox.hpp"

#include <doctest/doctest.h>

#include <string>

using outbox::errc;
using outbox::outbox_mapper;
using outbox::outbox_message;
using outbox::parse_outbox_message;
using outbox::record_scratch;
using outbox::routing_config;
namespace pg = outbox::pgoutput;

namespace {
std::string_view header_or_none(const outbox::record& r, std::string_view name) {
    const outbox::header* h = r.find(name);
    return h ? h->value : "<none>";
}
}  // namespace

TEST_CASE("message_fields_become_columns") {
    outbox_message m;
    REQUIRE(parse_outbox_message(R"({"id": "e-1", "aggregatetype": "order", "aggregateid": 42, "type": "OrderCreated",
        "payload": {"z": 1, "a": [true, null]}, "ok": false, "gone": null, "x": 1.5,
        "headers": {"tenant": "acme", "n": 3, "nothing": null}})",
                                 m).has_value());
    REQUIRE(m.rel.columns.size() == 8);
    CHECK(m.rel.generation == 0);
    auto col = [&](std::string_view name) {
        const int i = m.rel.column_index(name);
        REQUIRE(i >= 0);
        return std::make_pair(m.rel.columns[static_cast<std::size_t>(i)].type_oid, m.columns[static_cast<std::size_t>(i)]);
    };
    CHECK(col("id").second.value == "e-1");
    CHECK(col("aggregateid").first == 20);
    CHECK(col("aggregateid").second.value == "42");
    CHECK(col("payload").first == 3802);
    CHECK(col("payload").second.value == R"({"z":1,"a":[true,null]})");  // key order kept
    CHECK(col("ok").second.value == "false");
    CHECK(col("gone").second.kind == pg::column_kind::null);
    CHECK(col("x").first == 701);
    REQUIRE(m.headers.size() == 3);
    CHECK(m.headers[0].name == "tenant");
    CHECK(m.headers[0].value == "acme");
    CHECK(m.headers[1].value == "3");
    CHECK(m.headers[2].value_null);
}

TEST_CASE("message_maps_like_a_row") {
    outbox_message m;
    REQUIRE(parse_outbox_message(R"({"id": "e-1", "aggregatetype": "order", "aggregateid": "o-42", "type": "OrderCreated",
        "payload": {"total": 12.5}, "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}})",
                                 m).has_value());
    auto mapper = outbox_mapper::create(routing_config{});
    REQUIRE(mapper.has_value());
    record_scratch s;
    auto r = mapper->map(m.rel, m.row(), outbox::row_context{1'000'000, m.headers}, s);
    REQUIRE(r.has_value());
    CHECK(r->topic == "outbox.event.order");
    CHECK(r->key == "o-42");
    CHECK(r->value == R"({"total":12.5})");
    CHECK(header_or_none(*r, "id") == "e-1");
    CHECK(header_or_none(*r, "type") == "OrderCreated");
    CHECK(header_or_none(*r, "traceparent") == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    CHECK(r->timestamp_ms == 1000);
    // A string payload is its characters.
    REQUIRE(parse_outbox_message(R"({"id": "e-2", "aggregatetype": "order", "aggregateid": null, "type": "T",
        "payload": "line1\nline2"})",
                                 m).has_value());
    r = mapper->map(m.rel, m.row(), outbox::row_context{0, m.headers}, s);
    REQUIRE(r.has_value());
    CHECK(r->key_null);
    CHECK(r->value == "line1\nline2");
}

TEST_CASE("message_missing_field_names_it") {
    outbox_message m;
    REQUIRE(parse_outbox_message(R"({"id": "e-1", "aggregatetype": "order", "type": "T", "payload": {}})", m).has_value());
    auto mapper = outbox_mapper::create(routing_config{});
    record_scratch s;
    auto r = mapper->map(m.rel, m.row(), outbox::row_context{}, s);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::missing_column);
    CHECK(r.error().field == "aggregateid");
}

TEST_CASE("bad_messages_say_what_is_wrong") {
    outbox_message m;
    struct example {
        const char* text;
        const char* says;
    };
    for (const example& e : {example{"{\"id\": ", "not valid JSON (byte "}, example{"[1, 2]", "not a JSON object"},
                             example{"", "not valid JSON"},
                             example{R"({"id": "x", "headers": [1]})", "\"headers\" must be an object"},
                             example{R"({"id": "x", "headers": {"outbox-relay.seq": "1"}})", "relay writes itself"},
                             example{R"({"id": "x", "headers": {"id": "1"}})", "relay writes itself"}}) {
        CAPTURE(e.text);
        auto r = parse_outbox_message(e.text, m);
        REQUIRE(r.has_error());
        CHECK(r.error() == errc::bad_message);
        CHECK(r.error().message.find(e.says) != std::string::npos);
    }
}
