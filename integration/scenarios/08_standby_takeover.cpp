// Scenario 8: two relays on one slot. One streams; the other waits (it logs
// that the slot is busy and keeps retrying). After kill -9 of the first, the
// second takes over within 15 s (a new active_pid, new events arrive) and
// nothing is lost and nothing is written twice.
#include "scenario_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>

using namespace outbox::it::scn;

namespace {
bool mentions_busy_slot(std::string log) {
    std::transform(log.begin(), log.end(), log.begin(), [](unsigned char c) { return std::tolower(c); });
    for (const char* needle : {"busy", "is active for pid", "55006", "in use"})
        if (log.find(needle) != std::string::npos) return true;
    return false;
}
}  // namespace

TEST_CASE("08_standby_takeover") {
    scenario sc("08_standby_takeover");
    auto& a = sc.start_relay("a");
    sc.wait_streaming(a);
    const int walsender_a = *sc.slot_info().active_pid;

    auto& b = sc.start_relay("b");
    // B must report the busy slot and keep running (retrying), while A keeps it.
    bool b_waits = wait_until(clock::now() + 20s, [&] { return mentions_busy_slot(b.log_text()); }, 200ms);
    INFO("relay a log:\n" << a.log_text(2000));
    INFO("relay b log:\n" << b.log_text(3000));
    CHECK(b_waits);
    REQUIRE(b.running());
    REQUIRE(sc.slot_info().active_pid == walsender_a);

    // Traffic before the kill, still with A.
    outbox_writer w(env().pg, sc.table(), "pay", 20, 5);
    for (int i = 0; i < 100; ++i) w.write_txn(10);
    auto before = sc.check(60s, false, w.rows());
    REQUIRE_MESSAGE(before.missing == 0, before.summary());

    // Act: kill A and time the takeover.
    w.start({10, 1}, 5ms, 1000 + 3000);  // writing through the takeover
    a.kill9();
    const auto killed = clock::now();
    std::optional<int> walsender_b;
    bool took_over = wait_until(killed + 15s, [&] {
        walsender_b = sc.slot_info().active_pid;
        return walsender_b && *walsender_b != walsender_a;
    }, 100ms);
    const double takeover_s = std::chrono::duration<double>(clock::now() - killed).count();
    CHECK_MESSAGE(took_over, "slot not taken over within 15 s");
    CHECK(b.running());

    REQUIRE(wait_until(clock::now() + 120s, [&] { return w.background_done(); }));
    REQUIRE(w.stop().empty());
    auto rep = sc.check(120s, /*allow_duplicates=*/false, w.rows());
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    INFO(rep.summary());
    CHECK(rep.ok());
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);  // exactly once in the default mode
    MESSAGE("08_standby_takeover takeover_s=" << takeover_s << " rows=" << w.rows() << " duplicates=" << rep.duplicated
            << " " << rep.summary());
}
