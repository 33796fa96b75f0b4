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
// Commit time 2024-06-11 10:00:00.5 UTC, no extra headers.
const outbox::row_context ctx{1'718'100'000'500'000, {}};

// The value of header `name` of `r`, or "<none>".
std::string_view hdr(const record& r, std::string_view name) {
    const outbox::header* h = r.find(name);
    return h ? h->value : "<none>";
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
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
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
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
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
    auto r = m->map(rel, pg::tuple_data{cols}, ctx, scratch);
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
    auto r = m->map(rel, pg::tuple_data{cols}, ctx, scratch);
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
    cfg.route_by = "kind";
    cfg.columns.key = "entity";
    cfg.columns.type = "event_type";
    cfg.placements = {{"event_type", outbox::placement_kind::header, "type"}};  // what --type-column does
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
    auto r = m->map(rel, pg::tuple_data{cols}, ctx, scratch);
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
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->key_null);
    CHECK(r->key.empty());
}

TEST_CASE("null_payload_gives_null_value") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[4] = null_col();
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
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
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    CHECK_FALSE(r->value_null);
    CHECK(r->value.empty());
}

TEST_CASE("null_id_is_error_naming_column") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[0] = null_col();
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::null_column);
    CHECK(r.error().code == errc::null_column);
    CHECK(r.error().field == "id");
}

TEST_CASE("null_type_is_a_null_type_header") {
    // As Debezium adds a placement's NULL column: the header with a null value.
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[3] = null_col();
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    REQUIRE(r->headers.size() == 2);
    CHECK(r->headers[1].name == "type");
    CHECK(r->headers[1].value_null);
}

TEST_CASE("null_topic_column_is_error_naming_column") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[1] = null_col();
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::null_column);
    CHECK(r.error().field == "aggregatetype");
}

TEST_CASE("unchanged_toast_topic_column_is_error") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[1] = toast_col();
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
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
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::unchanged_toast_column);
    CHECK(r.error().field == "payload");
}

TEST_CASE("unchanged_toast_key_is_error") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[2] = toast_col();
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error().field == "aggregateid");
}

TEST_CASE("binary_jsonb_payload_strips_version_byte") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    const std::string wire = std::string("\x01", 1) + R"({"a": 1})";
    cols[4] = b(wire);
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->value == R"({"a": 1})");
}

TEST_CASE("binary_jsonb_payload_with_unknown_version_rejected") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    for (std::string_view wire : {"\x02{}"sv, ""sv}) {
        cols[4] = b(wire);
        auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
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
        auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
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
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->value == text);
}

TEST_CASE("relation_replaced_mid_stream_reresolves_columns") {
    // After ALTER TABLE the server resends Relation with a new layout; the
    // relation_cache bumps the generation and map() must follow it.
    auto m = default_mapper();
    auto rel = outbox_relation(1);
    auto cols = good_row();
    auto r1 = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r1.has_value());
    CHECK(r1->key == "order-42");

    cached_relation rel2 = outbox_relation(2);
    rel2.columns = {{"tenant", oid_text, -1, false},      {"payload", oid_jsonb, -1, false},
                    {"type", oid_text, -1, false},        {"aggregateid", oid_text, -1, false},
                    {"aggregatetype", oid_text, -1, false}, {"id", oid_uuid, -1, true}};
    std::vector<pg::tuple_column> cols2{t("acme"), t("[1]"), t("Shipped"), t("order-7"), t("shipment"),
                                        t("11111111-1111-1111-1111-111111111111")};
    auto r2 = m.map(rel2, pg::tuple_data{cols2}, ctx, scratch);
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
    REQUIRE(m.map(rel, pg::tuple_data{cols}, ctx, scratch).has_value());
    auto rel2 = outbox_relation(2);
    rel2.columns.erase(rel2.columns.begin() + 3);  // type dropped
    auto cols2 = good_row();
    cols2.erase(cols2.begin() + 3);
    auto r = m.map(rel2, pg::tuple_data{cols2}, ctx, scratch);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::missing_column);
    CHECK(r.error().field == "type");
}

TEST_CASE("tuple_column_count_mismatch_rejected") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    cols.pop_back();
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
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

// ------------------------------------------------- Debezium Event Router options

namespace {
using outbox::envelope_kind;
using outbox::missing_policy;
using outbox::placement;
using outbox::placement_kind;

constexpr std::uint32_t oid_int4 = 23, oid_int8 = 20, oid_bytea = 17, oid_timestamp = 1114;

outbox_mapper mapper_of(routing_config cfg) {
    auto m = outbox_mapper::create(std::move(cfg));
    if (!m) INFO("create: " << m.error().describe() << " " << m.error().message);
    REQUIRE(m.has_value());
    return *m;
}

std::vector<placement> placements(std::string_view text) {
    auto p = outbox::parse_placements(text);
    REQUIRE(p.has_value());
    return *p;
}

// The outbox of outbox_relation() plus extra columns, row values given per name.
struct wide_row {
    cached_relation rel = outbox_relation();
    std::vector<pg::tuple_column> cols = good_row();
    void add(std::string name, std::uint32_t oid, pg::tuple_column v) {
        rel.columns.push_back({std::move(name), oid, -1, false});
        cols.push_back(v);
    }
    pg::tuple_data row() const { return pg::tuple_data{cols}; }
};

}  // namespace

TEST_CASE("debezium_route_by_field_and_replacement") {
    routing_config cfg;
    cfg.route_by = "type";
    cfg.topic_template = "events.${routedByValue}.v1";
    auto m = mapper_of(cfg);
    auto rel = outbox_relation();
    auto cols = good_row();
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->topic == "events.OrderCreated.v1");
    auto [prefix, suffix] = m.topic_affixes();
    CHECK(prefix == "events.");
    CHECK(suffix == ".v1");
    // The route-by column must exist.
    cfg.route_by = "tenant";
    auto m2 = mapper_of(cfg);
    auto missing = m2.check_relation(rel);
    REQUIRE(missing.has_error());
    CHECK(missing.error().field == "tenant");
}

TEST_CASE("debezium_header_placements_replace_the_default") {
    routing_config cfg;
    cfg.placements = placements("type:header:eventType, aggregatetype:header");
    auto m = mapper_of(cfg);
    auto rel = outbox_relation();
    auto cols = good_row();
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    // Headers in order: id (always), then the placements. No "type".
    REQUIRE(r->headers.size() == 3);
    CHECK(r->headers[0].name == "id");
    CHECK(r->headers[1].name == "eventType");
    CHECK(r->headers[1].value == "OrderCreated");
    CHECK(r->headers[2].name == "aggregatetype");
    CHECK(r->headers[2].value == "order");
    CHECK(r->find("type") == nullptr);
    // No placements at all: only id, as Debezium's default.
    cfg.placements.clear();
    const auto mapper_bare = mapper_of(cfg);
    auto bare = mapper_bare.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(bare.has_value());
    REQUIRE(bare->headers.size() == 1);
    CHECK(bare->headers[0].name == "id");
}

TEST_CASE("debezium_envelope_placements_build_a_json_value") {
    routing_config cfg;
    cfg.envelope = envelope_kind::json;
    cfg.placements = placements("type:envelope:eventType,created_at:envelope,n:envelope,flag:envelope,note:envelope");
    auto m = mapper_of(cfg);
    wide_row w;
    w.add("n", oid_int4, t("7"));
    w.add("flag", 16, t("t"));
    w.add("note", oid_text, t("say \"hi\"\n"));
    auto r = m.map(w.rel, w.row(), ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->value == R"({"payload":{"total": 12.5},"eventType":"OrderCreated","created_at":"2024-06-11 10:00:00+00","n":7,"flag":true,"note":"say \"hi\"\n"})");
    // A NULL payload and a NULL field are JSON nulls; a text payload is a string.
    w.cols[4] = null_col();
    w.cols[8] = null_col();
    r = m.map(w.rel, w.row(), ctx, scratch);
    REQUIRE(r.has_value());
    CHECK_FALSE(r->value_null);
    CHECK(r->value.starts_with(R"({"payload":null,)"));
    CHECK(r->value.ends_with(R"("note":null})"));
    w.rel.columns[4].type_oid = oid_text;
    w.cols[4] = t("plain");
    r = m.map(w.rel, w.row(), ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->value.starts_with(R"({"payload":"plain",)"));
}

TEST_CASE("envelope_placement_needs_the_json_envelope") {
    routing_config cfg;
    cfg.placements = placements("type:envelope");
    auto m = outbox_mapper::create(cfg);
    REQUIRE(m.has_error());
    CHECK(m.error() == errc::bad_placement);
    CHECK(m.error().message.find("--envelope json") != std::string::npos);
    cfg.envelope = envelope_kind::json;
    cfg.placements = placements("type:envelope:payload");
    CHECK(outbox_mapper::create(cfg).error() == errc::bad_placement);
    cfg.placements = placements("type:envelope:x,aggregatetype:envelope:x");
    CHECK(outbox_mapper::create(cfg).error() == errc::bad_placement);
}

TEST_CASE("debezium_partition_placement") {
    routing_config cfg;
    cfg.placements = placements("part:partition");
    auto m = mapper_of(cfg);
    wide_row w;
    w.add("part", oid_int4, t("3"));
    auto r = m.map(w.rel, w.row(), ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->partition == 3);
    w.cols.back() = null_col();  // NULL: the partitioner decides
    r = m.map(w.rel, w.row(), ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->partition == outbox::any_partition);
    for (const char* bad : {"-1", "x", "2147483648", "1.5"}) {
        CAPTURE(bad);
        w.cols.back() = t(bad);
        r = m.map(w.rel, w.row(), ctx, scratch);
        REQUIRE(r.has_error());
        CHECK(r.error() == errc::bad_value);
        CHECK(r.error().field == "part");
    }
    // Only one partition column.
    cfg.placements = placements("a:partition,b:partition");
    CHECK(outbox_mapper::create(cfg).error() == errc::bad_placement);
}

TEST_CASE("debezium_tombstone_on_empty_payload") {
    routing_config cfg;
    auto rel = outbox_relation();
    rel.columns[4].type_oid = oid_text;
    auto cols = good_row();
    for (const char* v : {"", "   ", "\n"}) {
        CAPTURE(v);
        cols[4] = t(v);
        cfg.tombstone_on_empty_payload = false;
        const auto mapper_kept = mapper_of(cfg);
        auto kept = mapper_kept.map(rel, pg::tuple_data{cols}, ctx, scratch);
        REQUIRE(kept.has_value());
        CHECK_FALSE(kept->value_null);
        CHECK(kept->value == v);
        cfg.tombstone_on_empty_payload = true;
        const auto mapper_gone = mapper_of(cfg);
        auto gone = mapper_gone.map(rel, pg::tuple_data{cols}, ctx, scratch);
        REQUIRE(gone.has_value());
        CHECK(gone->value_null);
        CHECK(gone->key == "order-42");  // a tombstone keeps its key (compaction)
    }
    cols[4] = t("x");
    const auto mapper_full = mapper_of(cfg);
    auto full = mapper_full.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(full.has_value());
    CHECK(full->value == "x");
}

TEST_CASE("debezium_additional_missing_error_or_ignore") {
    routing_config cfg;
    cfg.placements = placements("type:header,region:header");
    auto rel = outbox_relation();
    auto cols = good_row();
    const auto mapper_err = mapper_of(cfg);
    auto err = mapper_err.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(err.has_error());
    CHECK(err.error() == errc::missing_column);
    CHECK(err.error().field == "region");
    cfg.additional_missing = missing_policy::ignore;
    const auto mapper_ok = mapper_of(cfg);
    auto ok = mapper_ok.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(ok.has_value());
    CHECK(ok->find("type") != nullptr);
    CHECK(ok->find("region") == nullptr);
}

TEST_CASE("record_timestamp_is_the_commit_time_or_the_column") {
    routing_config cfg;
    auto rel = outbox_relation();
    auto cols = good_row();
    const auto mapper_r = mapper_of(cfg);
    auto r = mapper_r.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->timestamp_ms == 1'718'100'000'500);  // the commit time, in ms

    cfg.columns.timestamp = "created_at";  // timestamptz
    auto m = mapper_of(cfg);
    struct example {
        const char* text;
        std::uint32_t oid;
        std::int64_t ms;
    };
    for (const example& e : {example{"2024-06-11 10:00:00+00", oid_timestamptz, 1'718'100'000'000},
                             example{"2024-06-11 12:00:00.123456+02", oid_timestamptz, 1'718'100'000'123},
                             example{"2024-06-11 05:30:00-04:30", oid_timestamptz, 1'718'100'000'000},
                             example{"2024-06-11 10:00:00.5", oid_timestamp, 1'718'100'000'500},
                             example{"2024-06-11T10:00:00Z", oid_text, 1'718'100'000'000},
                             example{"1718100000123", oid_int8, 1'718'100'000'123}}) {
        CAPTURE(e.text);
        rel.columns[5].type_oid = e.oid;
        cols[5] = t(e.text);
        auto x = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
        REQUIRE(x.has_value());
        CHECK(x->timestamp_ms == e.ms);
    }
    rel.columns[5].type_oid = oid_timestamptz;
    cols[5] = null_col();  // NULL: the commit time, as Debezium falls back
    auto n = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(n.has_value());
    CHECK(n->timestamp_ms == 1'718'100'000'500);
    for (const char* bad : {"infinity", "2024-06-11 10:00:00 BC", "1969-12-31 23:59:59+00", "yesterday", "11/06/2024"}) {
        CAPTURE(bad);
        cols[5] = t(bad);
        auto x = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
        REQUIRE(x.has_error());
        CHECK(x.error() == errc::bad_value);
        CHECK(x.error().field == "created_at");
        CHECK_FALSE(x.error().message.empty());
    }
}

TEST_CASE("cloudevents_binary_mode_headers") {
    routing_config cfg;
    cfg.envelope = envelope_kind::cloudevents;
    cfg.placements.clear();
    auto m = mapper_of(cfg);
    m.set_database("shop");
    auto rel = outbox_relation();
    auto cols = good_row();
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(hdr(*r, "ce_specversion") == "1.0");
    CHECK(hdr(*r, "ce_id") == "6f1c2a7e-1b0e-4a57-9d3c-0c7f3f9d6a11");
    CHECK(hdr(*r, "ce_source") == "/shop/public.outbox");
    CHECK(hdr(*r, "ce_type") == "OrderCreated");
    CHECK(hdr(*r, "ce_time") == "2024-06-11T10:00:00.500000Z");
    CHECK(hdr(*r, "ce_subject") == "order-42");
    CHECK(hdr(*r, "content-type") == "application/json");
    CHECK(r->value == R"({"total": 12.5})");  // binary mode: the data is the value
    // No key: no subject. No value: no content type.
    cols[2] = null_col();
    cols[4] = null_col();
    r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->find("ce_subject") == nullptr);
    CHECK(r->find("content-type") == nullptr);
    CHECK(r->value_null);
    // ce_type is required.
    cols = good_row();
    cols[3] = null_col();
    auto e = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(e.has_error());
    CHECK(e.error() == errc::null_column);
    CHECK(e.error().field == "type");
    // Configured source and content type.
    cfg.ce_source = "urn:shop:orders";
    cfg.ce_content_type = "application/cloudevents-data+json";
    auto m2 = mapper_of(cfg);
    cols = good_row();
    r = m2.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(hdr(*r, "ce_source") == "urn:shop:orders");
    CHECK(hdr(*r, "content-type") == "application/cloudevents-data+json");
    // Placements may not shadow the attributes.
    cfg.placements = placements("type:header:ce_type");
    CHECK(outbox_mapper::create(cfg).error() == errc::bad_placement);
}

TEST_CASE("bytea_payload_is_decoded_from_hex") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    rel.columns[4].type_oid = oid_bytea;
    auto cols = good_row();
    cols[4] = t("\\x00ff41");
    auto r = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->value == std::string_view("\x00\xff" "A", 3));
    for (const char* bad : {"\\x0", "\\xzz", "abc"}) {
        CAPTURE(bad);
        cols[4] = t(bad);
        auto e = m.map(rel, pg::tuple_data{cols}, ctx, scratch);
        REQUIRE(e.has_error());
        CHECK(e.error() == errc::bad_value);
        CHECK(e.error().field == "payload");
    }
    // In the json envelope: base64, as Kafka Connect's JsonConverter writes bytes.
    routing_config cfg;
    cfg.envelope = envelope_kind::json;
    cols[4] = t("\\x00ff41");
    const auto mapper_j = mapper_of(cfg);
    auto j = mapper_j.map(rel, pg::tuple_data{cols}, ctx, scratch);
    REQUIRE(j.has_value());
    CHECK(j->value == R"({"payload":"AP9B"})");
}

TEST_CASE("w3c_trace_context_columns") {
    const std::string_view good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    auto m = default_mapper();
    wide_row w;
    w.add("traceparent", oid_text, t(good));
    w.add("tracestate", oid_text, t("congo=t61rcWkgMzE"));
    auto r = m.map(w.rel, w.row(), ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(hdr(*r, "traceparent") == good);
    CHECK(hdr(*r, "tracestate") == "congo=t61rcWkgMzE");
    CHECK_FALSE(scratch.trace_dropped);
    // Malformed: left out with its tracestate, and said so.
    w.cols[6] = t("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01");
    r = m.map(w.rel, w.row(), ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->find("traceparent") == nullptr);
    CHECK(r->find("tracestate") == nullptr);
    CHECK(scratch.trace_dropped);
    // NULL: nothing, and nothing dropped.
    w.cols[6] = null_col();
    r = m.map(w.rel, w.row(), ctx, scratch);
    REQUIRE(r.has_value());
    CHECK(r->find("traceparent") == nullptr);
    CHECK_FALSE(scratch.trace_dropped);
}

TEST_CASE("valid_traceparent_follows_w3c") {
    using outbox::valid_traceparent;
    CHECK(valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    CHECK(valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"));
    CHECK(valid_traceparent("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds"));
    CHECK_FALSE(valid_traceparent("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    CHECK_FALSE(valid_traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01"));
    CHECK_FALSE(valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"));
    CHECK_FALSE(valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"));
    CHECK_FALSE(valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01"));
    CHECK_FALSE(valid_traceparent(""));
}

TEST_CASE("extra_headers_follow_the_placements") {
    auto m = default_mapper();
    auto rel = outbox_relation();
    auto cols = good_row();
    const outbox::header extra[] = {{"tenant", "acme"},
                                    {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                                    {"gone", "", true}};
    auto r = m.map(rel, pg::tuple_data{cols}, outbox::row_context{0, extra}, scratch);
    REQUIRE(r.has_value());
    REQUIRE(r->headers.size() == 5);
    CHECK(r->headers[2].name == "tenant");
    CHECK(r->headers[3].name == "gone");
    CHECK(r->headers[3].value_null);
    CHECK(r->headers[4].name == "traceparent");
}

TEST_CASE("parse_placements_debezium_syntax") {
    CHECK(placements("").empty());
    CHECK(placements(" a:header , b:envelope:x ,c:partition") ==
          std::vector<placement>{{"a", placement_kind::header, "a"},
                                 {"b", placement_kind::envelope, "x"},
                                 {"c", placement_kind::partition, "c"}});
    for (const char* bad : {"a", "a:body", "a:header:x:y", ":header", "a:header:", "a:header,"}) {
        CAPTURE(bad);
        auto p = outbox::parse_placements(bad);
        REQUIRE(p.has_error());
        CHECK(p.error() == errc::bad_placement);
        CHECK_FALSE(p.error().message.empty());
    }
}

TEST_CASE("salvage_keeps_the_header_placements") {
    routing_config cfg;
    cfg.placements = placements("type:header:eventType");
    auto m = mapper_of(cfg);
    auto rel = outbox_relation();
    auto cols = good_row();
    cols[1] = null_col();  // the routing column: map() refuses
    REQUIRE(m.map(rel, pg::tuple_data{cols}, ctx, scratch).has_error());
    auto s = m.salvage(rel, pg::tuple_data{cols}, ctx, scratch);
    CHECK(hdr(s, "id") == "6f1c2a7e-1b0e-4a57-9d3c-0c7f3f9d6a11");
    CHECK(hdr(s, "eventType") == "OrderCreated");
    CHECK(s.key == "order-42");
    CHECK(s.timestamp_ms == 1'718'100'000'500);
}
