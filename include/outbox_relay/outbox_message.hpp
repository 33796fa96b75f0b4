#pragma once
// The table-less outbox: a logical decoding message
//
//   SELECT pg_logical_emit_message(true, 'outbox', '{"id": "...", "aggregatetype": "order",
//       "aggregateid": "42", "type": "OrderCreated", "payload": {...}, "headers": {"k": "v"}}');
//
// whose prefix is the configured one (--message-prefix) carries one event as
// a JSON object with the fields of an outbox row. Its top-level fields become
// the columns of a one-row relation, so the route of the messages (column
// names = field names) maps it exactly like a row; "headers" (an object of
// strings) becomes extra Kafka headers. Field types: a string is text (its
// characters, unescaped), a number int8 or float8, true/false bool, an
// object or array jsonb (re-serialised compactly, key order kept), null NULL.
#include "outbox_relay/errc.hpp"
#include "outbox_relay/pgoutput.hpp"
#include "outbox_relay/record.hpp"
#include "outbox_relay/relation_cache.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace outbox {

// The parsed message. Reused message after message; valid until the next
// parse into it.
struct outbox_message {
    cached_relation rel;                       // generation 0: the mapper resolves it every time
    std::vector<pgoutput::tuple_column> columns;
    std::vector<header> headers;               // from "headers", in document order
    std::vector<std::string> storage;          // the bytes the views above point into

    pgoutput::tuple_data row() const { return {std::span<const pgoutput::tuple_column>(columns)}; }
};

// Parses `content` (the message's bytes). Errors are errc::bad_message with
// error::message saying what is wrong: not valid JSON (with the byte
// offset), not an object, "headers" not an object, a header named
// outbox-relay.* (the relay's own). Missing fields are the mapper's to find
// (missing_column, naming the field).
result<void> parse_outbox_message(std::string_view content, outbox_message& out);

}  // namespace outbox
