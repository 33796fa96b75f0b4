// Scenario 6: the outbox is idle while another table takes writes for 30 s.
// An idle relay must let its slot follow the WAL: the confirmed lag
// (pg_current_wal_lsn() - confirmed_flush_lsn), sampled every second, stays
// under 16 MB. The other table takes ~1 MB/s: a relay that confirms at least
// every 10 s status interval passes, a slot that never moves ends above 20 MB.
// What really keeps WAL on disk is the slot's restart_lsn, which Postgres
// moves only behind confirmed_flush_lsn at running-transactions records
// (every 15 s or so): it must move forward during the window, and the WAL it
// retains at the end must be less than what was written meanwhile.
#include "scenario_support.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::scn;

TEST_CASE("06_idle_slot") {
    scenario sc("06_idle_slot");
    auto& relay = sc.start_relay();
    sc.wait_streaming(relay);

    // Arrange: a little outbox traffic first, delivered; then the outbox idles.
    outbox_writer w(env().pg, sc.table(), "user", 10, 5);
    for (int i = 0; i < 10; ++i) w.write_txn(10);
    auto first = sc.check(60s, false, 100);
    INFO("relay log:\n" << relay.log_text(3000));
    REQUIRE_MESSAGE(first.missing == 0, first.summary());

    const std::string other = sc.table() + "_other";
    sc.admin().exec("CREATE TABLE " + other + " (id bigserial PRIMARY KEY, pad text)");
    const std::uint64_t wal_start = sc.current_wal();
    auto restart_lsn = [&] {
        return std::stoull(*sc.admin().scalar("SELECT pg_wal_lsn_diff(restart_lsn, '0/0')::bigint::text FROM "
                                              "pg_replication_slots WHERE slot_name = '" + sc.slot() + "'"));
    };
    const std::uint64_t restart_start = restart_lsn();

    // Act: ~100 KB every 100 ms into the other table, on its own thread and connection.
    std::atomic<bool> stop{false};
    std::string writer_error;
    std::thread churn([&] {
        try {
            pg c(env().pg);
            while (!stop) {
                c.exec("INSERT INTO " + other + " (pad) SELECT repeat(md5(g::text), 6) FROM generate_series(1, 400) g");
                std::this_thread::sleep_for(100ms);
            }
        } catch (const std::exception& e) {
            writer_error = e.what();
        }
    });

    std::uint64_t max_retained = 0, last_retained = 0, max_restart_retained = 0, last_restart_retained = 0;
    std::size_t samples = 0;
    const auto t0 = clock::now();
    for (int i = 1; i <= 30; ++i) {
        std::this_thread::sleep_until(t0 + std::chrono::seconds(i));
        auto rows = sc.admin().query(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text FROM pg_replication_slots"
            " WHERE slot_name = '" + sc.slot() + "'");
        REQUIRE(rows.size() == 1);
        REQUIRE(rows[0][0].has_value());
        REQUIRE(rows[0][1].has_value());
        last_retained = std::stoull(*rows[0][0]);
        max_retained = std::max(max_retained, last_retained);
        last_restart_retained = std::stoull(*rows[0][1]);
        max_restart_retained = std::max(max_restart_retained, last_restart_retained);
        ++samples;
    }
    stop = true;
    churn.join();
    const std::uint64_t wal_written = sc.current_wal() - wal_start;
    const std::uint64_t restart_end = restart_lsn();
    sc.admin().exec("DROP TABLE " + other);

    REQUIRE(writer_error.empty());
    CHECK(relay.running());
    CHECK(samples == 30);
    // The test only means something when clearly more than 16 MB went by:
    // a slot that never moved would then end above the bound.
    CHECK(wal_written > (20u << 20));
    CHECK_MESSAGE(max_retained < (16u << 20), "max retained " << max_retained << " bytes");
    // The WAL the slot really keeps: restart_lsn followed the writes.
    CHECK(restart_end > restart_start);
    CHECK(last_restart_retained < wal_written);
    MESSAGE("06_idle_slot window_s=30 samples=" << samples << " wal_written_bytes=" << wal_written
            << " max_retained_bytes=" << max_retained << " last_retained_bytes=" << last_retained
            << " restart_lsn_moved_bytes=" << (restart_end - restart_start)
            << " max_restart_retained_bytes=" << max_restart_retained
            << " last_restart_retained_bytes=" << last_restart_retained);
}
