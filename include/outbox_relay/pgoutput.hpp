#pragma once
// pgoutput logical replication messages, protocol versions 1-4, decoded from
// the payload of one XLogData ('w') frame. Layouts follow PostgreSQL's
// proto.c (logicalrep_write_*) and the "Logical Replication Message Formats"
// chapter of the protocol docs:
// https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
//
// All integers are big-endian. String = NUL-terminated. "[xid]" is an Int32
// present only inside a streamed transaction (between Stream Start and Stream
// Stop, protocol >= 2).
//
// Views: every std::string_view in a decoded message points into the payload
// passed to decoder::decode; tuple column arrays point into storage owned by
// the decoder. Both stay valid until the next decode() call on the same
// decoder or until the payload buffer is released, whichever comes first.
#include "outbox_relay/errc.hpp"
#include "outbox_relay/lsn.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

namespace outbox::pgoutput {

// TupleData column: Byte1 kind, then for 't'/'b' Int32 len + len bytes.
enum class column_kind : char {
    null = 'n',            // NULL, nothing follows
    unchanged_toast = 'u', // unchanged TOASTed value, nothing follows
    text = 't',            // text output of the type
    binary = 'b',          // typsend output (binary 'true')
};

struct tuple_column {
    column_kind kind = column_kind::null;
    std::string_view value;  // empty for null / unchanged_toast
};

// TupleData: Int16 ncols, then ncols columns.
struct tuple_data {
    std::span<const tuple_column> columns;
};

// 'B' Begin: Int64 final_lsn, Int64 commit_ts, Int32 xid
struct begin {
    lsn final_lsn;           // LSN of the commit record (== Commit.commit_lsn)
    std::int64_t commit_ts;  // µs since 2000-01-01 UTC
    std::uint32_t xid;
};

// 'C' Commit: Int8 flags(0), Int64 commit_lsn, Int64 end_lsn, Int64 commit_ts
struct commit {
    std::uint8_t flags;
    lsn commit_lsn;
    lsn end_lsn;  // end of the commit record: what the relay confirms
    std::int64_t commit_ts;
};

// 'O' Origin: Int64 commit_lsn, String name
struct origin {
    lsn commit_lsn;
    std::string_view name;
};

// One column of a Relation message: Int8 flags, String name, Int32 type, Int32 typmod
struct relation_column {
    std::uint8_t flags;  // 1 = part of the replica identity key
    std::string_view name;
    std::uint32_t type_oid;
    std::int32_t type_modifier;
};

// 'R' Relation: [xid], Int32 relid, String nspname, String relname,
// Int8 replident, Int16 ncols, ncols x relation_column
struct relation {
    std::optional<std::uint32_t> xid;
    std::uint32_t relid;
    std::string_view nspname;  // "" means pg_catalog
    std::string_view relname;
    char replica_identity;     // 'd' default, 'n' nothing, 'f' full, 'i' index
    std::span<const relation_column> columns;
};

// 'Y' Type: [xid], Int32 oid, String nspname, String typname
struct type {
    std::optional<std::uint32_t> xid;
    std::uint32_t type_oid;
    std::string_view nspname;
    std::string_view typname;
};

// 'I' Insert: [xid], Int32 relid, 'N', TupleData
struct insert {
    std::optional<std::uint32_t> xid;
    std::uint32_t relid;
    tuple_data new_tuple;
};

// 'U' Update: [xid], Int32 relid, optional ('K' | 'O') TupleData, 'N' TupleData
struct update {
    std::optional<std::uint32_t> xid;
    std::uint32_t relid;
    char old_kind;  // 'K' key only, 'O' full old row, 0 when absent
    tuple_data old_tuple;
    tuple_data new_tuple;
};

// 'D' Delete: [xid], Int32 relid, ('K' | 'O') TupleData
struct delete_ {
    std::optional<std::uint32_t> xid;
    std::uint32_t relid;
    char old_kind;  // 'K' or 'O'
    tuple_data old_tuple;
};

// 'T' Truncate: [xid], Int32 nrels, Int8 options, nrels x Int32 relid
struct truncate {
    std::optional<std::uint32_t> xid;
    std::uint8_t options;  // 1 = CASCADE, 2 = RESTART IDENTITY
    std::span<const std::uint32_t> relids;
};

// 'M' Message: [xid], Int8 flags, Int64 lsn, String prefix, Int32 len, Byte[len]
struct message {
    std::optional<std::uint32_t> xid;
    std::uint8_t flags;  // 1 = transactional
    lsn message_lsn;
    std::string_view prefix;
    std::string_view content;
    bool transactional() const noexcept { return (flags & 1) != 0; }
};

// 'S' Stream Start (v2): Int32 xid, Int8 first_segment
struct stream_start {
    std::uint32_t xid;
    std::uint8_t first_segment;
};

// 'E' Stream Stop (v2): no fields
struct stream_stop {};

// 'c' Stream Commit (v2): Int32 xid, Int8 flags, Int64 commit_lsn, Int64 end_lsn, Int64 commit_ts
struct stream_commit {
    std::uint32_t xid;
    std::uint8_t flags;
    lsn commit_lsn;
    lsn end_lsn;
    std::int64_t commit_ts;
};

// 'A' Stream Abort (v2): Int32 xid, Int32 subxid
//   v4 with streaming=parallel adds: Int64 abort_lsn, Int64 abort_ts
struct stream_abort {
    std::uint32_t xid;
    std::uint32_t subxid;
    std::optional<lsn> abort_lsn;
    std::optional<std::int64_t> abort_ts;
};

// 'b' Begin Prepare (v3): Int64 prepare_lsn, Int64 end_lsn, Int64 prepare_ts, Int32 xid, String gid
struct begin_prepare {
    lsn prepare_lsn;
    lsn end_lsn;
    std::int64_t prepare_ts;
    std::uint32_t xid;
    std::string_view gid;
};

// 'P' Prepare (v3): Int8 flags, Int64 prepare_lsn, Int64 end_lsn, Int64 prepare_ts, Int32 xid, String gid
struct prepare {
    std::uint8_t flags;
    lsn prepare_lsn;
    lsn end_lsn;
    std::int64_t prepare_ts;
    std::uint32_t xid;
    std::string_view gid;
};

// 'p' Stream Prepare (v3): same layout as Prepare
struct stream_prepare : prepare {};

// 'K' Commit Prepared (v3): Int8 flags, Int64 commit_lsn, Int64 end_lsn, Int64 commit_ts, Int32 xid, String gid
struct commit_prepared {
    std::uint8_t flags;
    lsn commit_lsn;
    lsn end_lsn;
    std::int64_t commit_ts;
    std::uint32_t xid;
    std::string_view gid;
};

// 'r' Rollback Prepared (v3): Int8 flags, Int64 prepare_end_lsn, Int64 rollback_end_lsn,
// Int64 prepare_ts, Int64 rollback_ts, Int32 xid, String gid
struct rollback_prepared {
    std::uint8_t flags;
    lsn prepare_end_lsn;
    lsn rollback_end_lsn;
    std::int64_t prepare_ts;
    std::int64_t rollback_ts;
    std::uint32_t xid;
    std::string_view gid;
};

using message_variant =
    std::variant<begin, commit, origin, relation, type, insert, update, delete_, truncate, message,
                 stream_start, stream_stop, stream_commit, stream_abort, begin_prepare, prepare,
                 stream_prepare, commit_prepared, rollback_prepared>;

struct decoder_options {
    int proto_version = 1;          // 1..4, as sent in START_REPLICATION
    bool streaming_parallel = false; // v4 "streaming 'parallel'": Stream Abort carries lsn+ts
};

// Stateful decoder for one replication stream. Tracks Stream Start/Stop so it
// knows when the [xid] prefix is present. Not thread-safe; one per stream.
class decoder {
public:
    explicit decoder(decoder_options opts = {}) noexcept;

    // Decodes one pgoutput message. Errors: truncated, trailing_bytes,
    // unknown_tag, tag_not_in_version, bad_string, bad_value; the error names
    // the tag being decoded, the field and the byte offset at which that
    // field starts (error::tag, error::field, error::offset).
    result<message_variant> decode(std::string_view payload);

    bool in_stream() const noexcept { return in_stream_; }
    const decoder_options& options() const noexcept { return opts_; }

private:
    decoder_options opts_;
    bool in_stream_ = false;
    std::vector<tuple_column> old_cols_;
    std::vector<tuple_column> new_cols_;
    std::vector<relation_column> rel_cols_;
    std::vector<std::uint32_t> relids_;
};

}  // namespace outbox::pgoutput
