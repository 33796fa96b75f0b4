#include "outbox_relay/pgoutput.hpp"

#include "outbox_relay/byte_reader.hpp"

namespace outbox::pgoutput {
namespace {

// A byte_reader that records where it failed. Every getter returns false on
// error after recording in its error the field name and the
// offset at which that field starts, so the message decoders below read as
// a list of fields and stay free of error plumbing.
class cursor {
public:
    explicit cursor(std::string_view payload) noexcept : r_(payload) {}

    void set_tag(char tag) noexcept { tag_ = tag; }

    // Failure paths only: the error is built here, so a successful decode
    // touches no string.
    bool fail(const char* field, std::size_t offset, errc e) {
        err_ = error(e, field, offset, tag_);
        return false;
    }

    bool u8(const char* field, std::uint8_t& out) noexcept { return take(field, r_.u8(), out); }
    bool u32(const char* field, std::uint32_t& out) noexcept { return take(field, r_.u32(), out); }
    bool i16(const char* field, std::int16_t& out) noexcept { return take(field, r_.i16(), out); }
    bool i32(const char* field, std::int32_t& out) noexcept { return take(field, r_.i32(), out); }
    bool i64(const char* field, std::int64_t& out) noexcept { return take(field, r_.i64(), out); }
    bool str(const char* field, std::string_view& out) noexcept { return take(field, r_.cstring(), out); }

    bool ch(const char* field, char& out) noexcept {
        std::uint8_t v = 0;
        if (!u8(field, v)) return false;
        out = static_cast<char>(v);
        return true;
    }

    bool wal_pos(const char* field, lsn& out) noexcept {
        std::uint64_t v = 0;
        if (!take(field, r_.u64(), v)) return false;
        out = lsn{v};
        return true;
    }

    bool bytes(const char* field, std::size_t n, std::string_view& out) noexcept {
        return take(field, r_.bytes(n), out);
    }

    // A length-prefixed (Int32) byte string; a negative length is bad_value.
    bool counted(const char* len_field, const char* value_field, std::string_view& out) noexcept {
        std::size_t off = r_.offset();
        std::int32_t len = 0;
        if (!i32(len_field, len)) return false;
        if (len < 0) return fail(len_field, off, errc::bad_value);
        return bytes(value_field, static_cast<std::size_t>(len), out);
    }

    // Every message must be consumed exactly: leftover bytes mean we and the
    // server disagree about the layout, and every later field would be garbage.
    bool at_end() noexcept {
        if (!r_.empty()) return fail("end", r_.offset(), errc::trailing_bytes);
        return true;
    }

    std::size_t offset() const noexcept { return r_.offset(); }
    std::size_t remaining() const noexcept { return r_.remaining(); }
    const error& err() const noexcept { return err_; }

private:
    template <class T, class U>
    bool take(const char* field, result<T> r, U& out) noexcept {
        if (!r) return fail(field, r_.offset(), r.error().code);
        out = *r;
        return true;
    }

    byte_reader r_;
    char tag_ = 0;
    error err_;
};

// The [xid] prefix that DML, Relation, Type, Truncate and Message carry
// inside a streamed transaction.
bool read_stream_xid(cursor& c, bool in_stream, std::optional<std::uint32_t>& xid) {
    if (!in_stream) {
        xid.reset();
        return true;
    }
    std::uint32_t v = 0;
    if (!c.u32("xid", v)) return false;
    xid = v;
    return true;
}

// TupleData: Int16 ncols, then per column Byte1 kind ('n'|'u'|'t'|'b'),
// and for 't'/'b' Int32 len + len bytes. Values stay views into the payload;
// the column array reuses `cols` so a warmed-up decoder does not allocate.
bool read_tuple(cursor& c, std::vector<tuple_column>& cols, tuple_data& out) {
    std::size_t off = c.offset();
    std::int16_t n = 0;
    if (!c.i16("tuple.ncols", n)) return false;
    if (n < 0) return c.fail("tuple.ncols", off, errc::bad_value);
    cols.resize(static_cast<std::size_t>(n));
    for (auto& col : cols) {
        std::size_t kind_off = c.offset();
        char kind = 0;
        if (!c.ch("column.kind", kind)) return false;
        switch (kind) {
            case 'n':  // NULL
            case 'u':  // unchanged TOAST
                col = {static_cast<column_kind>(kind), {}};
                break;
            case 't':  // text
            case 'b':  // binary (typsend)
                col.kind = static_cast<column_kind>(kind);
                if (!c.counted("column.length", "column.value", col.value)) return false;
                break;
            default:
                return c.fail("column.kind", kind_off, errc::bad_value);
        }
    }
    out.columns = std::span<const tuple_column>(cols.data(), cols.size());
    return true;
}

// Lowest protocol version that knows `tag`, or 0 when no version does.
int min_version(char tag) noexcept {
    switch (tag) {
        case 'B': case 'C': case 'O': case 'R': case 'Y':
        case 'I': case 'U': case 'D': case 'T': case 'M':
            return 1;
        case 'S': case 'E': case 'c': case 'A':  // streaming
            return 2;
        case 'b': case 'P': case 'K': case 'r': case 'p':  // two-phase
            return 3;
        default:
            return 0;
    }
}

// Shared by Prepare ('P') and Stream Prepare ('p').
bool read_prepare(cursor& c, prepare& m) {
    return c.u8("flags", m.flags) && c.wal_pos("prepare_lsn", m.prepare_lsn) &&
           c.wal_pos("end_lsn", m.end_lsn) && c.i64("prepare_ts", m.prepare_ts) && c.u32("xid", m.xid) &&
           c.str("gid", m.gid);
}

}  // namespace

decoder::decoder(decoder_options opts) noexcept : opts_(opts) {}

result<message_variant> decoder::decode(std::string_view payload) {
    cursor c(payload);
    char tag = 0;
    if (!c.ch("tag", tag)) return c.err();
    c.set_tag(tag);

    int need = min_version(tag);
    if (need == 0) {
        c.fail("tag", 0, errc::unknown_tag);
        return c.err();
    }
    if (opts_.proto_version < need) {
        c.fail("tag", 0, errc::tag_not_in_version);
        return c.err();
    }

    // Each case reads its fields in wire order; `&&` stops at the first
    // failing one, whose name and offset the cursor has already recorded.
    switch (tag) {
        case 'B': {  // Begin
            begin m{};
            if (c.wal_pos("final_lsn", m.final_lsn) && c.i64("commit_ts", m.commit_ts) && c.u32("xid", m.xid) &&
                c.at_end())
                return m;
            break;
        }
        case 'C': {  // Commit
            commit m{};
            if (c.u8("flags", m.flags) && c.wal_pos("commit_lsn", m.commit_lsn) && c.wal_pos("end_lsn", m.end_lsn) &&
                c.i64("commit_ts", m.commit_ts) && c.at_end())
                return m;
            break;
        }
        case 'O': {  // Origin
            origin m{};
            if (c.wal_pos("commit_lsn", m.commit_lsn) && c.str("name", m.name) && c.at_end()) return m;
            break;
        }
        case 'R': {  // Relation
            relation m{};
            std::size_t ncols_off = 0;
            std::int16_t ncols = 0;
            if (!(read_stream_xid(c, in_stream_, m.xid) && c.u32("relid", m.relid) &&
                  c.str("nspname", m.nspname) && c.str("relname", m.relname)))
                break;
            std::size_t ri_off = c.offset();
            if (!c.ch("replident", m.replica_identity)) break;
            if (m.replica_identity != 'd' && m.replica_identity != 'n' && m.replica_identity != 'f' &&
                m.replica_identity != 'i') {
                c.fail("replident", ri_off, errc::bad_value);
                break;
            }
            ncols_off = c.offset();
            if (!c.i16("ncols", ncols)) break;
            if (ncols < 0) {
                c.fail("ncols", ncols_off, errc::bad_value);
                break;
            }
            rel_cols_.resize(static_cast<std::size_t>(ncols));
            bool ok = true;
            for (auto& col : rel_cols_) {
                std::uint32_t typmod = 0;
                ok = c.u8("column.flags", col.flags) && c.str("column.name", col.name) &&
                     c.u32("column.type_oid", col.type_oid) && c.u32("column.typmod", typmod);
                if (!ok) break;
                col.type_modifier = static_cast<std::int32_t>(typmod);
            }
            if (!ok || !c.at_end()) break;
            m.columns = std::span<const relation_column>(rel_cols_.data(), rel_cols_.size());
            return m;
        }
        case 'Y': {  // Type
            type m{};
            if (read_stream_xid(c, in_stream_, m.xid) && c.u32("type_oid", m.type_oid) &&
                c.str("nspname", m.nspname) && c.str("typname", m.typname) && c.at_end())
                return m;
            break;
        }
        case 'I': {  // Insert
            insert m{};
            if (!(read_stream_xid(c, in_stream_, m.xid) && c.u32("relid", m.relid))) break;
            std::size_t n_off = c.offset();
            char n = 0;
            if (!c.ch("new_tuple.marker", n)) break;
            if (n != 'N') {
                c.fail("new_tuple.marker", n_off, errc::bad_value);
                break;
            }
            if (read_tuple(c, new_cols_, m.new_tuple) && c.at_end()) return m;
            break;
        }
        case 'U': {  // Update
            update m{};
            if (!(read_stream_xid(c, in_stream_, m.xid) && c.u32("relid", m.relid))) break;
            std::size_t k_off = c.offset();
            char k = 0;
            if (!c.ch("tuple.marker", k)) break;
            if (k == 'K' || k == 'O') {
                m.old_kind = k;
                if (!read_tuple(c, old_cols_, m.old_tuple)) break;
                k_off = c.offset();
                if (!c.ch("new_tuple.marker", k)) break;
            } else {
                m.old_kind = 0;
            }
            if (k != 'N') {
                c.fail(m.old_kind != 0 ? "new_tuple.marker" : "tuple.marker", k_off, errc::bad_value);
                break;
            }
            if (read_tuple(c, new_cols_, m.new_tuple) && c.at_end()) return m;
            break;
        }
        case 'D': {  // Delete
            delete_ m{};
            if (!(read_stream_xid(c, in_stream_, m.xid) && c.u32("relid", m.relid))) break;
            std::size_t k_off = c.offset();
            if (!c.ch("old_tuple.marker", m.old_kind)) break;
            if (m.old_kind != 'K' && m.old_kind != 'O') {
                c.fail("old_tuple.marker", k_off, errc::bad_value);
                break;
            }
            if (read_tuple(c, old_cols_, m.old_tuple) && c.at_end()) return m;
            break;
        }
        case 'T': {  // Truncate
            truncate m{};
            std::int32_t nrels = 0;
            if (!read_stream_xid(c, in_stream_, m.xid)) break;
            std::size_t n_off = c.offset();
            if (!(c.i32("nrels", nrels) && c.u8("options", m.options))) break;
            if (nrels < 0) {
                c.fail("nrels", n_off, errc::bad_value);
                break;
            }
            // Check the count against the bytes present before sizing the
            // vector, so a corrupt count cannot make us reserve gigabytes.
            if (static_cast<std::size_t>(nrels) > c.remaining() / 4) {
                c.fail("relids", c.offset(), errc::truncated);
                break;
            }
            relids_.resize(static_cast<std::size_t>(nrels));
            bool ok = true;
            for (auto& id : relids_)
                if (!(ok = c.u32("relid", id))) break;
            if (!ok || !c.at_end()) break;
            m.relids = std::span<const std::uint32_t>(relids_.data(), relids_.size());
            return m;
        }
        case 'M': {  // Message (pg_logical_emit_message)
            message m{};
            if (read_stream_xid(c, in_stream_, m.xid) && c.u8("flags", m.flags) &&
                c.wal_pos("message_lsn", m.message_lsn) && c.str("prefix", m.prefix) &&
                c.counted("content.length", "content", m.content) && c.at_end())
                return m;
            break;
        }
        case 'S': {  // Stream Start
            stream_start m{};
            if (in_stream_) {
                // Streams do not nest; a second Start means we lost a Stop and
                // would misread every [xid] prefix from here on.
                c.fail("tag", 0, errc::bad_value);
                break;
            }
            if (c.u32("xid", m.xid) && c.u8("first_segment", m.first_segment) && c.at_end()) {
                in_stream_ = true;
                return m;
            }
            break;
        }
        case 'E': {  // Stream Stop
            if (!in_stream_) {
                c.fail("tag", 0, errc::bad_value);
                break;
            }
            if (c.at_end()) {
                in_stream_ = false;
                return stream_stop{};
            }
            break;
        }
        case 'c': {  // Stream Commit
            stream_commit m{};
            if (c.u32("xid", m.xid) && c.u8("flags", m.flags) && c.wal_pos("commit_lsn", m.commit_lsn) &&
                c.wal_pos("end_lsn", m.end_lsn) && c.i64("commit_ts", m.commit_ts) && c.at_end())
                return m;
            break;
        }
        case 'A': {  // Stream Abort
            stream_abort m{};
            if (!(c.u32("xid", m.xid) && c.u32("subxid", m.subxid))) break;
            if (opts_.proto_version >= 4 && opts_.streaming_parallel) {
                lsn abort_lsn;
                std::int64_t abort_ts = 0;
                if (!(c.wal_pos("abort_lsn", abort_lsn) && c.i64("abort_ts", abort_ts))) break;
                m.abort_lsn = abort_lsn;
                m.abort_ts = abort_ts;
            }
            if (c.at_end()) return m;
            break;
        }
        case 'b': {  // Begin Prepare
            begin_prepare m{};
            if (c.wal_pos("prepare_lsn", m.prepare_lsn) && c.wal_pos("end_lsn", m.end_lsn) &&
                c.i64("prepare_ts", m.prepare_ts) && c.u32("xid", m.xid) && c.str("gid", m.gid) && c.at_end())
                return m;
            break;
        }
        case 'P': {  // Prepare
            prepare m{};
            if (read_prepare(c, m) && c.at_end()) return m;
            break;
        }
        case 'p': {  // Stream Prepare
            stream_prepare m{};
            if (read_prepare(c, m) && c.at_end()) return m;
            break;
        }
        case 'K': {  // Commit Prepared
            commit_prepared m{};
            if (c.u8("flags", m.flags) && c.wal_pos("commit_lsn", m.commit_lsn) && c.wal_pos("end_lsn", m.end_lsn) &&
                c.i64("commit_ts", m.commit_ts) && c.u32("xid", m.xid) && c.str("gid", m.gid) && c.at_end())
                return m;
            break;
        }
        case 'r': {  // Rollback Prepared
            rollback_prepared m{};
            if (c.u8("flags", m.flags) && c.wal_pos("prepare_end_lsn", m.prepare_end_lsn) &&
                c.wal_pos("rollback_end_lsn", m.rollback_end_lsn) && c.i64("prepare_ts", m.prepare_ts) &&
                c.i64("rollback_ts", m.rollback_ts) && c.u32("xid", m.xid) && c.str("gid", m.gid) && c.at_end())
                return m;
            break;
        }
    }
    return c.err();
}

}  // namespace outbox::pgoutput
