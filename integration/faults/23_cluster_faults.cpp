// Scenario 23 (3-broker cluster only: label matrix): the faults a replicated
// cluster adds, one after the other under steady writes, then every event is
// checked exactly once and in per-key order:
//   1. SIGKILL the leader of a partition the relay writes to; the controller
//      moves leadership (proved: the partition has another leader), the node
//      comes back later;
//   2. kill -9 the relay while transactions are unconfirmed (proved: the
//      slot's confirmed position was behind the rows written at the kill) and
//      start a new one at once: it resumes from the slot, the dead relay's
//      open Kafka transaction is aborted by the new producer of the same
//      transactional.id, and nothing is missing or doubled;
//   3. a rolling restart of every broker (SIGTERM, start, next).
#include "faults_support.hpp"
#include "harness.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::faults;

namespace {

// Restarts node `id` on scope exit while `down`: a failed REQUIRE must not
// leave the matrix cluster one broker short for the next scenario.
struct node_guard {
    std::string id;
    bool down = false;
    ~node_guard() {
        if (!down) return;
        try {
            outbox::it::stack({"kafka-start-node", id});
        } catch (...) {
        }
    }
};

}  // namespace

TEST_CASE("23_cluster_faults") {
    const auto t0 = clock::now();
    const int nodes = outbox::it::kafka_nodes();
    REQUIRE_MESSAGE(nodes >= 3, "scenario 23 needs the 3-broker cluster (integration/test.sh's matrix stack)");
    topic_cleanup topics;
    scenario sc("23_cluster_faults");
    topics.prefix = sc.prefix();
    const int types = 3;
    for (int t = 0; t < types; ++t) outbox::it::stack({"create-topic", sc.topic("type" + std::to_string(t)), "3"});

    auto& first = sc.start_relay("relay1");
    sc.wait_streaming(first);
    // Steady writes (about 750 rows/s) for the whole scenario: stopped after
    // the rolling restart, not at a row count.
    outbox_writer w(env().pg, sc.table(), "cl", 30, types);
    w.start({20, 5, 1, 40, 10}, 20ms, 10'000'000);
    REQUIRE(wait_until(clock::now() + 60s, [&] { return w.rows() >= 2000; }));

    // 1. The leader of type0/0 dies.
    const std::string topic0 = sc.topic("type0");
    const std::int32_t old_leader = outbox::it::partition_leader(env().brokers, topic0, 0);
    node_guard back{std::to_string(old_leader)};
    back.down = true;
    outbox::it::stack({"kafka-kill-node", back.id});
    std::int32_t new_leader = old_leader;
    REQUIRE(wait_until(clock::now() + 30s, [&] {
        new_leader = outbox::it::partition_leader(env().brokers, topic0, 0);
        return new_leader != old_leader;
    }));
    const std::size_t rows_at_leader_kill = w.rows();
    REQUIRE(wait_until(clock::now() + 60s, [&] { return w.rows() >= rows_at_leader_kill + 1000; }));
    outbox::it::stack({"kafka-start-node", back.id});
    back.down = false;

    // 2. kill -9 the relay with work unconfirmed, a new one at once.
    const std::uint64_t wal_at_kill = sc.current_wal();
    const std::uint64_t confirmed_at_kill = sc.slot_info().confirmed_flush.value_or(0);
    first.kill9();
    const std::size_t rows_at_relay_kill = w.rows();
    auto& second = sc.start_relay("relay2");
    REQUIRE(wait_new_walsender(sc, second, std::nullopt, clock::now() + 60s));

    // 3. Rolling restart of every broker, under the second relay.
    for (int n = 1; n <= nodes; ++n) {
        node_guard g{std::to_string(n)};
        g.down = true;
        outbox::it::stack({"kafka-stop-node", g.id});
        outbox::it::stack({"kafka-start-node", g.id});
        g.down = false;
    }
    const std::size_t rows_at_rolled = w.rows();
    REQUIRE(wait_until(clock::now() + 60s, [&] { return w.rows() >= rows_at_rolled + 1000; }));
    REQUIRE(w.stop().empty());

    auto rep = sc.check(180s, /*allow_duplicates=*/false, w.rows());
    const auto f2 = replay_figures_of(second.log_text());
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    MESSAGE("23_cluster_faults checker: " << rep.summary());
    MESSAGE("23_cluster_faults rows=" << w.rows() << " old_leader=" << old_leader << " new_leader=" << new_leader
                                      << " rows_at_leader_kill=" << rows_at_leader_kill
                                      << " rows_at_relay_kill=" << rows_at_relay_kill
                                      << " unconfirmed_bytes_at_kill=" << (wal_at_kill - confirmed_at_kill)
                                      << " replay_scans=" << f2.scans << " present_skipped=" << f2.present
                                      << " producer_restarts=" << f2.producer_restarts
                                      << " total_s=" << std::chrono::duration<double>(clock::now() - t0).count());
    INFO("second relay log tail:\n" << second.log_text(4000));
    CHECK(new_leader != old_leader);                 // leadership moved
    CHECK(confirmed_at_kill < wal_at_kill);          // the kill landed with work unconfirmed
    CHECK(rows_at_relay_kill < w.rows());            // and rows kept coming after it
    CHECK(f2.scans >= 1);                            // the new relay checked what Kafka had
    CHECK(second.running());
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);
    CHECK(rep.out_of_order == 0);
    CHECK(rep.mismatched == 0);
    CHECK(exactly_once(rep));
}
