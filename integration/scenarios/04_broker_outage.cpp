// Scenario 4: the broker stops for 20 s mid-stream. While it is down the slot
// must not confirm past any unacked row: confirmed_flush_lsn stays at or below
// the commit LSN of the first transaction inserted after the stop. After the
// broker is back, every event arrives (same relay process).
#include "scenario_support.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::scn;

TEST_CASE("04_broker_outage") {
    scenario sc("04_broker_outage");
    auto& relay = sc.start_relay();
    sc.wait_streaming(relay);

    // Arrange: 2,000 rows delivered before the outage.
    outbox_writer w(env().pg, sc.table(), "inv", 30, 5);
    for (int i = 0; i < 200; ++i) w.write_txn(10);
    auto before = sc.check(60s, false, 2000);
    INFO("relay log:\n" << relay.log_text(3000));
    REQUIRE_MESSAGE(before.missing == 0, before.summary());

    // Act: stop the broker, then write while it is down.
    restart_guard guard{"kafka-start", false};  // brings the broker back if a REQUIRE fails mid-outage
    stack("kafka-stop");
    guard.down = true;
    const auto outage_start = clock::now();
    const std::uint64_t wal_before_first = sc.current_wal();
    auto first_ids = w.write_txn(5);  // the first transaction after the stop
    const std::uint64_t wal_after_first = sc.current_wal();
    REQUIRE(!first_ids.empty());
    w.start({20, 1, 5}, 20ms, 2000 + 3000);  // keeps writing through the outage

    // Sample the slot every 250 ms for 20 s.
    std::uint64_t max_confirmed = 0;
    std::size_t samples = 0;
    bool relay_alive = true;
    while (clock::now() - outage_start < 20s) {
        auto s = sc.slot_info();
        if (s.confirmed_flush) max_confirmed = std::max(max_confirmed, *s.confirmed_flush);
        ++samples;
        relay_alive = relay_alive && relay.running();
        std::this_thread::sleep_for(250ms);
    }
    stack("kafka-start");
    guard.down = false;
    const auto outage_s = std::chrono::duration<double>(clock::now() - outage_start).count();

    REQUIRE(wait_until(clock::now() + 60s, [&] { return w.background_done(); }));
    REQUIRE(w.stop().empty());

    // Check: everything arrives; find the first post-stop transaction's
    // commit LSN in its record header.
    auto rep = sc.check(180s, /*allow_duplicates=*/false, w.rows(), true, {first_ids.front()});
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    INFO(rep.summary());
    CHECK(relay_alive);
    CHECK(relay.running());  // the same process rode out the outage
    CHECK(rep.ok());
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);  // exactly once in the default mode
    REQUIRE(rep.captured_commit_lsn.count(first_ids.front()) == 1);
    const std::uint64_t first_commit = parse_lsn(rep.captured_commit_lsn[first_ids.front()]);
    // The header must name a commit inside the window we wrote it in.
    CHECK(first_commit > wal_before_first);
    CHECK(first_commit < wal_after_first);
    CHECK_MESSAGE(max_confirmed <= first_commit, "confirmed_flush " << format_lsn(max_confirmed)
                                                                    << " passed unacked commit " << format_lsn(first_commit));
    MESSAGE("04_broker_outage outage_s=" << outage_s << " slot_samples=" << samples
            << " max_confirmed_during_outage=" << format_lsn(max_confirmed)
            << " first_unacked_commit_lsn=" << format_lsn(first_commit) << " rows=" << w.rows()
            << " duplicates=" << rep.duplicated << " " << rep.summary());
}
