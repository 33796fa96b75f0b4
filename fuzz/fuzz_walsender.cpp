// libFuzzer target for the CopyBoth framing: parse one CopyData payload, and
// for XLogData decode its pgoutput payload with a protocol 4 decoder; encode a
// status update from what was parsed and check it round-trips.
#include "outbox_relay/pgoutput.hpp"
#include "outbox_relay/walsender.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace outbox;
    std::string_view frame(reinterpret_cast<const char*>(data), size);
    auto r = walsender::parse_copy_data(frame);
    if (!r) return 0;
    walsender::status_update s;
    if (const auto* x = std::get_if<walsender::xlog_data>(&*r)) {
        if (x->payload.data() != frame.data() + 25 || x->payload.size() != size - 25) __builtin_trap();
        pgoutput::decoder d({4, true});
        (void)d.decode(x->payload);
        s.write = x->wal_end;
        s.client_time = x->send_time;
    } else {
        const auto& k = std::get<walsender::keepalive>(*r);
        if (size != 18) __builtin_trap();
        s.write = k.wal_end;
        s.flush = k.wal_end;
        s.client_time = k.send_time;
        s.reply_requested = k.reply_requested;
    }
    (void)walsender::from_pg_time(s.client_time);
    auto out = walsender::encode_status_update(s);
    if (out[0] != 'r') __builtin_trap();
    std::uint64_t write = 0;
    for (int i = 1; i <= 8; ++i) write = (write << 8) | static_cast<std::uint8_t>(out[i]);
    if (write != s.write.value()) __builtin_trap();
    return 0;
}
