#pragma once
// A PostgreSQL WAL position (XLogRecPtr): a strong type over uint64_t.
// Text form is "X/X": high and low 32 bits in upper-case hex without leading
// zeros, as pg_lsn prints it (e.g. "16/B374D848").
#include "outbox_relay/errc.hpp"

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace outbox {

class lsn {
public:
    constexpr lsn() noexcept = default;
    constexpr explicit lsn(std::uint64_t v) noexcept : v_(v) {}

    constexpr std::uint64_t value() const noexcept { return v_; }
    constexpr bool is_zero() const noexcept { return v_ == 0; }

    friend constexpr auto operator<=>(lsn, lsn) noexcept = default;
    friend constexpr bool operator==(lsn, lsn) noexcept = default;

    // Parses "X/X" (1-8 hex digits each side, either case). Returns
    // errc::bad_lsn_text for anything else, including surrounding spaces.
    static result<lsn> parse(std::string_view text) noexcept;

    // Formats as "X/X" in upper-case hex.
    std::string to_string() const;

private:
    std::uint64_t v_ = 0;
};

// Byte distance a - b (a must not be below b for a meaningful answer).
constexpr std::uint64_t operator-(lsn a, lsn b) noexcept { return a.value() - b.value(); }

}  // namespace outbox
