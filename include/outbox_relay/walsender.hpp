#pragma once
// CopyBoth framing of the streaming replication protocol
// (https://www.postgresql.org/docs/current/protocol-replication.html):
//   S->C 'w' XLogData:   Int64 dataStart, Int64 walEnd, Int64 sendTime, Byte[n] payload
//   S->C 'k' keepalive:  Int64 walEnd, Int64 sendTime, Byte1 replyRequested
//   C->S 'r' status:     Int64 write, Int64 flush, Int64 apply, Int64 clientTime,
//                        Byte1 replyRequested (34 bytes in all)
// Times are microseconds since the Postgres epoch, 2000-01-01 00:00:00 UTC.
#include "outbox_relay/errc.hpp"
#include "outbox_relay/lsn.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <string_view>
#include <variant>

namespace outbox::walsender {

// Microseconds between the Unix epoch and the Postgres epoch.
inline constexpr std::int64_t pg_epoch_offset_us = 946'684'800'000'000;

std::int64_t to_pg_time(std::chrono::system_clock::time_point tp) noexcept;
std::chrono::system_clock::time_point from_pg_time(std::int64_t pg_us) noexcept;

struct xlog_data {
    lsn data_start;  // 0 for Relation/Type messages; not monotonic
    lsn wal_end;
    std::int64_t send_time;
    std::string_view payload;  // view into the frame passed to parse_copy_data
};

struct keepalive {
    lsn wal_end;
    std::int64_t send_time;
    bool reply_requested;
};

using copy_message = std::variant<xlog_data, keepalive>;

// Parses one CopyData payload from the server. Errors: truncated,
// unknown_tag, trailing_bytes (keepalive longer than 18 bytes).
result<copy_message> parse_copy_data(std::string_view frame) noexcept;

struct status_update {
    lsn write;
    lsn flush;
    lsn apply;
    std::int64_t client_time = 0;
    bool reply_requested = false;
};

inline constexpr std::size_t status_update_size = 34;

// Encodes a standby status update ('r'), exactly 34 bytes.
std::array<char, status_update_size> encode_status_update(const status_update& s) noexcept;

}  // namespace outbox::walsender
