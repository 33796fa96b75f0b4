// Scenario 9: the relay starts on a backlog while the broker is paused
// (SIGSTOP for 30 s: connections open, nothing answered, like a GC stall or
// a frozen VM). In exactly-once mode the first record to every topic waits
// for that topic's tail scan, which cannot finish while the broker sleeps.
// The scan runs off the event loop, so meanwhile the relay keeps answering
// Postgres: the walsender's reply_time in pg_stat_replication never goes
// stale by more than the status interval + 2 s, and the stream is never
// restarted. After SIGCONT every event arrives exactly once.
#include "scenario_support.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::scn;

TEST_CASE("09_broker_paused_at_start") {
    scenario sc("09_broker_paused_at_start");
    outbox_writer w(env().pg, sc.table(), "ps", 30, 4);

    // Arrange: topics with records, then a backlog written while no relay runs.
    {
        auto& first = sc.start_relay("first");
        sc.wait_streaming(first);
        for (int i = 0; i < 100; ++i) w.write_txn(10);
        REQUIRE(sc.check(60s, false, w.rows()).missing == 0);
        first.terminate();
        REQUIRE(first.wait_exit(clock::now() + 30s).has_value());
    }
    for (int i = 0; i < 300; ++i) w.write_txn(10);

    restart_guard guard{"kafka-resume", false};  // never leave the broker stopped for the next scenario
    stack("kafka-pause");
    guard.down = true;
    const auto paused_at = clock::now();
    auto& relay = sc.start_relay("paused", {"--status-interval-ms", "1000"});
    sc.wait_streaming(relay);
    const int walsender = *sc.slot_info().active_pid;

    // Act: 30 s of paused broker. Sample the walsender's view of us.
    double max_stale_s = 0;
    std::size_t samples = 0, walsender_changes = 0;
    while (clock::now() - paused_at < 30s) {
        auto rows = sc.admin().query(
            "SELECT extract(epoch FROM now() - reply_time)::float8::text FROM pg_stat_replication WHERE pid = " +
            std::to_string(walsender));
        if (rows.empty() || !rows[0][0]) {
            ++walsender_changes;  // our walsender is gone: the stream was restarted
        } else {
            max_stale_s = std::max(max_stale_s, std::stod(*rows[0][0]));
            ++samples;
        }
        std::this_thread::sleep_for(250ms);
    }
    const std::string log_during_pause = relay.log_text();
    stack("kafka-resume");
    guard.down = false;

    auto rep = sc.check(180s, /*allow_duplicates=*/false, w.rows());
    const std::string log = relay.log_text();
    INFO("relay log tail:\n" << relay.log_text(4000));
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    MESSAGE("09_broker_paused_at_start samples=" << samples << " max_reply_staleness_s=" << max_stale_s
            << " walsender_changes=" << walsender_changes << " rows=" << w.rows() << " " << rep.summary());
    // The mechanism under test ran: the scan was still waiting when the pause ended.
    CHECK(log_during_pause.find("event=replay_window_scanned") == std::string::npos);
    CHECK(log.find("event=replay_window_scanned") != std::string::npos);
    CHECK(samples > 50);
    CHECK(max_stale_s <= 1.0 + 2.0);
    CHECK(walsender_changes == 0);
    CHECK(sc.slot_info().active_pid == walsender);  // the same stream throughout
    CHECK(log.find("event=connection_lost") == std::string::npos);
    CHECK(log.find("event=connection_silent") == std::string::npos);
    CHECK(relay.running());
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);
    CHECK(rep.out_of_order == 0);
    CHECK(rep.mismatched == 0);
}
