// Scenario 50 (issue 11): what an operator sees. /metrics parses as strict
// Prometheus text and its counters match what was written; replication lag
// in bytes rises while the broker is frozen and returns to ~0 after; the slot
// figures match pg_replication_slots; /readyz is 503 with a reason while the
// broker is frozen or down and 200 after, and 503 for a second relay whose
// slot is held by the first.
#include "ops_support.hpp"
#include "scenario_support.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <map>

using namespace outbox::it::scn;
namespace ops = outbox::it::ops;
using outbox::it::http_get;
using outbox::it::metrics_port_of;

namespace {

// Lag "about zero": idle, the relay has confirmed all it received except at
// most one keepalive-sized step of WAL written by others meanwhile.
constexpr double idle_lag_bytes = 64 * 1024;

int wait_port(scenario& sc, outbox::it::relay_process& r) {
    std::optional<int> port;
    bool ok = wait_until(clock::now() + 30s, [&] { return (port = metrics_port_of(r.log_text())).has_value(); });
    INFO(sc.log_tail(r));
    REQUIRE(ok);
    return *port;
}

// 200 from /readyz; the body (the reason) in *body. Unreachable counts as not ready.
bool ready(int port, std::string* body = nullptr, int* status = nullptr) {
    try {
        auto r = http_get("127.0.0.1", port, "/readyz");
        if (body) *body = r.body;
        if (status) *status = r.status;
        return r.status == 200;
    } catch (const std::exception& e) {
        if (body) *body = std::string("unreachable: ") + e.what();
        if (status) *status = 0;
        return false;
    }
}

}  // namespace

TEST_CASE("50_metrics_lag_and_readiness") {
    // Arrange: a relay with a short stall threshold and fast slot figures.
    scenario sc("50_metrics");
    auto& relay = sc.start_relay("relay", {"--metrics-listen", "127.0.0.1:0", "--ready-stall-ms", "3000",
                                           "--slot-status-interval-ms", "1000", "--progress-interval-ms", "1000"});
    sc.wait_streaming(relay);
    const int port = wait_port(sc, relay);
    INFO("relay log tail:\n" << sc.log_tail(relay));
    REQUIRE(wait_until(clock::now() + 40s, [&] { return ready(port); }));

    // Act 1: 300 rows over 3 types.
    outbox_writer w(env().pg, sc.table(), "m", 30, 3);
    for (int i = 0; i < 30; ++i) w.write_txn(10);
    std::map<std::string, double> per_type;
    for (const auto& row : sc.admin().query("SELECT aggregatetype, count(*) FROM " + sc.table() + " GROUP BY 1"))
        per_type[*row[0]] = std::stod(*row[1]);
    REQUIRE(per_type.size() == 3);

    // Check 1: counters match what was sent, per topic too; lag back to ~0.
    ops::exposition m;
    bool acked = wait_until(clock::now() + 60s, [&] {
        m = ops::scrape(port);
        return m.value("outbox_relay_records_acked_total") == 300.0 &&
               m.value("outbox_relay_replication_lag_bytes").value_or(1e18) <= idle_lag_bytes &&
               m.value("outbox_relay_slot_active_pid").value_or(0) > 0 &&
               m.value("outbox_relay_kafka_stats_total").value_or(0) >= 1;  // every 5 s
    });
    CHECK(acked);
    CHECK(m.value("outbox_relay_records_produced_total") == 300.0);
    CHECK(m.types.at("outbox_relay_records_acked_total") == "counter");
    CHECK(m.types.at("outbox_relay_replication_lag_bytes") == "gauge");
    for (const auto& [type, n] : per_type) {
        CAPTURE(type);
        CHECK(m.value("outbox_relay_topic_records_total", {{"topic", sc.topic(type)}}) == n);
        CHECK(m.value("outbox_relay_topic_bytes_total", {{"topic", sc.topic(type)}}).value_or(0) > 0);
    }
    CHECK(m.value("outbox_relay_replication_lag_seconds") == 0.0);
    CHECK(m.sum("outbox_relay_dead_letters_total") == 0.0);
    auto info = m.all("outbox_relay_build_info");
    REQUIRE(info.size() == 1);
    CHECK(info[0].value == 1.0);
    CHECK(!info[0].labels.at("version").empty());
    CHECK(info[0].labels.count("commit") == 1);
    // Slot figures against the database.
    const auto pid = sc.slot_info().active_pid;
    REQUIRE(pid.has_value());
    CHECK(m.value("outbox_relay_slot_active_pid") == static_cast<double>(*pid));
    CHECK(m.value("outbox_relay_slot_wal_status", {{"status", "reserved"}}) == 1.0);
    CHECK(m.value("outbox_relay_slot_wal_status", {{"status", "lost"}}) == 0.0);
    const double retained_db = std::stod(*sc.admin().scalar(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE "
        "slot_name = '" + sc.slot() + "'"));
    const double retained_m = m.value("outbox_relay_slot_retained_wal_bytes").value_or(-1);
    // Read up to a second apart, and restart_lsn moves as the relay confirms:
    // the same order of magnitude, both above zero.
    CHECK(retained_m > 0);
    CHECK(retained_db > 0);
    CHECK(std::abs(retained_m - retained_db) < 4.0 * 1024 * 1024);
    CHECK(m.value("outbox_relay_slot_status_up") == 1.0);
    CHECK(m.value("outbox_relay_kafka_brokers_up").value_or(0) >= 1.0);
    CHECK(m.value("outbox_relay_kafka_stats_total").value_or(0) >= 1.0);
    // The progress line is in the log.
    CHECK(relay.log_text().find("event=progress") != std::string::npos);

    // Act 2: the broker freezes (sockets open, nothing answered) while rows arrive.
    restart_guard resume{"kafka-resume", true};
    stack("kafka-pause");
    const double lag_before = m.value("outbox_relay_replication_lag_bytes").value_or(0);
    for (int i = 0; i < 20; ++i) w.write_txn(10);

    // Check 2: lag bytes rise, and /readyz says why it is not ready.
    double lag_paused = 0;
    bool rose = wait_until(clock::now() + 30s, [&] {
        lag_paused = ops::scrape(port).value("outbox_relay_replication_lag_bytes").value_or(0);
        return lag_paused > lag_before + 10'000;
    });
    CHECK_MESSAGE(rose, "lag_bytes stayed at " << lag_paused);
    std::string why;
    bool not_ready = wait_until(clock::now() + 30s, [&] { return !ready(port, &why); });
    CHECK(not_ready);
    CHECK_MESSAGE(why.find("stalled") != std::string::npos, "readyz body: " << why);
    CHECK(ops::scrape(port).value("outbox_relay_replication_lag_seconds").value_or(0) > 0);

    // Act 3: thaw. Check 3: everything acked, lag back to ~0, ready again.
    stack("kafka-resume");
    resume.down = false;
    bool caught_up = wait_until(clock::now() + 90s, [&] {
        m = ops::scrape(port);
        return m.value("outbox_relay_records_acked_total") == 500.0 &&
               m.value("outbox_relay_replication_lag_bytes").value_or(1e18) <= idle_lag_bytes;
    });
    CHECK_MESSAGE(caught_up, "acked=" << m.value("outbox_relay_records_acked_total").value_or(-1)
                                      << " lag=" << m.value("outbox_relay_replication_lag_bytes").value_or(-1));
    CHECK(wait_until(clock::now() + 60s, [&] { return ready(port); }));

    // Act 4: the broker is down for real. Check 4: 503 naming the broker, 200 after.
    restart_guard start{"kafka-start", true};
    stack("kafka-stop");
    not_ready = wait_until(clock::now() + 60s, [&] { return !ready(port, &why); });
    CHECK(not_ready);
    CHECK_MESSAGE(why.find("Kafka broker") != std::string::npos, "readyz body: " << why);
    stack("kafka-start");
    start.down = false;
    CHECK(wait_until(clock::now() + 90s, [&] { return ready(port, &why); }));
    w.write_txn(10);
    CHECK(wait_until(clock::now() + 60s,
                     [&] { return ops::scrape(port).value("outbox_relay_records_acked_total") == 510.0; }));

    // Act 5: a second relay on the same slot. Check 5: it is not ready, and says so.
    auto& second = sc.start_relay("second", {"--metrics-listen", "127.0.0.1:0"});
    const int port2 = wait_port(sc, second);
    std::string why2, answered_503;
    bool second_ready = false;
    // It must stay unready for as long as the first holds the slot.
    const auto until = clock::now() + 8s;
    while (clock::now() < until && second.running()) {
        int status = 0;
        if (ready(port2, &why2, &status)) second_ready = true;
        if (status == 503) answered_503 = why2;
        std::this_thread::sleep_for(250ms);
    }
    INFO("second relay log:\n" << sc.log_tail(second));
    CHECK(!second_ready);
    CHECK_MESSAGE(!answered_503.empty(), "no 503 with a reason; last: " << why2);
    CHECK(answered_503 != "streaming");
    CHECK(ready(port));  // the first is unaffected

    // The whole story, exactly once.
    auto rep = sc.check(120s, /*allow_duplicates=*/false, 510);
    INFO(rep.summary());
    CHECK(rep.ok());

    relay.terminate();
    second.terminate();
    auto st = relay.wait_exit(clock::now() + 40s);
    REQUIRE(st.has_value());
    CHECK(st->exited_ok());
}
