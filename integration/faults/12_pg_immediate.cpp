// Scenario 12: Postgres crashes (`pg-stop immediate`: no shutdown checkpoint)
// mid-stream and comes back. PG15 persists a slot's confirmed position only
// at checkpoints (or when restart_lsn moves), so after the crash the slot may
// stand behind what the relay had confirmed; a CHECKPOINT just before the
// stream makes that likely. The same relay process reconnects by itself and
// every event still arrives exactly once. The test reports how far
// confirmed_flush_lsn went back across the crash.
//
// The same relay asks to resume from its own confirmed position, so the
// server's rollback costs it nothing. A second case therefore also kills the
// relay while Postgres is down and starts a new one: that one starts at the
// rolled-back slot position and must skip, via the topics' tails, everything
// between it and what was really delivered. Whether the slot's on-disk state
// is behind depends on when Postgres last wrote it, so in that case the
// first relay reaches Postgres through a tcp_proxy that drops its status
// updates for the last moments before the crash: Kafka then always holds
// committed records the slot does not know of, and the new relay must skip
// some (checked every run).
#include "faults_support.hpp"
#include "tcp_proxy.hpp"

#include <doctest/doctest.h>

#include <regex>

using namespace outbox::it::faults;

namespace {
// confirmed_flush_lsn of `slot` on a fresh connection (the scenario's admin
// connection died with the server). nullopt when not readable yet.
std::optional<std::uint64_t> confirmed_now(const std::string& slot) {
    try {
        pg fresh(env().pg);
        auto v = fresh.scalar("SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint::text FROM "
                              "pg_replication_slots WHERE slot_name = '" + slot + "'");
        if (v) return std::stoull(*v);
    } catch (const std::exception&) {
    }
    return std::nullopt;
}
// `new_relay`: kill -9 the relay while Postgres is down and start another.
void run(const std::string& name, bool new_relay) {
    const auto t0 = clock::now();
    topic_cleanup topics;  // destroyed after the scenario (relays stopped first)
    scenario sc("12_pg_immediate");
    topics.prefix = sc.prefix();
    std::smatch pm;
    REQUIRE(std::regex_search(env().pg, pm, std::regex(R"(port=(\d+))")));
    outbox::it::tcp_proxy proxy("127.0.0.1", std::stoi(pm[1]));
    const std::string via = std::regex_replace(env().pg, std::regex(R"(port=\d+)"), "port=" + std::to_string(proxy.port()));
    relay_process* current = &sc.start_relay_via(via, "first", {"--metrics-listen", "127.0.0.1:0"});
    auto& first = *current;
    sc.wait_streaming(first);
    const int walsender_before = *sc.slot_info().active_pid;

    // The slot's on-disk state is written now, before any row of the stream.
    sc.admin().exec("CHECKPOINT");
    const auto start_flush = sc.slot_info().confirmed_flush.value_or(0);

    const std::size_t total = 30'000;
    outbox_writer w(env().pg, sc.table(), "imm", 40, 5);
    w.start({100, 10, 50, 250, 1}, 10ms, total, /*ride_out_restarts=*/true);
    REQUIRE(wait_until(clock::now() + 60s, [&] {
        auto s = sc.slot_info();
        return s.confirmed_flush && *s.confirmed_flush > start_flush && w.rows() >= total / 3;
    }));

    // The new-relay case: the last commits to Kafka before the crash are
    // never confirmed to Postgres.
    double unconfirmed_commits = 0;
    if (new_relay) {
        proxy.drop_client_bytes(true);
        const double c0 = relay_metric(first, "outbox_relay_kafka_transactions_committed_total").value_or(0);
        REQUIRE(wait_until(clock::now() + 30s, [&] {
            const auto c = relay_metric(first, "outbox_relay_kafka_transactions_committed_total");
            return c && *c >= c0 + 2;
        }, 20ms));
        unconfirmed_commits = *relay_metric(first, "outbox_relay_kafka_transactions_committed_total") - c0;
    }

    // Act: crash Postgres under the relay and the writer.
    const std::uint64_t confirmed_before = sc.slot_info().confirmed_flush.value_or(0);
    const std::size_t rows_at_crash = w.rows();
    CHECK(!w.background_done());
    restart_guard guard{"pg-start", true};  // brings Postgres back if a REQUIRE fails while down
    stack("pg-stop immediate");
    if (new_relay) {
        first.kill9();
        REQUIRE(first.wait_exit(clock::now() + 10s).has_value());
    }
    stack("pg-start");
    guard.down = false;
    const auto restarted = clock::now();
    // Read the slot at once, before the relay's reconnect (its backoff grew
    // while the server was down) sends its own confirmed position again.
    std::optional<std::uint64_t> confirmed_after_crash;
    wait_until(clock::now() + 10s, [&] { return (confirmed_after_crash = confirmed_now(sc.slot())).has_value(); }, 20ms);
    // Was the relay already back when the slot was read? (Then the reading
    // may show the relay's own update rather than the on-disk state.)
    bool relay_already_back = true;
    try {
        pg fresh(env().pg);
        relay_already_back = fresh.scalar("SELECT active_pid IS NOT NULL FROM pg_replication_slots WHERE slot_name = '" +
                                          sc.slot() + "'") == std::optional<std::string>("t");
    } catch (const std::exception&) {
    }
    // The scenario's admin connection died with the server: the first query
    // on it fails and resets it.
    try {
        sc.slot_info();
    } catch (const std::exception&) {
    }

    proxy.drop_client_bytes(false);
    if (new_relay) current = &sc.start_relay("second");
    relay_process& relay = *current;
    // The relay comes back (by itself, or the new one): a new walsender holds the slot.
    bool back = wait_until(clock::now() + 60s, [&] {
        auto p = sc.slot_info().active_pid;
        return p && *p != walsender_before;
    }, 100ms);
    const double reconnect_s = std::chrono::duration<double>(clock::now() - restarted).count();
    INFO("relay log:\n" << relay.log_text(4000));
    REQUIRE(relay.running());
    REQUIRE(back);

    REQUIRE(wait_until(clock::now() + 120s, [&] { return w.background_done(); }));
    REQUIRE(w.stop().empty());
    CHECK(w.reconnects() >= 1);  // the writer really wrote across the crash

    auto rep = sc.check(180s, /*allow_duplicates=*/false, w.rows());
    const auto f = replay_figures_of(relay.log_text());
    const std::string read_before = relay_already_back ? "no" : "yes";
    REQUIRE(confirmed_after_crash.has_value());
    const std::int64_t went_back = static_cast<std::int64_t>(confirmed_before) -
                                   static_cast<std::int64_t>(*confirmed_after_crash);
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    MESSAGE(name << " checker: " << rep.summary());
    MESSAGE(name << " new_relay=" << std::string(new_relay ? "yes" : "no") << " rows=" << w.rows() << " rows_at_crash=" << rows_at_crash
            << " confirmed_before_crash=" << format_lsn(confirmed_before)
            << " confirmed_after_crash=" << format_lsn(*confirmed_after_crash) << " went_back_bytes=" << went_back
            << " (read before the relay was back: " << read_before << ")"
            << " reconnect_s=" << reconnect_s << " writer_reconnects=" << w.reconnects()
            << " unconfirmed_commits_at_crash=" << unconfirmed_commits
            << " duplicates_skipped(sum present)=" << f.present << " replay_scans=" << f.scans
            << " total_s=" << std::chrono::duration<double>(clock::now() - t0).count());
    CHECK(exactly_once(rep));
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);
    CHECK(rep.out_of_order == 0);
    CHECK(rep.mismatched == 0);
    CHECK(relay.running());
    CHECK(f.fatal_lines == 0);
    // A new relay starts behind what Kafka holds (the confirms of the last
    // commits never reached Postgres) and must skip that window; the same
    // relay resumes from its own position and must really have reconnected.
    if (new_relay) {
        CHECK(unconfirmed_commits >= 2);
        CHECK(f.present > 0);
    } else {
        CHECK(relay.log_text().find("event=connection_lost") != std::string::npos);
    }
}
}  // namespace

TEST_CASE("12_pg_immediate") { run("12_pg_immediate", false); }

TEST_CASE("12_pg_immediate_new_relay") { run("12_pg_immediate_new_relay", true); }
