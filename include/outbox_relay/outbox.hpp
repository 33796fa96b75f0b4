#pragma once
// Outbox routing: one inserted row of an outbox table -> one Kafka record, per
// the table's route. The options are the Debezium Outbox Event Router's, point
// by point (README "Routing" has the migration table):
//
//   topic      the template: literal text, {column} placeholders and
//              ${routedByValue} (= {route_by})       route.by.field, route.topic.replacement
//   key        the key column; NULL -> null key      table.field.event.key
//   value      the payload column, as an envelope    table.field.event.payload
//              raw | json | cloudevents              (envelope placements -> json)
//   headers    "id" always, then the header          table.field.event.id,
//              placements, trace context, CE attrs   table.fields.additional.placement
//   partition  a column:partition placement          ditto
//   timestamp  a column, else the commit time        table.field.event.timestamp
//   tombstone  empty payload -> null value           route.tombstone.on.empty.payload
//   missing    a placement column the table lacks:   table.field.additional.missing
//              error | ignore
//
// An outbox message (pg_logical_emit_message, outbox_message.hpp) is mapped
// the same way: its JSON fields become the columns of a one-row relation.
#include "outbox_relay/errc.hpp"
#include "outbox_relay/pgoutput.hpp"
#include "outbox_relay/record.hpp"
#include "outbox_relay/relation_cache.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outbox {

// Where an additional column goes (Debezium's "column:placement[:alias]").
enum class placement_kind : std::uint8_t { header, envelope, partition };

struct placement {
    std::string column;
    placement_kind where = placement_kind::header;
    std::string alias;  // header name or envelope field; the column's name when not given
    bool operator==(const placement&) const = default;
};

// Parses Debezium's list syntax, "col:header[:alias],col:envelope[:alias],
// col:partition" (spaces around items allowed, "" = none). Errors:
// bad_placement with error::field = the offending item and error::message
// = why.
result<std::vector<placement>> parse_placements(std::string_view text);
// The list back in that syntax (aliases equal to the column are left out).
std::string placements_text(const std::vector<placement>& list);

enum class envelope_kind : std::uint8_t {
    raw,          // the payload bytes as stored (bytea decoded, jsonb as text)
    json,         // {"payload": <payload>, <envelope placements>...}
    cloudevents,  // CloudEvents 1.0 Kafka binding, binary mode: ce_* headers, value = payload
};
enum class missing_policy : std::uint8_t { error, ignore };

std::string_view envelope_name(envelope_kind e) noexcept;

struct outbox_columns {
    std::string id = "id";                    // header "id", ce_id
    std::string key = "aggregateid";          // the Kafka key, ce_subject
    std::string type = "type";                // ce_type (and a header through the default placement)
    std::string payload = "payload";          // the value
    std::string timestamp;                    // record timestamp; empty = the commit time
    std::string traceparent = "traceparent";  // W3C trace context, used when the table has the column
    std::string tracestate = "tracestate";
};

// The placement every route has unless configured otherwise: the event
// type as header "type".
std::vector<placement> default_placements();

struct routing_config {
    std::string schema = "public";
    std::string table = "outbox";
    // The table's OID when known (pg_setup reads it; the root of a
    // partitioned table): a relation with this OID is the outbox even after
    // a rename. 0 = match by name only.
    std::uint32_t relid = 0;
    outbox_columns columns;
    std::string route_by = "aggregatetype";  // the column ${routedByValue} stands for
    // Literal [A-Za-z0-9._-] text, {column} placeholders naming any column,
    // and ${routedByValue}. No placeholder: one fixed topic; "{col}" alone:
    // the column holds the whole topic name.
    std::string topic_template = "outbox.event.${routedByValue}";
    std::vector<placement> placements = default_placements();
    missing_policy additional_missing = missing_policy::error;
    bool tombstone_on_empty_payload = false;  // NULL, empty or blank payload -> null value
    envelope_kind envelope = envelope_kind::raw;
    std::string ce_source;        // ce_source; empty = "/<database>/<schema>.<table>"
    std::string ce_content_type;  // content-type; empty = from the payload column's type
};

// Header names of the mapped columns every record carries (the position
// headers are dedupe.hpp's).
inline constexpr std::string_view header_id = "id";
inline constexpr std::string_view header_traceparent = "traceparent";
inline constexpr std::string_view header_tracestate = "tracestate";

// Headers a dead letter adds to the record it stands for.
inline constexpr std::string_view header_dlq_reason = "outbox-relay.dlq.reason";  // a stable word (README)
inline constexpr std::string_view header_dlq_detail = "outbox-relay.dlq.detail";  // one line of why
inline constexpr std::string_view header_dlq_topic = "outbox-relay.dlq.topic";    // where it was meant to go
inline constexpr std::string_view header_dlq_table = "outbox-relay.dlq.table";    // schema.table of the row
inline constexpr std::string_view header_dlq_value_bytes = "outbox-relay.dlq.value-bytes";  // value left out: its size

// Header names the relay writes itself: no placement alias and no
// message header may use them.
bool reserved_header_name(std::string_view name) noexcept;

// Whether `v` is a W3C traceparent the relay passes on: version 00 (exactly
// 55 characters) or a later one (at least 55, '-' after the flags), never
// ff; lower-case hex; trace-id and parent-id not all zeros.
bool valid_traceparent(std::string_view v) noexcept;

// What a row is mapped with besides its columns.
struct row_context {
    std::int64_t commit_time_us = 0;  // commit time of its transaction, µs since the Unix epoch
    // Added after the placements (an outbox message's "headers" object); a
    // traceparent/tracestate among them is checked like the columns.
    std::span<const header> extra_headers;
};

// Storage that a mapped record's views point into besides the tuple. One per
// caller, reused row after row; the next map() overwrites it.
struct record_scratch {
    std::string topic;
    std::vector<header> headers;
    std::string value;    // a built json envelope
    std::string bytes;    // a decoded bytea payload
    std::string ce_time;  // RFC 3339
    std::string ce_source;
    bool trace_dropped = false;  // the row's traceparent was malformed and left out
};

class outbox_mapper {
public:
    // Checks the route: the template (bad_topic_template, field = the
    // template), the placements (bad_placement: an envelope placement
    // without the json envelope, two partition placements, an empty,
    // duplicate, reserved or CloudEvents alias; field = the placement).
    static result<outbox_mapper> create(routing_config cfg);

    // Whether `rel` is this route's table: its OID (when known), or its
    // schema and name.
    bool is_outbox(const cached_relation& rel) const noexcept;

    // Checks that `rel` has every column the route needs: id, key, payload,
    // the template's, the timestamp column when set, type for CloudEvents,
    // and the placements' unless additional_missing is ignore. Error:
    // missing_column, naming the column in error::field.
    result<void> check_relation(const cached_relation& rel) const;

    // Maps one inserted row to a record. Errors name the column in
    // error::field (error::message says more where it helps):
    // missing_column; null_column (id, a template column, type for
    // CloudEvents); unchanged_toast_column; column_count_mismatch when `row`
    // does not match `rel`; bad_value (a partition column that is not an
    // int32 >= 0, a timestamp column that is not a time, a binary jsonb
    // without version byte 1, a bytea that is not hex); invalid_topic when
    // the routed name is not a valid Kafka topic (field = the template).
    // Text-mode values are used as Postgres prints them, except bytea
    // (decoded from \x hex). Column indexes are resolved once per (relid,
    // generation). One thread at a time; the record views `row`'s bytes,
    // ctx.extra_headers, `scratch` and this mapper (header names are its
    // placements' aliases), so all must outlive it, and the next map() with
    // the same scratch replaces it.
    result<record> map(const cached_relation& rel, const pgoutput::tuple_data& row, const row_context& ctx,
                       record_scratch& scratch) const;

    // What can be read of a row map() refused, for its dead letter: key and
    // value (raw) when present and set, header id and the header placements
    // that are set, the timestamp of ctx, no topic. Never fails; reads
    // columns by name, so it also works when the relation lacks some. Same
    // lifetime rules as map().
    record salvage(const cached_relation& rel, const pgoutput::tuple_data& row, const row_context& ctx,
                   record_scratch& scratch) const;

    // The literal text before the template's first placeholder and after its
    // last: every routed topic starts and ends with them (a template without
    // placeholders: the whole name, and an empty suffix).
    std::pair<std::string, std::string> topic_affixes() const;

    // The database name for the default ce_source ("/<database>/<label>").
    void set_database(std::string_view database);
    // What the route reads: "schema.table" (set for a message route by
    // set_label).
    const std::string& label() const noexcept { return label_; }
    void set_label(std::string label);

    const routing_config& config() const noexcept { return cfg_; }

private:
    struct segment {
        bool placeholder;
        std::string text;  // literal text, or column name
    };
    void resolve(const cached_relation& rel) const;
    routing_config cfg_;
    std::string label_;
    std::string database_;
    std::string ce_source_;
    std::vector<segment> segments_;
    bool has_placeholder_ = false;
    // Column indexes resolved for the relation generation last seen (-1 = absent).
    mutable std::uint64_t resolved_generation_ = 0;
    mutable std::uint32_t resolved_relid_ = 0;
    mutable std::vector<int> segment_index_;
    mutable std::vector<int> placement_index_;
    mutable int idx_id_ = -1, idx_key_ = -1, idx_type_ = -1, idx_payload_ = -1, idx_timestamp_ = -1,
                idx_traceparent_ = -1, idx_tracestate_ = -1;
};

}  // namespace outbox
