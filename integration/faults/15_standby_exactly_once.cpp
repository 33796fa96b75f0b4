// Scenario 15: two relays on one slot; the active one is killed (-9) while
// rows stream, the standby (retrying on the busy slot) takes over within
// 15 s and continues from the slot's confirmed position, skipping what the
// killed relay had already put into Kafka: exactly once across the handover.
#include "faults_support.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::faults;

TEST_CASE("15_standby_exactly_once") {
    const auto t0 = clock::now();
    topic_cleanup topics;  // destroyed after the scenario (relays stopped first)
    scenario sc("15_standby_exactly_once");
    topics.prefix = sc.prefix();
    auto& a = sc.start_relay("a");
    sc.wait_streaming(a);
    const int walsender_a = *sc.slot_info().active_pid;
    auto& b = sc.start_relay("b");
    // B must be up and waiting on the busy slot before A dies.
    REQUIRE(wait_until(clock::now() + 20s, [&] { return b.log_text().find("event=slot_busy") != std::string::npos; },
                       100ms));
    REQUIRE(b.running());
    REQUIRE(sc.slot_info().active_pid == walsender_a);

    const std::size_t total = 20'000;
    outbox_writer w(env().pg, sc.table(), "sb", 30, 4);
    w.start({200, 10, 1, 400, 50}, 15ms, total);
    const auto start_flush = sc.slot_info().confirmed_flush.value_or(0);
    REQUIRE(wait_until(clock::now() + 60s, [&] {
        auto s = sc.slot_info();
        return s.confirmed_flush && *s.confirmed_flush > start_flush && w.rows() >= total / 3;
    }));

    // Act: kill A mid-stream, just after a 5,000-row transaction committed,
    // while A is producing it (records of it in Kafka, the transaction not
    // yet confirmed: the window the standby must skip). Then keep writing.
    CHECK(!w.background_done());
    REQUIRE(w.stop().empty());
    w.write_txn(5000);
    std::this_thread::sleep_for(40ms);  // places the kill inside A's production of that transaction
    const std::size_t rows_at_kill = w.rows();
    a.kill9();
    w.start({200, 10, 1, 400, 50}, 15ms, total);
    const auto killed = clock::now();
    std::optional<int> walsender_b;
    const bool took_over = wait_until(killed + 15s, [&] {
        walsender_b = sc.slot_info().active_pid;
        return walsender_b && *walsender_b != walsender_a;
    }, 50ms);
    const double takeover_s = std::chrono::duration<double>(clock::now() - killed).count();
    INFO("relay a log:\n" << a.log_text(2000));
    INFO("relay b log:\n" << b.log_text(3000));
    CHECK_MESSAGE(took_over, "slot not taken over within 15 s");
    REQUIRE(b.running());

    REQUIRE(wait_until(clock::now() + 120s, [&] { return w.background_done(); }));
    REQUIRE(w.stop().empty());
    auto rep = sc.check(120s, /*allow_duplicates=*/false, w.rows());
    const auto fb = replay_figures_of(b.log_text());
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    MESSAGE("15_standby_exactly_once checker: " << rep.summary());
    MESSAGE("15_standby_exactly_once takeover_s=" << takeover_s << " rows=" << w.rows()
            << " rows_at_kill=" << rows_at_kill << " standby_duplicates_skipped(present)=" << fb.present
            << " standby_replay_scans=" << fb.scans
            << " total_s=" << std::chrono::duration<double>(clock::now() - t0).count());
    CHECK(took_over);
    CHECK(takeover_s <= 15.0);
    CHECK(exactly_once(rep));
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);
    CHECK(rep.out_of_order == 0);
    CHECK(rep.mismatched == 0);
    CHECK(b.running());
}
