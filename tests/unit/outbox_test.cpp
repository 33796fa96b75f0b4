#include "outbox_relay/outbox.hpp"

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

using namespace std::string_view_literals;
using outbox::cached_relation;
using outbox::errc;
using outbox::record;
using outbox::record_scratch;
using outbox::outbox_mapper;
using outbox::routing_config;
namespace pg = outbox::pgoutput;

namespace {

constexpr std::uint32_t oid_uuid = 2950, oid_text = 25, oid_jsonb = 3802, oid_json = 114,
                        oid_timestamptz = 1184;

// The Debezium-compatible outbox of sql/01_outbox_table.sql.
cached_relation outbox_relation(std::uint64_t generation = 1) {
    cached_relation r;
    r.relid = 16400;
    r.nspname = "public";
    r.relname = "outbox";
    r.generation = generation;
    r.columns = {{"id", oid_uuid, -1, true},         {"aggregatetype", oid_text, -1, false},
                 {"aggregateid", oid_text, -1, false}, {"type", oid_text, -1, false},
                 {"payload", oid_jsonb, -1, false},    {"created_at", oid_timestamptz, -1, false}};
    return r;
}

pg::tuple_column t(std::string_view v) { return {pg::column_kind::text, v}; }
pg::tuple_column b(std::string_view v) { return {pg::column_kind::binary, v}; }
pg::tuple_column null_col() { return {pg::column_kind::null, {}}; }
pg::tuple_column toast_col() { return {pg::column_kind::unchanged_toast, {}}; }

// A row of outbox_relation(); the backing vector must outlive the tuple_data.
std::vector<pg::tuple_column> good_row() {
    return {t("6f1c2a7e-1b0e-4a57-9d3c-0c7f3f9d6a11"), t("order"), t("order-42"), t("OrderCreated"),
            t(R"({"total": 12.5})"), t("2024-06-11 10:00:00+00")};
}

// Where map() puts the topic and headers; one per test file is enough, each
// call overwrites it.
record_scratch scratch;

// The value of header `name` of `r`, or "<none>".
std::string_view hdr(const record& r, std::string_view name) {
    for (const auto& h : r.headers)
        if (h.name == name) return h.value;
    return "<none>";
}

outbox_mapper default_mapper() {
    auto m = outbox_mapper::create(routing_config{});
    REQUIRE(m.has_value());
    return *m;
}

errc template_error(std::string tmpl) {
    routing_config cfg;
    cfg.topic_template = std::move(tmpl);
    auto m = outbox_mapper::create(cfg);
    return m ? errc::ok : m.error().code;
}

}  // namespace

TEST_CASE("default_template_routes_by_aggregatetype") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_value());
    CHECK(r->topic == "outbox.event.order");
    CHECK(r->key == "order-42");
    CHECK_FALSE(r->key_null);
    CHECK(r->value == R"({"total": 12.5})");
    CHECK_FALSE(r->value_null);
    CHECK(hdr(*r, "id") == "6f1c2a7e-1b0e-4a57-9d3c-0c7f3f9d6a11");
    CHECK(hdr(*r, "type") == "OrderCreated");
}

TEST_CASE("record_views_point_into_the_tuple") {
    // No copy of key/value per row: the views alias the replication payload.
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_value());
    CHECK(r->key.data() == cols[2].value.data());
    CHECK(r->value.data() == cols[4].value.data());
    CHECK(hdr(*r, "id").data() == cols[0].value.data());
    CHECK(hdr(*r, "type").data() == cols[3].value.data());
}

TEST_CASE("template_with_several_placeholders") {
    routing_config cfg;
    cfg.topic_template = "{aggregatetype}.{type}-v1";
    auto m = outbox_mapper::create(cfg);
    REQUIRE(m.has_value());
    auto rel = outbox_relation();
    auto cols = good_row();
    auto r = m->map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_value());
    CHECK(r->topic == "order.OrderCreated-v1");
}

TEST_CASE("template_without_placeholder_is_a_fixed_topic") {
    routing_config cfg;
    cfg.topic_template = "all-events";
    auto m = outbox_mapper::create(cfg);
    REQUIRE(m.has_value());
    auto rel = outbox_relation();
    auto cols = good_row();
    auto r = m->map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_value());
    CHECK(r->topic == "all-events");
}

TEST_CASE("template_unbalanced_open_brace") {
    CHECK(template_error("outbox.{aggregatetype") == errc::bad_topic_template);
    CHECK(template_error("{") == errc::bad_topic_template);
}

TEST_CASE("template_unbalanced_close_brace") {
    CHECK(template_error("outbox.aggregatetype}") == errc::bad_topic_template);
    CHECK(template_error("{type}}") == errc::bad_topic_template);
}

TEST_CASE("template_empty_placeholder") {
    CHECK(template_error("outbox.{}") == errc::bad_topic_template);
}

TEST_CASE("template_nested_braces") {
    CHECK(template_error("outbox.{{type}}") == errc::bad_topic_template);
    CHECK(template_error("{a{b}") == errc::bad_topic_template);
}

TEST_CASE("template_empty") { CHECK(template_error("") == errc::bad_topic_template); }

TEST_CASE("template_literal_with_illegal_topic_char") {
    CHECK(template_error("outbox event.{type}") == errc::bad_topic_template);
    CHECK(template_error("outbox/{type}") == errc::bad_topic_template);
    CHECK(template_error("ok_name-1.{type}") == errc::ok);
}

TEST_CASE("is_outbox_matches_schema_and_table") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    CHECK(m.is_outbox(rel));
    rel.nspname = "billing";
    CHECK_FALSE(m.is_outbox(rel));
    rel = outbox_relation();
    rel.relname = "outbox_archive";
    CHECK_FALSE(m.is_outbox(rel));

    routing_config cfg;
    cfg.schema = "billing";
    cfg.table = "events";
    auto m2 = outbox_mapper::create(cfg);
    REQUIRE(m2.has_value());
    rel = outbox_relation();
    rel.nspname = "billing";
    rel.relname = "events";
    CHECK(m2->is_outbox(rel));
    CHECK_FALSE(m.is_outbox(rel));
}

TEST_CASE("check_relation_accepts_the_outbox") {
    auto m = default_mapper();
    CHECK(m.check_relation(outbox_relation()).has_value());
}

TEST_CASE("check_relation_names_missing_mapped_column") {
    auto m = default_mapper();
    for (std::string_view drop : {"id"sv, "aggregatetype"sv, "aggregateid"sv, "type"sv, "payload"sv}) {
        CAPTURE(drop);
        auto rel = outbox_relation();
        std::erase_if(rel.columns, [&](const auto& c) { return c.name == drop; });
        auto r = m.check_relation(rel);
        REQUIRE(r.has_error());
        CHECK(r.error() == errc::missing_column);
        CHECK(r.error().code == errc::missing_column);
        CHECK(r.error().field == drop);
    }
}

TEST_CASE("check_relation_names_missing_template_column") {
    routing_config cfg;
    cfg.topic_template = "events.{tenant}";
    auto m = outbox_mapper::create(cfg);
    REQUIRE(m.has_value());
    auto r = m->check_relation(outbox_relation());
    REQUIRE(r.has_error());
    CHECK(r.error().field == "tenant");
}

TEST_CASE("custom_column_names") {
    routing_config cfg;
    cfg.columns.id = "event_id";
    cfg.columns.aggregatetype = "kind";
    cfg.columns.aggregateid = "entity";
    cfg.columns.type = "event_type";
    cfg.columns.payload = "body";
    cfg.topic_template = "x.{kind}";
    auto m = outbox_mapper::create(cfg);
    REQUIRE(m.has_value());
    cached_relation rel = outbox_relation();
    rel.columns = {{"body", oid_json, -1, false},
                   {"event_type", oid_text, -1, false},
                   {"entity", oid_text, -1, false},
                   {"kind", oid_text, -1, false},
                   {"event_id", oid_uuid, -1, true}};
    std::vector<pg::tuple_column> cols{t("{}"), t("T"), t("E"), t("K"), t("I")};
    auto r = m->map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_value());
    CHECK(r->topic == "x.K");
    CHECK(r->key == "E");
    CHECK(r->value == "{}");
    CHECK(hdr(*r, "id") == "I");
    CHECK(hdr(*r, "type") == "T");
}

TEST_CASE("null_aggregateid_gives_null_key") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[2] = null_col();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_value());
    CHECK(r->key_null);
    CHECK(r->key.empty());
}

TEST_CASE("null_payload_gives_null_value") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[4] = null_col();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_value());
    CHECK(r->value_null);
    CHECK(r->value.empty());
}

TEST_CASE("empty_payload_is_not_null") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    rel.columns[4].type_oid = oid_text;
    auto cols = good_row();
    cols[4] = t("");
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_value());
    CHECK_FALSE(r->value_null);
    CHECK(r->value.empty());
}

TEST_CASE("null_id_is_error_naming_column") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[0] = null_col();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::null_column);
    CHECK(r.error().code == errc::null_column);
    CHECK(r.error().field == "id");
}

TEST_CASE("null_type_is_error_naming_column") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[3] = null_col();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error().code == errc::null_column);
    CHECK(r.error().field == "type");
}

TEST_CASE("null_topic_column_is_error_naming_column") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[1] = null_col();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::null_column);
    CHECK(r.error().field == "aggregatetype");
}

TEST_CASE("unchanged_toast_topic_column_is_error") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[1] = toast_col();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::unchanged_toast_column);
    CHECK(r.error().field == "aggregatetype");
}

TEST_CASE("unchanged_toast_payload_is_error") {
    // Never publish a record whose value we do not have.
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[4] = toast_col();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::unchanged_toast_column);
    CHECK(r.error().field == "payload");
}

TEST_CASE("unchanged_toast_key_is_error") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[2] = toast_col();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error().field == "aggregateid");
}

TEST_CASE("binary_jsonb_payload_strips_version_byte") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    const std::string wire = std::string("\x01", 1) + R"({"a": 1})";
    cols[4] = b(wire);
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_value());
    CHECK(r->value == R"({"a": 1})");
}

TEST_CASE("binary_jsonb_payload_with_unknown_version_rejected") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    for (std::string_view wire : {"\x02{}"sv, ""sv}) {
        cols[4] = b(wire);
        auto r = m.map(rel, pg::tuple_data{cols}, scratch);
        REQUIRE(r.has_error());
        CHECK(r.error() == errc::bad_value);
        CHECK(r.error().field == "payload");
    }
}

TEST_CASE("binary_json_and_text_payload_used_as_is") {
    auto m = default_mapper();
    for (std::uint32_t oid : {oid_json, oid_text}) {
        CAPTURE(oid);
        auto rel = outbox_relation();
        rel.columns[4].type_oid = oid;
        auto cols = good_row();
        const std::string wire = std::string("\x01", 1) + "{}";
        cols[4] = b(wire);
        auto r = m.map(rel, pg::tuple_data{cols}, scratch);
        REQUIRE(r.has_value());
        CHECK(r->value == wire);
    }
}

TEST_CASE("text_jsonb_payload_not_stripped") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    const std::string text = std::string("\x01", 1) + "x";  // odd, but text mode is verbatim
    cols[4] = t(text);
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_value());
    CHECK(r->value == text);
}

TEST_CASE("relation_replaced_mid_stream_reresolves_columns") {
    // After ALTER TABLE the server resends Relation with a new layout; the
    // relation_cache bumps the generation and map() must follow it.
    auto m = default_mapper();
    auto rel = outbox_relation(1);
    auto cols = good_row();
    auto r1 = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r1.has_value());
    CHECK(r1->key == "order-42");

    cached_relation rel2 = outbox_relation(2);
    rel2.columns = {{"tenant", oid_text, -1, false},      {"payload", oid_jsonb, -1, false},
                    {"type", oid_text, -1, false},        {"aggregateid", oid_text, -1, false},
                    {"aggregatetype", oid_text, -1, false}, {"id", oid_uuid, -1, true}};
    std::vector<pg::tuple_column> cols2{t("acme"), t("[1]"), t("Shipped"), t("order-7"), t("shipment"),
                                        t("11111111-1111-1111-1111-111111111111")};
    auto r2 = m.map(rel2, pg::tuple_data{cols2}, scratch);
    REQUIRE(r2.has_value());
    CHECK(r2->topic == "outbox.event.shipment");
    CHECK(r2->key == "order-7");
    CHECK(r2->value == "[1]");
    CHECK(hdr(*r2, "type") == "Shipped");
    CHECK(hdr(*r2, "id") == "11111111-1111-1111-1111-111111111111");
}

TEST_CASE("relation_losing_column_is_missing_column_on_map") {
    auto m = default_mapper();
    auto rel = outbox_relation(1);
    auto cols = good_row();
    REQUIRE(m.map(rel, pg::tuple_data{cols}, scratch).has_value());
    auto rel2 = outbox_relation(2);
    rel2.columns.erase(rel2.columns.begin() + 3);  // type dropped
    auto cols2 = good_row();
    cols2.erase(cols2.begin() + 3);
    auto r = m.map(rel2, pg::tuple_data{cols2}, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::missing_column);
    CHECK(r.error().field == "type");
}

TEST_CASE("tuple_column_count_mismatch_rejected") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols.pop_back();
    auto r = m.map(rel, pg::tuple_data{cols}, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::column_count_mismatch);
}

TEST_CASE("is_outbox_matches_the_known_oid_even_after_a_rename") {
    routing_config cfg;
    cfg.relid = 16400;
    auto m = outbox_mapper::create(cfg);
    REQUIRE(m.has_value());
    auto rel = outbox_relation();
    rel.relname = "outbox_renamed";
    CHECK(m->is_outbox(rel));
    rel.relid = 99999;
    CHECK_FALSE(m->is_outbox(rel));
    rel.relname = "outbox";  // same name, new table (dropped and recreated): still the outbox
    CHECK(m->is_outbox(rel));
}
