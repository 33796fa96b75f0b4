// decode_bench: decodes a captured stream of outbox inserts (CopyData framing
// + pgoutput) in a loop on one thread and prints the rates. The input is the
// golden fixture bench_outbox_inserts.bin (1000 inserts of 7 columns with a
// ~300-byte jsonb payload, 50 transactions; SQL beside it).
//   decode_bench [capture.bin] [seconds=3]
// Prints: insert_msgs_per_s, all_msgs_per_s, payload bytes_per_s.
#include "outbox_relay/pgoutput.hpp"
#include "outbox_relay/walsender.hpp"

#include "fixture_reader.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    using namespace outbox;
    const std::string path = argc > 1 ? argv[1] : OUTBOX_BENCH_FIXTURE;
    const double seconds = argc > 2 ? std::atof(argv[2]) : 3.0;
    auto frames = test::read_capture(path);
    if (!frames) {
        std::fprintf(stderr, "decode_bench: cannot read %s\n", path.c_str());
        return 1;
    }
    std::size_t frame_bytes = 0;
    for (const auto& f : *frames) frame_bytes += f.size();

    std::uint64_t inserts = 0, messages = 0, bytes = 0, checksum = 0;
    std::size_t passes = 0;
    auto start = std::chrono::steady_clock::now();
    std::chrono::duration<double> elapsed{};
    // One decoder for the whole run, as the relay keeps one per connection:
    // after the first pass its storage is warm and decoding allocates nothing.
    pgoutput::decoder d({1, false});
    do {
        for (const auto& f : *frames) {
            auto cm = walsender::parse_copy_data(f);
            if (!cm) return 2;
            const auto* x = std::get_if<walsender::xlog_data>(&*cm);
            if (x == nullptr) continue;
            auto m = d.decode(x->payload);
            if (!m) {
                std::fprintf(stderr, "decode_bench: decode error %s\n", m.error().describe().c_str());
                return 2;
            }
            ++messages;
            bytes += f.size();
            if (const auto* ins = std::get_if<pgoutput::insert>(&*m)) {
                ++inserts;
                // Use the result so the work cannot be optimised away.
                checksum += ins->new_tuple.columns.size() + ins->new_tuple.columns[4].value.size();
            }
        }
        ++passes;
        elapsed = std::chrono::steady_clock::now() - start;
    } while (elapsed.count() < seconds);

    const double s = elapsed.count();
    std::printf("decode_bench fixture=%s frames=%zu frame_bytes=%zu passes=%zu seconds=%.2f\n", path.c_str(),
                frames->size(), frame_bytes, passes, s);
    std::printf("decode_bench insert_msgs_per_s=%.0f all_msgs_per_s=%.0f bytes_per_s=%.0f (%.1f MB/s) checksum=%llu\n",
                static_cast<double>(inserts) / s, static_cast<double>(messages) / s, static_cast<double>(bytes) / s,
                static_cast<double>(bytes) / s / 1e6, static_cast<unsigned long long>(checksum));
    return 0;
}
