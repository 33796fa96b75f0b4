#pragma once
// Outbox mapping: an Insert into the outbox relation -> one Kafka record,
// per the routing configuration. Debezium-compatible defaults.
#include "outbox_relay/errc.hpp"
#include "outbox_relay/pgoutput.hpp"
#include "outbox_relay/relation_cache.hpp"

#include <string>
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
    outbox_columns columns;
    // Topic template: literal text with {column} placeholders naming any column
    // of the outbox table, e.g. "outbox.event.{aggregatetype}".
    std::string topic_template = "outbox.event.{aggregatetype}";
};

// Header names carried by every record.
inline constexpr std::string_view header_id = "id";
inline constexpr std::string_view header_type = "type";
inline constexpr std::string_view header_commit_lsn = "outbox-relay.commit-lsn";  // Begin.final_lsn, X/X
inline constexpr std::string_view header_seq = "outbox-relay.seq";                 // index in txn, decimal

// A mapped record. Views point into the decoded tuple (the replication
// payload); topic is owned.
struct outbox_record {
    std::string topic;
    std::string_view key;      // aggregateid (empty view + key_null when NULL)
    bool key_null = false;
    std::string_view value;    // payload exactly as stored (text form)
    bool value_null = false;
    std::string_view id;
    std::string_view type;
};

// Error detail of a failed map(): which column, why.
struct mapping_error {
    errc code = errc::ok;
    std::string column;
};

class outbox_mapper {
public:
    // Parses the topic template; errc::bad_topic_template on an unbalanced or
    // empty placeholder.
    static result<outbox_mapper> create(routing_config cfg);

    // Whether `rel` is the configured outbox table.
    bool is_outbox(const cached_relation& rel) const noexcept;

    // Checks that `rel` has every mapped column and every template column.
    // On failure fills *err (column named) and returns errc::missing_column.
    result<void> check_relation(const cached_relation& rel, mapping_error* err = nullptr) const;

    // Maps one inserted row of the outbox. Errors name the column in *err:
    // missing_column, null_column (id/aggregatetype used in topic), unchanged_toast_column.
    // Also null_column for a NULL type, column_count_mismatch when `row` does
    // not match `rel`, bad_value for a binary jsonb payload without version
    // byte 1. Binary ('b') columns: a jsonb payload has jsonb_send's leading
    // version byte stripped; every other 'b' value is used as sent (identical
    // to text for text/varchar/json, raw bytes for e.g. uuid: stream in text
    // mode). Column indexes are resolved once per (relid, generation).
    // Loop thread only; `rel` and `row` must outlive the returned views.
    result<outbox_record> map(const cached_relation& rel, const pgoutput::tuple_data& row,
                              mapping_error* err = nullptr) const;

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
    mutable int idx_id_ = -1, idx_aggregatetype_ = -1, idx_aggregateid_ = -1, idx_type_ = -1, idx_payload_ = -1;
};

}  // namespace outbox
