#include "outbox_relay/dedupe.hpp"

#include <algorithm>
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

position_text::position_text(const record_position& p) noexcept {
    // X/X as pg_lsn prints it: upper-case hex without leading zeros.
    auto hex = [](char* out, std::uint32_t v) {
        auto [end, ec] = std::to_chars(out, out + 8, v, 16);
        (void)ec;
        for (char* c = out; c != end; ++c)
            if (*c >= 'a' && *c <= 'f') *c = static_cast<char>(*c - 'a' + 'A');
        return static_cast<std::size_t>(end - out);
    };
    std::size_t n = hex(lsn_, static_cast<std::uint32_t>(p.commit_lsn.value() >> 32));
    lsn_[n++] = '/';
    n += hex(lsn_ + n, static_cast<std::uint32_t>(p.commit_lsn.value()));
    lsn_len_ = n;
    auto [end, ec] = std::to_chars(seq_, seq_ + sizeof seq_, p.seq);
    (void)ec;
    seq_len_ = static_cast<std::size_t>(end - seq_);
}

std::string transactional_id_of(std::string_view system_id, std::string_view database, std::string_view slot) {
    std::string id = "outbox-relay:";
    id.append(system_id).append(":").append(database).append(":").append(slot);
    return id;
}

std::string source_id::header_value() const {
    return system_id + ":" + std::to_string(timeline) + ":" + slot + ":" + database;
}

result<source_id> source_id::parse(std::string_view text) {
    source_id s;
    std::string_view rest = text;
    auto field = [&rest](std::string_view& out) {
        const auto colon = rest.find(':');
        if (colon == std::string_view::npos) return false;
        out = rest.substr(0, colon);
        rest.remove_prefix(colon + 1);
        return true;
    };
    std::string_view sys, tli, slot;
    if (!field(sys) || !field(tli) || !field(slot)) return errc::bad_value;
    auto digits = [](std::string_view v) {
        return !v.empty() && std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    if (!digits(sys) || !digits(tli) || slot.empty()) return errc::bad_value;
    std::uint32_t t = 0;
    const auto [p, ec] = std::from_chars(tli.data(), tli.data() + tli.size(), t);
    if (ec != std::errc{} || p != tli.data() + tli.size()) return errc::bad_value;
    s.system_id = std::string(sys);
    s.timeline = t;
    s.slot = std::string(slot);
    s.database = std::string(rest);
    return s;
}

void position_set::merge(const position_set& other) {
    set_.reserve(set_.size() + other.set_.size());
    set_.insert(other.set_.begin(), other.set_.end());
}

lsn position_set::max_commit_lsn() const noexcept {
    lsn m;
    for (const record_position& p : set_) m = std::max(m, p.commit_lsn);
    return m;
}

void position_set::erase_below(lsn bound) noexcept {
    std::erase_if(set_, [bound](const record_position& p) { return p.commit_lsn < bound; });
}

}  // namespace outbox
