#include "outbox_relay/dedupe.hpp"

#include <charconv>

namespace outbox {

std::size_t record_position_hash::operator()(const record_position& p) const noexcept {
    // splitmix64 finaliser over the LSN with the seq folded in first.
    std::uint64_t x = p.commit_lsn.value() ^ (static_cast<std::uint64_t>(p.seq) * 0x9E3779B97F4A7C15ull);
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return static_cast<std::size_t>(x);
}

result<record_position> parse_position(std::string_view lsn_text, std::string_view seq_text) noexcept {
    auto l = lsn::parse(lsn_text);
    if (!l) return l.error();
    // from_chars alone would accept a prefix ("12abc" -> 12); the relay writes
    // plain decimal, so anything else is a header we did not write.
    if (seq_text.empty()) return errc::bad_value;
    for (char c : seq_text)
        if (c < '0' || c > '9') return errc::bad_value;
    std::uint32_t seq = 0;
    const auto [ptr, ec] = std::from_chars(seq_text.data(), seq_text.data() + seq_text.size(), seq);
    if (ec != std::errc{} || ptr != seq_text.data() + seq_text.size()) return errc::bad_value;
    return record_position{*l, seq};
}

void position_set::merge(const position_set& other) {
    set_.reserve(set_.size() + other.set_.size());
    set_.insert(other.set_.begin(), other.set_.end());
}

void position_set::erase_below(lsn bound) noexcept {
    std::erase_if(set_, [bound](const record_position& p) { return p.commit_lsn < bound; });
}

}  // namespace outbox
