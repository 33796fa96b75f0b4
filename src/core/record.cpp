#include "outbox_relay/record.hpp"

#include <array>
#include <cstring>

namespace outbox {

owned_record::owned_record(const record& r) {
    std::size_t n = r.topic.size() + r.key.size() + r.value.size();
    for (const header& h : r.headers) n += h.name.size() + h.value.size();
    buf_ = std::make_unique<char[]>(n == 0 ? 1 : n);
    char* p = buf_.get();
    auto copy = [&p](std::string_view s) {
        if (!s.empty()) std::memcpy(p, s.data(), s.size());
        std::string_view v(p, s.size());
        p += s.size();
        return v;
    };
    rec_.topic = copy(r.topic);
    rec_.key = copy(r.key);
    rec_.key_null = r.key_null;
    rec_.value = copy(r.value);
    rec_.value_null = r.value_null;
    rec_.partition = r.partition;
    rec_.timestamp_ms = r.timestamp_ms;
    headers_.reserve(r.headers.size());
    for (const header& h : r.headers) {
        std::string_view name = copy(h.name);
        headers_.push_back({name, copy(h.value), h.value_null});
    }
    rec_.headers = std::span<const header>(headers_.data(), headers_.size());
}

namespace {
// Kafka's legal topic characters, one lookup per byte: a routed topic is
// checked for every record.
constexpr std::array<bool, 256> topic_chars = [] {
    std::array<bool, 256> t{};
    for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
    for (int c = '0'; c <= '9'; ++c) t[c] = true;
    t['.'] = t['_'] = t['-'] = true;
    return t;
}();
}  // namespace

bool valid_topic_name(std::string_view name) noexcept {
    if (name.empty() || name.size() > 249 || name == "." || name == "..") return false;
    bool ok = true;
    for (char c : name) ok &= topic_chars[static_cast<unsigned char>(c)];
    return ok;
}

}  // namespace outbox
