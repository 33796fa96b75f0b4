#pragma once
// Outbox mapping: an Insert into the outbox relation -> one Kafka record,
// per the routing configuration. Debezium-compatible defaults.
#include "outbox_relay/errc.hpp"
#include "outbox_relay/pgoutput.hpp"
#include "outbox_relay/record.hpp"
#include "outbox_relay/relation_cache.hpp"

#include <string>
#include <utility>
#include <string_view>
#include <vector>

namespace outbox {

struct outbox_columns {
    std::string id = "id";
    std::string aggregatetype = "aggregatetype";
    std::string aggregateid = "aggregateid";
    std::string type = "type";
    std::string payload = "payload";
};

struct routing_config {
    std::string schema = "public";
    std::string table = "outbox";
    // The table's OID when known (pg_setup reads it; the root of a
    // partitioned table): a relation with this OID is the outbox even after
    // a rename. 0 = match by name only.
    std::uint32_t relid = 0;
    outbox_columns columns;
    // Topic template: literal text with {column} placeholders naming any column
    // of the outbox table, e.g. "outbox.event.{aggregatetype}".
    std::string topic_template = "outbox.event.{aggregatetype}";
};

// Header names of the mapped columns every record carries (the position
// headers are dedupe.hpp's).
inline constexpr std::string_view header_id = "id";
inline constexpr std::string_view header_type = "type";

// Headers a dead letter adds to the record it stands for.
inline constexpr std::string_view header_dlq_reason = "outbox-relay.dlq.reason";  // a stable word (README)
inline constexpr std::string_view header_dlq_detail = "outbox-relay.dlq.detail";  // one line of why
inline constexpr std::string_view header_dlq_topic = "outbox-relay.dlq.topic";    // where it was meant to go
inline constexpr std::string_view header_dlq_table = "outbox-relay.dlq.table";    // schema.table of the row
inline constexpr std::string_view header_dlq_value_bytes = "outbox-relay.dlq.value-bytes";  // value left out: its size

// Storage that a mapped record's views point into besides the tuple: the
// routed topic and the header array. One per caller, reused row after row;
// the next map() overwrites it.
struct record_scratch {
    std::string topic;
    std::vector<header> headers;
};

class outbox_mapper {
public:
    // Parses the topic template; errc::bad_topic_template on an unbalanced or
    // empty placeholder.
    static result<outbox_mapper> create(routing_config cfg);

    // Whether `rel` is the configured outbox table: its OID (when known), or
    // its schema and name.
    bool is_outbox(const cached_relation& rel) const noexcept;

    // Checks that `rel` has every mapped column and every template column.
    // Error: missing_column, naming the column in error::field.
    result<void> check_relation(const cached_relation& rel) const;

    // Maps one inserted row of the outbox to a record: topic from the
    // template, key = aggregateid (NULL -> null key), value = payload (NULL ->
    // null value), headers id and type. Errors name the column in
    // error::field: missing_column, null_column (id, type, or a column the
    // topic template uses), unchanged_toast_column, column_count_mismatch when
    // `row` does not match `rel` (field empty), bad_value for a binary jsonb
    // payload without version byte 1, invalid_topic when the routed name is
    // not a valid Kafka topic (field = the template). Binary ('b') columns: a
    // jsonb payload has jsonb_send's leading version byte stripped; every
    // other 'b' value is used as sent (identical to text for
    // text/varchar/json, raw bytes for e.g. uuid: stream in text mode).
    // Column indexes are resolved once per (relid, generation). One thread at
    // a time; the record views `row`'s bytes and `scratch`, so both must
    // outlive it, and the next map() with the same scratch replaces it.
    result<record> map(const cached_relation& rel, const pgoutput::tuple_data& row,
                       record_scratch& scratch) const;

    // What can be read of a row map() refused, for its dead letter: key =
    // aggregateid and value = payload when they are present and set (as
    // map() would give them), headers id and type when set, no topic. Never
    // fails; reads columns by name, so it also works when the relation lacks
    // some. Same lifetime rules as map().
    record salvage(const cached_relation& rel, const pgoutput::tuple_data& row, record_scratch& scratch) const;

    // The literal text before the template's first placeholder and after its
    // last: every routed topic starts and ends with them (a template without
    // placeholders: the whole name, and an empty suffix).
    std::pair<std::string, std::string> topic_affixes() const;

    const routing_config& config() const noexcept { return cfg_; }

private:
    struct segment {
        bool placeholder;
        std::string text;  // literal text, or column name
    };
    routing_config cfg_;
    std::vector<segment> segments_;
    // Column indexes resolved for the relation generation last seen.
    mutable std::uint64_t resolved_generation_ = 0;
    mutable std::uint32_t resolved_relid_ = 0;
    mutable std::vector<int> segment_index_;
    bool has_placeholder_ = false;
    mutable int idx_id_ = -1, idx_aggregatetype_ = -1, idx_aggregateid_ = -1, idx_type_ = -1, idx_payload_ = -1;
};

}  // namespace outbox
