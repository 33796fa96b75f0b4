// Scenario 3: kill -9 while records are in flight, restart: nothing is lost,
// and nothing is written twice (the slot may be behind what Kafka already
// has; the exactly-once default recognises it).
#include "scenario_support.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::scn;

TEST_CASE("03_kill9_restart") {
    scenario sc("03_kill9_restart");
    auto& first = sc.start_relay("first");
    sc.wait_streaming(first);
    const auto start_flush = sc.slot_info().confirmed_flush.value_or(0);

    const std::size_t total = 12'000;
    outbox_writer w(env().pg, sc.table(), "cart", 40, 5);
    w.start({100, 10, 1, 200}, 20ms, total);  // ~4 s of writing

    // Act: kill -9 while the writer streams rows at the relay, after the relay
    // has confirmed at least one transaction.
    REQUIRE(wait_until(clock::now() + 60s, [&] {
        auto s = sc.slot_info();
        return s.confirmed_flush && *s.confirmed_flush > start_flush && w.rows() >= total / 3;
    }));
    const std::size_t rows_at_kill = w.rows();
    CHECK(!w.background_done());  // the writer is still inserting at the kill
    first.kill9();
    auto st = first.wait_exit(clock::now() + 10s);
    REQUIRE(st.has_value());
    CHECK(st->signal == 9);

    auto& second = sc.start_relay("second");
    // The killed relay's walsender may hold the slot for a moment: the new
    // relay is expected to retry until it gets it.
    sc.wait_streaming(second, 60s);
    REQUIRE(wait_until(clock::now() + 120s, [&] { return w.background_done(); }));
    REQUIRE(w.stop().empty());

    auto rep = sc.check(120s, /*allow_duplicates=*/false, total);
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    INFO(rep.summary());
    INFO("first relay log:\n" << first.log_text(2000));
    INFO("second relay log:\n" << second.log_text(3000));
    CHECK(rep.ok());
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);  // exactly once in the default mode
    MESSAGE("03_kill9_restart rows=" << total << " rows_when_killed=" << rows_at_kill
            << " duplicates=" << rep.duplicated << " " << rep.summary());
}
