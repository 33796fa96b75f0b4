// Scenario 21: the slot is dropped while the relay is down (a failover to a
// standby without the slot, a careless DROP), and rows are committed before
// the relay comes back. The relay recreates its slot at start, which begins
// after those rows: they are a gap. Kafka already holds records of this
// source, so the relay says so and stops with exit 16 (dropping the slot it
// just made, so the next start meets the same gap) instead of carrying on as
// if nothing happened. With --accept-slot-gap it proceeds, and the
// outbox_relay_slot_gaps_total metric shows the accepted gap.
#include "faults_support.hpp"
#include "http_get.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::faults;

TEST_CASE("21_slot_dropped") {
    topic_cleanup topics;
    scenario sc("21_slot_dropped");
    topics.prefix = sc.prefix();
    outbox_writer w(env().pg, sc.table(), "sd", 10, 2);
    {
        auto& first = sc.start_relay("first");
        sc.wait_streaming(first);
        for (int i = 0; i < 50; ++i) w.write_txn(10);
        REQUIRE(sc.check(60s, false, 500).missing == 0);
        first.terminate();
        REQUIRE(first.wait_exit(clock::now() + 30s).has_value());
    }
    sc.admin().exec("SELECT pg_drop_replication_slot('" + sc.slot() + "')");
    for (int i = 0; i < 20; ++i) w.write_txn(5);  // the gap: committed while no slot exists

    for (int attempt = 0; attempt < 2; ++attempt) {
        auto& refused = sc.start_relay("refused" + std::to_string(attempt));
        auto st = refused.wait_exit(clock::now() + 60s);
        const std::string log = refused.log_text();
        INFO("attempt " << attempt << " relay log:\n" << refused.log_text(3000));
        REQUIRE(st.has_value());
        CHECK(st->code == std::optional<int>(16));
        CHECK(log.find("was created at this start") != std::string::npos);
        CHECK(log.find("--accept-slot-gap") != std::string::npos);
        CHECK_FALSE(sc.slot_info().exists);  // dropped again: the next start sees the gap too
    }

    // The operator accepts the gap (after reconciling it): the relay proceeds.
    auto& accepted = sc.start_relay("accepted", {"--accept-slot-gap", "true", "--metrics-listen", "127.0.0.1:0"});
    sc.wait_streaming(accepted);
    for (int i = 0; i < 10; ++i) w.write_txn(3);
    REQUIRE(wait_until(clock::now() + 60s, [&] {
        return accepted.log_text().find("event=slot_gap_accepted") != std::string::npos;
    }));
    const auto port = outbox::it::metrics_port_of(accepted.log_text());
    REQUIRE(port.has_value());
    const auto metrics = outbox::it::http_get("127.0.0.1", *port, "/metrics");
    CHECK(metrics.status == 200);
    CHECK(metric_value(metrics.body, "outbox_relay_slot_gaps_total") == std::optional<double>(1));
    // What came after the new slot arrives; the gap's 100 rows do not.
    const std::size_t expected_delivered = 500 + 30;
    auto rep = sc.check(30s, /*allow_duplicates=*/false, std::nullopt);
    MESSAGE("21_slot_dropped " << rep.summary());
    CHECK(rep.delivered == expected_delivered);
    CHECK(rep.missing == 100);
    CHECK(rep.duplicated == 0);
    CHECK(accepted.running());
}
