#include "outbox_relay/lsn.hpp"

#include <cstdio>

namespace outbox {
namespace {

// Parses 1-8 hex digits; false on anything else.
bool parse_hex32(std::string_view s, std::uint32_t& out) noexcept {
    if (s.empty() || s.size() > 8) return false;
    std::uint32_t v = 0;
    for (char c : s) {
        std::uint32_t d;
        if (c >= '0' && c <= '9') d = static_cast<std::uint32_t>(c - '0');
        else if (c >= 'A' && c <= 'F') d = static_cast<std::uint32_t>(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f') d = static_cast<std::uint32_t>(c - 'a' + 10);
        else return false;
        v = (v << 4) | d;
    }
    out = v;
    return true;
}

}  // namespace

result<lsn> lsn::parse(std::string_view text) noexcept {
    auto slash = text.find('/');
    if (slash == std::string_view::npos) return errc::bad_lsn_text;
    std::uint32_t hi = 0, lo = 0;
    if (!parse_hex32(text.substr(0, slash), hi) || !parse_hex32(text.substr(slash + 1), lo))
        return errc::bad_lsn_text;
    return lsn{(static_cast<std::uint64_t>(hi) << 32) | lo};
}

std::string lsn::to_string() const {
    char buf[24];
    int n = std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(v_ >> 32),
                          static_cast<unsigned>(v_ & 0xFFFFFFFFu));
    return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace outbox
