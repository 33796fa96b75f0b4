// libFuzzer target for the pgoutput decoder and the relation cache.
//
// Input: Byte1 setup, then messages as Int16 (big-endian) length + bytes.
//   setup bits 0-1: proto_version - 1 (1..4); bit 2: streaming_parallel.
// One decoder sees all messages in order, so stream state (the [xid] prefix
// between Stream Start and Stop) and Relation replacement are exercised
// across messages. Every decoded view is read byte by byte, so ASan catches
// a view that reaches outside the input.
#include "outbox_relay/pgoutput.hpp"
#include "outbox_relay/relation_cache.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace {

volatile std::uint8_t sink;

void touch(std::string_view v) {
    std::uint8_t acc = 0;
    for (char c : v) acc = static_cast<std::uint8_t>(acc + static_cast<std::uint8_t>(c));
    sink = acc;
}

void touch(const outbox::pgoutput::tuple_data& t) {
    for (const auto& c : t.columns) touch(c.value);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace outbox::pgoutput;
    if (size < 1) return 0;
    decoder_options opts;
    opts.proto_version = 1 + (data[0] & 3);
    opts.streaming_parallel = (data[0] & 4) != 0;
    decoder d(opts);
    outbox::relation_cache cache;
    std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    while (in.size() >= 2) {
        std::size_t len = (static_cast<std::uint8_t>(in[0]) << 8) | static_cast<std::uint8_t>(in[1]);
        in.remove_prefix(2);
        if (len > in.size()) len = in.size();
        std::string_view payload = in.substr(0, len);
        in.remove_prefix(len);
        auto r = d.decode(payload);
        if (!r) {
            // The error must name an offset inside the message.
            if (r.error().offset > payload.size()) __builtin_trap();
            continue;
        }
        std::visit(
            [&](const auto& m) {
                using T = std::decay_t<decltype(m)>;
                if constexpr (std::is_same_v<T, relation>) {
                    touch(m.nspname);
                    touch(m.relname);
                    for (const auto& c : m.columns) touch(c.name);
                    const auto& e = cache.apply(m);
                    if (e.columns.size() != m.columns.size()) __builtin_trap();
                } else if constexpr (std::is_same_v<T, insert>) {
                    touch(m.new_tuple);
                    (void)cache.check(m.relid, m.new_tuple);
                } else if constexpr (std::is_same_v<T, update>) {
                    touch(m.old_tuple);
                    touch(m.new_tuple);
                    (void)cache.check(m.relid, m.new_tuple);
                } else if constexpr (std::is_same_v<T, delete_>) {
                    touch(m.old_tuple);
                    (void)cache.check(m.relid, m.old_tuple);
                } else if constexpr (std::is_same_v<T, message>) {
                    touch(m.prefix);
                    touch(m.content);
                } else if constexpr (std::is_same_v<T, outbox::pgoutput::truncate>) {
                    for (auto id : m.relids) sink = static_cast<std::uint8_t>(id);
                } else if constexpr (std::is_same_v<T, type>) {
                    touch(m.nspname);
                    touch(m.typname);
                } else if constexpr (std::is_same_v<T, origin>) {
                    touch(m.name);
                }
            },
            *r);
    }
    return 0;
}
