// Scenario 5: Postgres restarts (fast) mid-stream, while a writer inserts and
// the relay streams. The same relay process reconnects by itself (a new
// walsender holds the slot) and nothing is lost.
#include "scenario_support.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::scn;

TEST_CASE("05_postgres_restart") {
    scenario sc("05_postgres_restart");
    auto& relay = sc.start_relay();
    sc.wait_streaming(relay);
    const int pid_before = *sc.slot_info().active_pid;
    const auto start_flush = sc.slot_info().confirmed_flush.value_or(0);

    // Arrange: ~7 s of writing; the writer rides out the restart (reconnects
    // and re-reads its counters from the table, which stays the truth).
    const std::size_t total = 30'000;
    outbox_writer w(env().pg, sc.table(), "ship", 40, 5);
    w.start({100, 10, 50}, 10ms, total, /*ride_out_restarts=*/true);
    REQUIRE(wait_until(clock::now() + 60s, [&] {
        auto s = sc.slot_info();
        return s.confirmed_flush && *s.confirmed_flush > start_flush && w.rows() >= total / 5;
    }));

    // Act: restart Postgres under both of them.
    const std::size_t rows_at_restart = w.rows();
    CHECK(!w.background_done());
    restart_guard guard{"pg-start", true};  // brings Postgres back if a REQUIRE fails while down
    stack("pg-restart fast");
    guard.down = false;
    const auto restarted = clock::now();

    // The relay must come back on its own: a new walsender holds the slot.
    std::optional<int> pid_after;
    bool back = wait_until(clock::now() + 60s, [&] {
        pid_after = sc.slot_info().active_pid;
        return pid_after && *pid_after != pid_before;
    }, 200ms);
    const double reconnect_s = std::chrono::duration<double>(clock::now() - restarted).count();
    INFO("relay log:\n" << relay.log_text(4000));
    REQUIRE(relay.running());
    REQUIRE(back);

    REQUIRE(wait_until(clock::now() + 120s, [&] { return w.background_done(); }));
    REQUIRE(w.stop().empty());
    CHECK(w.reconnects() >= 1);  // the writer really was writing across the restart

    auto rep = sc.check(180s, /*allow_duplicates=*/false, w.rows());
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    INFO(rep.summary());
    CHECK(rep.ok());
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);  // exactly once in the default mode
    CHECK(relay.running());
    MESSAGE("05_postgres_restart rows=" << w.rows() << " rows_at_restart=" << rows_at_restart
            << " reconnect_s=" << reconnect_s << " writer_reconnects=" << w.reconnects()
            << " duplicates=" << rep.duplicated << " " << rep.summary());
}
