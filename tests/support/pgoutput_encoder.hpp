#pragma once
// Test-side ENCODER for pgoutput messages and CopyBoth frames, written from the
// byte layouts in PostgreSQL's proto.c / the protocol docs (PROTOCOL.md §1.3,
// §2.2), independently of the decoder: it shares no code with src/core, so a
// misunderstanding in one shows up as a round-trip failure (and the golden
// fixtures check both against a real server).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace outbox::test {

// Appends big-endian fields to a byte string.
class bytes_builder {
public:
    bytes_builder& u8(std::uint8_t v) { buf_.push_back(static_cast<char>(v)); return *this; }
    bytes_builder& ch(char c) { buf_.push_back(c); return *this; }
    bytes_builder& u16(std::uint16_t v) { return be(v, 2); }
    bytes_builder& i16(std::int16_t v) { return be(static_cast<std::uint16_t>(v), 2); }
    bytes_builder& u32(std::uint32_t v) { return be(v, 4); }
    bytes_builder& i32(std::int32_t v) { return be(static_cast<std::uint32_t>(v), 4); }
    bytes_builder& u64(std::uint64_t v) { return be(v, 8); }
    bytes_builder& i64(std::int64_t v) { return be(static_cast<std::uint64_t>(v), 8); }
    // String: the bytes, then NUL.
    bytes_builder& str(std::string_view s) { buf_.append(s); buf_.push_back('\0'); return *this; }
    bytes_builder& raw(std::string_view s) { buf_.append(s); return *this; }
    bytes_builder& opt_xid(std::optional<std::uint32_t> xid) { return xid ? u32(*xid) : *this; }
    std::string take() { return std::move(buf_); }

private:
    bytes_builder& be(std::uint64_t v, int n) {
        for (int i = n - 1; i >= 0; --i) buf_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
        return *this;
    }
    std::string buf_;
};

struct enc_column {  // one TupleData column
    char kind;          // 'n', 'u', 't', 'b'
    std::string value;  // for 't'/'b'
};

struct enc_rel_column {
    std::uint8_t flags;
    std::string name;
    std::uint32_t type_oid;
    std::int32_t typmod;
};

inline std::string enc_tuple_body(const std::vector<enc_column>& cols) {
    bytes_builder b;
    b.i16(static_cast<std::int16_t>(cols.size()));
    for (const auto& c : cols) {
        b.ch(c.kind);
        if (c.kind == 't' || c.kind == 'b') b.i32(static_cast<std::int32_t>(c.value.size())).raw(c.value);
    }
    return b.take();
}

inline std::string enc_begin(std::uint64_t final_lsn, std::int64_t ts, std::uint32_t xid) {
    return bytes_builder{}.ch('B').u64(final_lsn).i64(ts).u32(xid).take();
}
inline std::string enc_commit(std::uint8_t flags, std::uint64_t commit_lsn, std::uint64_t end_lsn, std::int64_t ts) {
    return bytes_builder{}.ch('C').u8(flags).u64(commit_lsn).u64(end_lsn).i64(ts).take();
}
inline std::string enc_origin(std::uint64_t lsn, std::string_view name) {
    return bytes_builder{}.ch('O').u64(lsn).str(name).take();
}
inline std::string enc_relation(std::optional<std::uint32_t> xid, std::uint32_t relid, std::string_view nsp,
                                std::string_view rel, char replident, const std::vector<enc_rel_column>& cols) {
    bytes_builder b;
    b.ch('R').opt_xid(xid).u32(relid).str(nsp).str(rel).ch(replident).i16(static_cast<std::int16_t>(cols.size()));
    for (const auto& c : cols) b.u8(c.flags).str(c.name).u32(c.type_oid).i32(c.typmod);
    return b.take();
}
inline std::string enc_type(std::optional<std::uint32_t> xid, std::uint32_t oid, std::string_view nsp,
                            std::string_view name) {
    return bytes_builder{}.ch('Y').opt_xid(xid).u32(oid).str(nsp).str(name).take();
}
inline std::string enc_insert(std::optional<std::uint32_t> xid, std::uint32_t relid,
                              const std::vector<enc_column>& cols) {
    return bytes_builder{}.ch('I').opt_xid(xid).u32(relid).ch('N').raw(enc_tuple_body(cols)).take();
}
// old_kind 0 = no old tuple.
inline std::string enc_update(std::optional<std::uint32_t> xid, std::uint32_t relid, char old_kind,
                              const std::vector<enc_column>& old_cols, const std::vector<enc_column>& new_cols) {
    bytes_builder b;
    b.ch('U').opt_xid(xid).u32(relid);
    if (old_kind != 0) b.ch(old_kind).raw(enc_tuple_body(old_cols));
    b.ch('N').raw(enc_tuple_body(new_cols));
    return b.take();
}
inline std::string enc_delete(std::optional<std::uint32_t> xid, std::uint32_t relid, char old_kind,
                              const std::vector<enc_column>& old_cols) {
    return bytes_builder{}.ch('D').opt_xid(xid).u32(relid).ch(old_kind).raw(enc_tuple_body(old_cols)).take();
}
inline std::string enc_truncate(std::optional<std::uint32_t> xid, std::uint8_t options,
                                const std::vector<std::uint32_t>& relids) {
    bytes_builder b;
    b.ch('T').opt_xid(xid).i32(static_cast<std::int32_t>(relids.size())).u8(options);
    for (auto r : relids) b.u32(r);
    return b.take();
}
inline std::string enc_message(std::optional<std::uint32_t> xid, std::uint8_t flags, std::uint64_t lsn,
                               std::string_view prefix, std::string_view content) {
    return bytes_builder{}
        .ch('M').opt_xid(xid).u8(flags).u64(lsn).str(prefix)
        .i32(static_cast<std::int32_t>(content.size())).raw(content).take();
}
inline std::string enc_stream_start(std::uint32_t xid, std::uint8_t first) {
    return bytes_builder{}.ch('S').u32(xid).u8(first).take();
}
inline std::string enc_stream_stop() { return std::string(1, 'E'); }
inline std::string enc_stream_commit(std::uint32_t xid, std::uint8_t flags, std::uint64_t commit_lsn,
                                     std::uint64_t end_lsn, std::int64_t ts) {
    return bytes_builder{}.ch('c').u32(xid).u8(flags).u64(commit_lsn).u64(end_lsn).i64(ts).take();
}
// With `parallel` (v4 streaming=parallel) the abort LSN and time follow.
inline std::string enc_stream_abort(std::uint32_t xid, std::uint32_t subxid, bool parallel = false,
                                    std::uint64_t abort_lsn = 0, std::int64_t abort_ts = 0) {
    bytes_builder b;
    b.ch('A').u32(xid).u32(subxid);
    if (parallel) b.u64(abort_lsn).i64(abort_ts);
    return b.take();
}
inline std::string enc_begin_prepare(std::uint64_t prepare_lsn, std::uint64_t end_lsn, std::int64_t ts,
                                     std::uint32_t xid, std::string_view gid) {
    return bytes_builder{}.ch('b').u64(prepare_lsn).u64(end_lsn).i64(ts).u32(xid).str(gid).take();
}
// tag 'P' (Prepare) or 'p' (Stream Prepare): same layout.
inline std::string enc_prepare(char tag, std::uint8_t flags, std::uint64_t prepare_lsn, std::uint64_t end_lsn,
                               std::int64_t ts, std::uint32_t xid, std::string_view gid) {
    return bytes_builder{}.ch(tag).u8(flags).u64(prepare_lsn).u64(end_lsn).i64(ts).u32(xid).str(gid).take();
}
inline std::string enc_commit_prepared(std::uint8_t flags, std::uint64_t commit_lsn, std::uint64_t end_lsn,
                                       std::int64_t ts, std::uint32_t xid, std::string_view gid) {
    return bytes_builder{}.ch('K').u8(flags).u64(commit_lsn).u64(end_lsn).i64(ts).u32(xid).str(gid).take();
}
inline std::string enc_rollback_prepared(std::uint8_t flags, std::uint64_t prepare_end, std::uint64_t rollback_end,
                                         std::int64_t prepare_ts, std::int64_t rollback_ts, std::uint32_t xid,
                                         std::string_view gid) {
    return bytes_builder{}
        .ch('r').u8(flags).u64(prepare_end).u64(rollback_end).i64(prepare_ts).i64(rollback_ts).u32(xid).str(gid)
        .take();
}

// CopyBoth frames (server -> client).
inline std::string enc_xlog_data(std::uint64_t start, std::uint64_t end, std::int64_t send_time,
                                 std::string_view payload) {
    return bytes_builder{}.ch('w').u64(start).u64(end).i64(send_time).raw(payload).take();
}
inline std::string enc_keepalive(std::uint64_t end, std::int64_t send_time, bool reply) {
    return bytes_builder{}.ch('k').u64(end).i64(send_time).u8(reply ? 1 : 0).take();
}

}  // namespace outbox::test
