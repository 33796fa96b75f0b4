// Scenario 22: a zombie relay. Under steady writes the active relay is
// frozen (SIGSTOP: a GC-like stall, a paused VM) long enough for Postgres to
// drop its walsender (wal_sender_timeout is lowered to 2 s for the test);
// the standby takes the slot and, initialising the same transactional.id,
// fences the frozen one. Thawed (SIGCONT), the zombie must not get one more
// record into Kafka: its open transaction was aborted and every later
// request is refused; it exits 27 with a "fenced" line. Five rounds, the
// roles alternating; after all of them every event is in Kafka exactly once
// (read_committed) and in per-key order.
#include "faults_support.hpp"

#include <doctest/doctest.h>

#include <csignal>

using namespace outbox::it::faults;

TEST_CASE("22_zombie_fenced") {
    const auto t0 = clock::now();
    topic_cleanup topics;
    scenario sc("22_zombie_fenced");
    topics.prefix = sc.prefix();
    // A frozen relay sends no status updates: Postgres ends its walsender
    // after wal_sender_timeout, which frees the slot for the standby.
    sc.admin().exec("ALTER SYSTEM SET wal_sender_timeout = '2s'");
    sc.admin().exec("SELECT pg_reload_conf()");
    struct restore_timeout {
        scenario& sc;
        ~restore_timeout() {
            try {
                sc.admin().exec("ALTER SYSTEM RESET wal_sender_timeout");
                sc.admin().exec("SELECT pg_reload_conf()");
            } catch (...) {
            }
        }
    } restore{sc};

    const std::vector<std::string> relay_flags{"--status-interval-ms", "500"};
    std::vector<relay_process*> relays;
    relays.push_back(&sc.start_relay("r0", relay_flags));
    sc.wait_streaming(*relays.back());

    outbox_writer w(env().pg, sc.table(), "zb", 30, 4);
    w.start({5, 1, 20, 2}, 5ms, 1'000'000);
    int fenced_exits = 0;
    std::size_t round_rows_min = ~std::size_t{0};
    for (int round = 0; round < 5; ++round) {
        relay_process& active = *relays.back();
        relays.push_back(&sc.start_relay("r" + std::to_string(round + 1), relay_flags));
        relay_process& standby = *relays.back();
        REQUIRE(wait_until(clock::now() + 20s,
                           [&] { return standby.log_text().find("event=slot_busy") != std::string::npos; }, 50ms));
        const int walsender = *sc.slot_info().active_pid;
        const std::size_t rows_before = w.rows();
        REQUIRE(wait_until(clock::now() + 20s, [&] { return w.rows() >= rows_before + 300; }));

        // Freeze the active relay mid-stream; the standby takes over.
        active.signal(SIGSTOP);
        const bool took_over = wait_new_walsender(sc, standby, walsender, clock::now() + 30s);
        REQUIRE_MESSAGE(took_over, "round " << round << ": the standby did not take the slot\n" << standby.log_text(3000));
        REQUIRE(wait_until(clock::now() + 30s, [&] {
            return standby.log_text().find("event=replay_window_scanned") != std::string::npos;
        }));
        // Thaw the zombie: it must stop, fenced, without writing.
        active.signal(SIGCONT);
        auto st = active.wait_exit(clock::now() + 30s);
        const std::string zlog = active.log_text();
        INFO("round " << round << " zombie log tail:\n" << active.log_text(3000));
        REQUIRE_MESSAGE(st.has_value(), "round " << round << ": the zombie is still running");
        CHECK(st->code == std::optional<int>(27));
        CHECK(zlog.find("fenced") != std::string::npos);
        if (st->code == std::optional<int>(27)) ++fenced_exits;
        round_rows_min = std::min(round_rows_min, w.rows() - rows_before);
        CHECK(standby.running());
    }
    REQUIRE(w.stop().empty());
    auto rep = sc.check(180s, /*allow_duplicates=*/false, w.rows());
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    MESSAGE("22_zombie_fenced rounds=5 fenced_exits=" << fenced_exits << " rows=" << w.rows()
            << " min_rows_per_round=" << round_rows_min << " " << rep.summary()
            << " total_s=" << std::chrono::duration<double>(clock::now() - t0).count());
    CHECK(fenced_exits == 5);
    CHECK(exactly_once(rep));
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);
    CHECK(rep.out_of_order == 0);
    CHECK(rep.mismatched == 0);
}
