#include "outbox_relay/errc.hpp"
#include "outbox_relay/exit_code.hpp"

#include <cstdio>
#include <cstdlib>

namespace outbox {

std::string_view errc_message(errc e) noexcept {
    switch (e) {
        case errc::ok: return "ok";
        case errc::truncated: return "input truncated inside a field";
        case errc::trailing_bytes: return "unexpected bytes after the end of a message";
        case errc::unknown_tag: return "unknown message tag";
        case errc::tag_not_in_version: return "message tag not valid for the negotiated protocol version";
        case errc::bad_string: return "string without NUL terminator";
        case errc::bad_value: return "field value not allowed by the protocol";
        case errc::unknown_relation: return "tuple for a relation id never announced by a Relation message";
        case errc::column_count_mismatch: return "tuple column count differs from its Relation message";
        case errc::bad_lsn_text: return "malformed LSN (expected X/X in hex)";
        case errc::bad_config: return "invalid configuration";
        case errc::missing_column: return "mapped column missing from the outbox relation";
        case errc::null_column: return "mapped column is NULL";
        case errc::unchanged_toast_column: return "mapped column sent as unchanged TOAST";
        case errc::bad_topic_template: return "invalid topic template";
        case errc::invalid_topic: return "invalid Kafka topic name";
        case errc::bad_placement: return "invalid additional-field placement";
        case errc::bad_message: return "outbox message is not a JSON object with the outbox fields";
        case errc::lsn_went_backwards: return "LSN went backwards";
    }
    return "unknown outbox error";
}

std::string error::describe() const {
    std::string out = message.empty() ? std::string(errc_message(code)) : message;
    std::string where;
    auto add = [&](std::string_view k, std::string_view v) {
        where += where.empty() ? "" : ", ";
        where.append(k).append(" ").append(v);
    };
    if (tag != 0) add("tag", std::string{'\'', tag, '\''});
    if (!field.empty()) add("field", field);
    if (tag != 0 || offset != 0) add("offset", std::to_string(offset));
    if (!source.empty()) add("from", source);
    if (!where.empty()) out += " (" + where + ")";
    return out;
}

void throw_exception_from_error(const error& e, const boost::source_location& loc) {
    std::fprintf(stderr, "outbox: result::value() on an error: %s at %s:%u\n", e.describe().c_str(),
                 loc.file_name(), static_cast<unsigned>(loc.line()));
    std::fflush(stderr);
    std::abort();
}

std::string_view exit_code_name(exit_code c) noexcept {
    switch (c) {
        case exit_code::ok: return "ok";
        case exit_code::runtime: return "runtime";
        case exit_code::usage: return "usage";
        case exit_code::pg_connect: return "pg_connect";
        case exit_code::wal_level: return "wal_level";
        case exit_code::privileges: return "privileges";
        case exit_code::table_missing: return "table_missing";
        case exit_code::column_missing: return "column_missing";
        case exit_code::publication: return "publication";
        case exit_code::slot: return "slot";
        case exit_code::kafka_config: return "kafka_config";
        case exit_code::record_rejected: return "record_rejected";
        case exit_code::protocol: return "protocol";
        case exit_code::outbox_schema: return "outbox_schema";
        case exit_code::slot_lost: return "slot_lost";
        case exit_code::producer_failed: return "producer_failed";
        case exit_code::metrics_listen: return "metrics_listen";
        case exit_code::fenced: return "fenced";
    }
    return "unknown";
}

}  // namespace outbox
