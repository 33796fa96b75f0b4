// Scenario 15: two relays on one slot; the active one is killed (-9) while
// rows stream, the standby (retrying on the busy slot) takes over within
// 15 s and continues from the slot's confirmed position, skipping what the
// killed relay had already put into Kafka: exactly once across the handover.
// The active relay reaches Postgres through a tcp_proxy that drops its
// status updates just before the kill, so Kafka holds committed records the
// slot never confirmed, every run: the standby must skip them (its
// outbox_relay_duplicates_skipped_total is checked).
#include "faults_support.hpp"
#include "tcp_proxy.hpp"

#include <doctest/doctest.h>

#include <regex>

using namespace outbox::it::faults;

TEST_CASE("15_standby_exactly_once") {
    const auto t0 = clock::now();
    topic_cleanup topics;  // destroyed after the scenario (relays stopped first)
    scenario sc("15_standby_exactly_once");
    topics.prefix = sc.prefix();
    std::smatch pm;
    REQUIRE(std::regex_search(env().pg, pm, std::regex(R"(port=(\d+))")));
    outbox::it::tcp_proxy proxy("127.0.0.1", std::stoi(pm[1]));
    const std::string via = std::regex_replace(env().pg, std::regex(R"(port=\d+)"), "port=" + std::to_string(proxy.port()));
    const std::vector<std::string> flags{"--metrics-listen", "127.0.0.1:0"};
    auto& a = sc.start_relay_via(via, "a", flags);
    sc.wait_streaming(a);
    const int walsender_a = *sc.slot_info().active_pid;
    auto& b = sc.start_relay("b", flags);
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
    // Postgres hears no more confirms from A while A commits to Kafka.
    proxy.drop_client_bytes(true);
    const double c0 = relay_metric(a, "outbox_relay_kafka_transactions_committed_total").value_or(0);
    w.write_txn(5000);
    REQUIRE_MESSAGE(wait_until(clock::now() + 30s, [&] {
        const auto c = relay_metric(a, "outbox_relay_kafka_transactions_committed_total");
        return c && *c >= c0 + 1;
    }, 20ms), "A committed nothing while its confirms were dropped");
    const double unconfirmed_commits = *relay_metric(a, "outbox_relay_kafka_transactions_committed_total") - c0;
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
    const auto skipped = relay_metric(b, "outbox_relay_duplicates_skipped_total");
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    MESSAGE("15_standby_exactly_once checker: " << rep.summary());
    MESSAGE("15_standby_exactly_once takeover_s=" << takeover_s << " rows=" << w.rows()
            << " rows_at_kill=" << rows_at_kill << " unconfirmed_commits_at_kill=" << unconfirmed_commits
            << " standby_duplicates_skipped=" << skipped.value_or(-1) << " standby_present=" << fb.present
            << " standby_replay_scans=" << fb.scans
            << " total_s=" << std::chrono::duration<double>(clock::now() - t0).count());
    CHECK(took_over);
    CHECK(takeover_s <= 15.0);
    // The takeover really replayed what A had committed, and skipped it.
    REQUIRE(skipped.has_value());
    CHECK(*skipped > 0);
    CHECK(exactly_once(rep));
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);
    CHECK(rep.out_of_order == 0);
    CHECK(rep.mismatched == 0);
    CHECK(b.running());
}
