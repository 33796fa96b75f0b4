#include "outbox_relay/walsender.hpp"

#include "outbox_relay/byte_reader.hpp"

namespace outbox::walsender {

std::int64_t to_pg_time(std::chrono::system_clock::time_point tp) noexcept {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(tp.time_since_epoch()).count();
    return static_cast<std::int64_t>(us) - pg_epoch_offset_us;
}

std::chrono::system_clock::time_point from_pg_time(std::int64_t pg_us) noexcept {
    // A hostile or corrupt sendTime must not overflow: clamp to what the
    // clock's duration can hold (about +-292 years around 1970 for ns).
    using sys_dur = std::chrono::system_clock::duration;
    constexpr std::int64_t max_us =
        std::chrono::duration_cast<std::chrono::microseconds>(sys_dur::max()).count() - 1;
    std::int64_t unix_us = pg_us > max_us - pg_epoch_offset_us ? max_us
                           : pg_us < -max_us - pg_epoch_offset_us ? -max_us
                                                                  : pg_us + pg_epoch_offset_us;
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<sys_dur>(std::chrono::microseconds(unix_us)));
}

result<copy_message> parse_copy_data(std::string_view frame) noexcept {
    byte_reader r(frame);
    auto tag = r.u8();
    if (!tag) return tag.error();
    switch (*tag) {
        case 'w': {  // XLogData: dataStart, walEnd, sendTime, then the payload to the end
            auto start = r.u64();
            if (!start) return start.error();
            auto end = r.u64();
            if (!end) return end.error();
            auto t = r.i64();
            if (!t) return t.error();
            return copy_message{xlog_data{lsn{*start}, lsn{*end}, *t, frame.substr(r.offset())}};
        }
        case 'k': {  // Primary keepalive: walEnd, sendTime, replyRequested
            auto end = r.u64();
            if (!end) return end.error();
            auto t = r.i64();
            if (!t) return t.error();
            auto reply = r.u8();
            if (!reply) return reply.error();
            // A longer keepalive means we misread the framing; better to stop
            // than to ignore bytes whose meaning we do not know.
            if (!r.empty()) return errc::trailing_bytes;
            return copy_message{keepalive{lsn{*end}, *t, *reply != 0}};
        }
        default:
            return errc::unknown_tag;
    }
}

namespace {
void put_be64(char* p, std::uint64_t v) noexcept {
    for (int i = 7; i >= 0; --i) {
        p[i] = static_cast<char>(v & 0xFF);
        v >>= 8;
    }
}
}  // namespace

std::array<char, status_update_size> encode_status_update(const status_update& s) noexcept {
    std::array<char, status_update_size> out{};
    out[0] = 'r';
    put_be64(out.data() + 1, s.write.value());
    put_be64(out.data() + 9, s.flush.value());
    put_be64(out.data() + 17, s.apply.value());
    put_be64(out.data() + 25, static_cast<std::uint64_t>(s.client_time));
    out[33] = s.reply_requested ? 1 : 0;
    return out;
}

}  // namespace outbox::walsender
