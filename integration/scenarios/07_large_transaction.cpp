// Scenario 7: one transaction of 1,000,000 outbox rows. All arrive, and the
// relay's memory stays bounded (reading from Postgres pauses while too much is
// in flight): VmRSS sampled every 200 ms stays below 1 GiB.
#include "scenario_support.hpp"

#include <doctest/doctest.h>

#include <fstream>

using namespace outbox::it::scn;

namespace {
std::optional<long> rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return std::nullopt;
}
}  // namespace

TEST_CASE("07_large_transaction") {
    scenario sc("07_large_transaction");
    auto& relay = sc.start_relay();
    sc.wait_streaming(relay);
    const pid_t pid = relay.pid();

    // The sampler reads /proc directly: relay_process is not shared across threads.
    std::atomic<bool> stop{false};
    std::atomic<long> max_rss{0};
    std::atomic<std::size_t> samples{0};
    std::thread sampler([&] {
        auto next = clock::now();
        while (!stop) {
            if (auto r = rss_kib(pid)) {
                max_rss = std::max(max_rss.load(), *r);
                ++samples;
            }
            next += 200ms;
            std::this_thread::sleep_until(next);
        }
    });

    // Act: one INSERT ... SELECT of a million rows. Aggregate k = i % 100 gets
    // increasing seq = i, and its type k % 5, so per-key order is checkable.
    const std::size_t total = 1'000'000;
    const auto t0 = clock::now();
    sc.admin().exec("INSERT INTO " + sc.table() +
                    " (aggregatetype, aggregateid, type, payload, seq)"
                    " SELECT 'type' || ((i % 100) % 5), 'big-' || (i % 100), 'BulkLoaded',"
                    " jsonb_build_object('i', i, 'k', i % 100), i FROM generate_series(1, " + std::to_string(total) +
                    ") i");
    const double insert_s = std::chrono::duration<double>(clock::now() - t0).count();
    // Decoding starts at the commit: the relay's own rate is rows over the
    // time from the commit to the newest record's timestamp (set at produce).
    const auto commit_wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch()).count();

    auto rep = sc.check(300s, /*allow_duplicates=*/false, total);
    const double e2e_s = std::chrono::duration<double>(clock::now() - t0).count();
    stop = true;
    sampler.join();
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    INFO(rep.summary());
    INFO("relay log:\n" << relay.log_text(3000));
    CHECK(rep.ok());
    CHECK(rep.missing == 0);
    CHECK(rep.transactions == 1);
    CHECK(relay.running());
    CHECK(samples.load() > 0);
    CHECK(max_rss.load() < 1024L * 1024L);  // KiB: 1 GiB
    const double relay_s = (rep.max_timestamp_ms - commit_wall_ms) / 1000.0;
    MESSAGE("07_large_transaction rows=" << total << " insert_s=" << insert_s << " e2e_s=" << e2e_s
            << " commit_to_last_record_s=" << relay_s << " relay_events_per_s=" << (relay_s > 0 ? total / relay_s : 0)
            << " rss_samples=" << samples.load() << " max_rss_mib=" << (max_rss.load() / 1024.0) << " "
            << rep.summary());
}
