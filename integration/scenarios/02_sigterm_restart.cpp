// Scenario 2: SIGTERM mid-stream while a writer keeps inserting. The relay
// drains and exits 0; a restarted relay continues where it stopped: every row
// arrives exactly once, in per-key order.
#include "scenario_support.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::scn;

TEST_CASE("02_sigterm_restart") {
    scenario sc("02_sigterm_restart");
    auto& first = sc.start_relay("first");
    sc.wait_streaming(first);
    const auto start_flush = sc.slot_info().confirmed_flush.value_or(0);

    // A writer that outlives the first relay: 12,000 rows in txns of 1..50 rows.
    const std::size_t total = 12'000;
    outbox_writer w(env().pg, sc.table(), "acct", 40, 5);
    w.start({10, 1, 50, 25, 3}, 5ms, total);

    // Act: SIGTERM once the relay has confirmed something and the writer is
    // still going (so rows are in flight and more keep coming).
    REQUIRE(wait_until(clock::now() + 60s, [&] {
        auto s = sc.slot_info();
        return s.confirmed_flush && *s.confirmed_flush > start_flush && w.rows() >= total / 4;
    }));
    const std::size_t rows_at_term = w.rows();
    CHECK(!w.background_done());  // the writer is still inserting at the SIGTERM
    first.terminate();
    auto st = first.wait_exit(clock::now() + 40s);
    INFO("first relay log:\n" << first.log_text(3000));
    REQUIRE(st.has_value());
    CHECK_MESSAGE(st->exited_ok(), "exit " << st->describe());

    auto& second = sc.start_relay("second");
    sc.wait_streaming(second);
    REQUIRE(wait_until(clock::now() + 120s, [&] { return w.background_done(); }));
    REQUIRE(w.stop().empty());

    // Check: exactly once across the restart.
    auto rep = sc.check(120s, /*allow_duplicates=*/false, total);
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    INFO(rep.summary());
    INFO("second relay log:\n" << second.log_text(3000));
    CHECK(rep.ok());
    CHECK(rep.duplicated == 0);
    MESSAGE("02_sigterm_restart rows=" << total << " rows_when_sigterm=" << rows_at_term
            << " exit=" << st->describe() << " " << rep.summary());

    second.terminate();
    auto st2 = second.wait_exit(clock::now() + 40s);
    REQUIRE(st2.has_value());
    CHECK(st2->exited_ok());
}
