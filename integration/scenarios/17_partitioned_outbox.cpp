// Scenario 17: an outbox partitioned by range (the usual way to clean one
// up is to drop old partitions). Rows go to three partitions, a fourth is
// created mid-stream, one is detached. Every row of the outbox arrives
// exactly once; rows written to the detached table afterwards are not outbox
// rows and never arrive. Before the relay created its publication with
// publish_via_partition_root, pgoutput named the leaf partitions, the relay
// ignored them as other tables, and every event was lost silently.
#include "scenario_support.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::scn;

TEST_CASE("17_partitioned_outbox") {
    scenario sc("17_partitioned_outbox");
    const std::string t = sc.table();
    const std::string leaf = sc.prefix();  // partition names: <prefix>_p0 ...
    // The same columns as the scenario's plain table, partitioned by seq
    // (which grows per aggregate in commit order).
    sc.admin().exec("DROP TABLE " + t);
    sc.admin().exec("CREATE TABLE " + t +
                    " (id uuid NOT NULL DEFAULT gen_random_uuid(), aggregatetype text NOT NULL,"
                    " aggregateid text NOT NULL, type text NOT NULL, payload jsonb, seq bigint NOT NULL,"
                    " PRIMARY KEY (id, seq)) PARTITION BY RANGE (seq)");
    for (int i = 0; i < 3; ++i)
        sc.admin().exec("CREATE TABLE " + leaf + "_p" + std::to_string(i) + " PARTITION OF " + t + " FOR VALUES FROM (" +
                        std::to_string(i * 50) + ") TO (" + std::to_string((i + 1) * 50) + ")");

    auto& relay = sc.start_relay();
    sc.wait_streaming(relay);
    CHECK(sc.admin().scalar("SELECT pubviaroot::text FROM pg_publication WHERE pubname = '" + sc.publication() + "'") ==
          std::optional<std::string>("true"));

    // 20 aggregates, round robin: 3,000 rows give every aggregate seq 0..149,
    // 1,000 rows in each partition.
    outbox_writer w(env().pg, t, "part", 20, 4);
    while (w.rows() < 3000) w.write_txn(10);
    // A partition made while the relay streams.
    sc.admin().exec("CREATE TABLE " + leaf + "_p3 PARTITION OF " + t + " FOR VALUES FROM (150) TO (1000000)");
    while (w.rows() < 4000) w.write_txn(10);
    REQUIRE(sc.check(120s, false, 4000).missing == 0);

    // Detach the second partition: its 1,000 rows leave the outbox (they were
    // relayed while they belonged to it). Rows written to it from now on are
    // a plain table's and must not arrive.
    const auto in_p1 = std::stoul(*sc.admin().scalar("SELECT count(*)::text FROM " + leaf + "_p1"));
    REQUIRE(in_p1 == 1000);
    sc.admin().exec("ALTER TABLE " + t + " DETACH PARTITION " + leaf + "_p1");
    sc.admin().exec("INSERT INTO " + leaf + "_p1 (aggregatetype, aggregateid, type, payload, seq)"
                    " SELECT 'type0', 'detached-' || g, 'Detached', '{}', 50 + g % 50 FROM generate_series(1, 50) g");
    while (w.rows() < 4500) w.write_txn(5);

    // The checker reads the outbox (now without p1's rows) and every topic
    // its rows route to: p1's relayed records are the only ones with no row.
    auto rep = sc.check(120s, /*allow_duplicates=*/false, 3500);
    INFO("relay log tail:\n" << relay.log_text(3000));
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    MESSAGE("17_partitioned_outbox " << rep.summary() << " detached_rows=" << in_p1);
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);
    CHECK(rep.mismatched == 0);
    CHECK(rep.out_of_order == 0);
    CHECK(rep.unexpected == in_p1);  // exactly p1's relayed rows; none written after the detach
    CHECK(rep.records == 3500 + in_p1);
    CHECK(relay.running());
    sc.admin().exec("DROP TABLE IF EXISTS " + leaf + "_p1");
}

// An existing publication of a partitioned outbox that does not publish via
// the root would lose every row: the relay refuses it with the statement to run.
TEST_CASE("17_partitioned_outbox_publication_not_via_root_exits_15") {
    scenario sc("17_partitioned_pub");
    const std::string t = sc.table();
    sc.admin().exec("DROP TABLE " + t);
    sc.admin().exec("CREATE TABLE " + t +
                    " (id uuid NOT NULL DEFAULT gen_random_uuid(), aggregatetype text NOT NULL,"
                    " aggregateid text NOT NULL, type text NOT NULL, payload jsonb, seq bigint NOT NULL)"
                    " PARTITION BY RANGE (seq)");
    sc.admin().exec("CREATE TABLE " + sc.prefix() + "_p0 PARTITION OF " + t + " FOR VALUES FROM (0) TO (1000000)");
    sc.admin().exec("CREATE PUBLICATION " + sc.publication() + " FOR TABLE " + t + " WITH (publish = 'insert')");
    auto& relay = sc.start_relay();
    auto st = relay.wait_exit(clock::now() + 60s);
    REQUIRE(st.has_value());
    const auto log = relay.log_text();
    INFO(log);
    CHECK(st->code == std::optional<int>(15));
    CHECK(log.find("SET (publish_via_partition_root = true)") != std::string::npos);
    sc.admin().exec("DROP TABLE IF EXISTS " + sc.prefix() + "_p0");
}
