// Scenario 24: two Postgres clusters (the stack's and a second one this test
// initialises and starts) relay into the same topics, and both relays are
// killed with kill -9 and restarted mid-stream, twice each. Their LSNs are
// unrelated, so the same (commit-lsn, seq) names different events in the two
// streams; the exactly-once replay must tell them apart by the source header
// (system identifier, timeline, slot, database), or a restarted relay would
// take the other cluster's records for its own and skip its events: a loss.
// Proved: the clusters' system identifiers differ, their WAL positions are
// brought level so the streams' LSNs interleave, each relay's restarts
// scanned the shared topics and met the other cluster's records there
// (foreign=N in its scan lines), and every row of both tables is in Kafka
// exactly once, in per-key order.
#include "faults_support.hpp"
#include "harness.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>

#include <unistd.h>

using namespace outbox::it::faults;

namespace {

int sh(const std::string& cmd) { return std::system(cmd.c_str()); }

// A throwaway cluster of the stack's Debian PostgreSQL: initdb into a temp
// dir, logical decoding on, trust on loopback, stopped and removed at the end.
struct second_cluster {
    std::string dir, bin, conninfo;
    int port;
    bool as_postgres = ::geteuid() == 0;

    explicit second_cluster(int port_) : port(port_) {
        bin = "/usr/lib/postgresql/" + std::string(std::getenv("OUTBOX_TEST_PG_VERSION") ? std::getenv("OUTBOX_TEST_PG_VERSION") : "15") + "/bin";
        dir = "/tmp/outbox-it24-" + std::to_string(::getpid());
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir);
        const std::string run = as_postgres ? "runuser -u postgres -- " : "";
        if (as_postgres) REQUIRE(sh("chown postgres " + dir) == 0);
        REQUIRE(sh(run + bin + "/initdb -D " + dir + "/data -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 > " +
                   dir + "/initdb.log 2>&1") == 0);
        REQUIRE(sh("printf \"listen_addresses = '127.0.0.1'\\nport = " + std::to_string(port) +
                   "\\nunix_socket_directories = '" + dir + "'\\nwal_level = logical\\nmax_replication_slots = 8\\n"
                   "max_wal_senders = 8\\n\" >> " + dir + "/data/postgresql.conf") == 0);
        REQUIRE(sh("printf 'local all all trust\\nhost all all 127.0.0.1/32 trust\\nhost replication all "
                   "127.0.0.1/32 trust\\n' > " + dir + "/data/pg_hba.conf") == 0);
        REQUIRE(sh(run + bin + "/pg_ctl -D " + dir + "/data -l " + dir + "/log -w -t 60 start > /dev/null") == 0);
        REQUIRE(sh("psql -q -h 127.0.0.1 -p " + std::to_string(port) +
                   " -U postgres -d postgres -c 'CREATE DATABASE outbox_test' > /dev/null") == 0);
        conninfo = "host=127.0.0.1 port=" + std::to_string(port) + " dbname=outbox_test user=postgres";
    }
    ~second_cluster() {
        const std::string run = as_postgres ? "runuser -u postgres -- " : "";
        sh(run + bin + "/pg_ctl -D " + dir + "/data -m immediate -w -t 30 stop > /dev/null 2>&1");
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
};

}  // namespace

TEST_CASE("24_two_clusters_one_set_of_topics") {
    const auto t0 = clock::now();
    topic_cleanup topics;
    scenario sc("24_two_clusters");
    topics.prefix = sc.prefix();
    second_cluster b(56000 + static_cast<int>(::getpid() % 500));
    pg bdb(b.conninfo);
    bdb.exec("CREATE TABLE " + sc.table() +
             " (id uuid NOT NULL DEFAULT gen_random_uuid(), aggregatetype text NOT NULL,"
             " aggregateid text NOT NULL, type text NOT NULL, payload jsonb, seq bigint NOT NULL)");
    const auto sys_a = sc.admin().scalar("SELECT system_identifier::text FROM pg_control_system()");
    const auto sys_b = bdb.scalar("SELECT system_identifier::text FROM pg_control_system()");
    REQUIRE(sys_a.has_value());
    REQUIRE(sys_b.has_value());
    CHECK(*sys_a != *sys_b);

    // Bring B's WAL position up to A's, so the two streams' LSNs interleave
    // in the shared topics (each relay's scan then meets the other's records
    // at positions like its own).
    const auto lsn_a = parse_lsn(*sc.admin().scalar("SELECT pg_current_wal_lsn()::text"));
    for (int i = 0; i < 200 && parse_lsn(*bdb.scalar("SELECT pg_current_wal_lsn()::text")) < lsn_a; ++i)
        bdb.exec("SELECT pg_logical_emit_message(false, 'pad', 'x'); SELECT pg_switch_wal();");
    const auto lsn_b = parse_lsn(*bdb.scalar("SELECT pg_current_wal_lsn()::text"));
    CHECK(lsn_b >= lsn_a);
    CHECK(lsn_b - lsn_a < (64u << 20));

    // The same slot and publication names and the same topic template on both.
    auto args_b = sc.relay_args();
    for (std::size_t i = 0; i + 1 < args_b.size(); ++i)
        if (args_b[i] == "--postgres") args_b[i + 1] = b.conninfo;

    const int types = 3;
    outbox_writer wa(env().pg, sc.table(), "ca", 20, types);
    outbox_writer wb(b.conninfo, sc.table(), "cb", 20, types);
    auto* ra = &sc.start_relay("a0");
    auto* rb = &sc.start_relay_with("b0", args_b);
    sc.wait_streaming(*ra);
    wa.start({30, 1, 5, 60}, 15ms, 1'000'000);
    wb.start({30, 1, 5, 60}, 15ms, 1'000'000);

    std::size_t restarts = 0, scans = 0;
    std::vector<std::string> logs;
    for (int round = 1; round <= 2; ++round) {
        const std::size_t a0 = wa.rows(), b0 = wb.rows();
        REQUIRE(wait_until(clock::now() + 60s, [&] { return wa.rows() >= a0 + 1500 && wb.rows() >= b0 + 1500; }));
        logs.push_back(ra->log_text());
        logs.push_back(rb->log_text());
        ra->kill9();
        rb->kill9();
        ra = &sc.start_relay("a" + std::to_string(round));
        rb = &sc.start_relay_with("b" + std::to_string(round), args_b);
        restarts += 2;
        REQUIRE(wait_new_walsender(sc, *ra, std::nullopt, clock::now() + 60s));
    }
    const std::size_t a1 = wa.rows(), b1 = wb.rows();
    REQUIRE(wait_until(clock::now() + 60s, [&] { return wa.rows() >= a1 + 1000 && wb.rows() >= b1 + 1000; }));
    REQUIRE(wa.stop().empty());
    REQUIRE(wb.stop().empty());

    // Cluster A's rows against the topics (B's records are unexpected to it),
    // then cluster B's.
    auto rep_a = sc.check(180s, false, wa.rows(), /*lsn_headers=*/false);
    outbox::check::check_options ob;
    ob.postgres = b.conninfo;
    ob.brokers = env().brokers;
    ob.table = sc.table();
    ob.topic_template = sc.topic_template();
    ob.order_column = "seq";
    ob.wait = 180s;
    ob.expect = wb.rows();
    auto rep_b = outbox::check::run_check(ob);
    logs.push_back(ra->log_text());
    logs.push_back(rb->log_text());
    std::size_t foreign = 0;
    for (const auto& l : logs) {
        scans += replay_figures_of(l).scans;
        for (std::size_t at = l.find(" foreign="); at != std::string::npos; at = l.find(" foreign=", at + 1))
            foreign += std::strtoul(l.c_str() + at + 9, nullptr, 10);
    }

    for (const auto& s : rep_a.samples) MESSAGE("checker a: " << s);
    for (const auto& s : rep_b.samples) MESSAGE("checker b: " << s);
    MESSAGE("24_two_clusters a: " << rep_a.summary());
    MESSAGE("24_two_clusters b: " << rep_b.summary());
    MESSAGE("24_two_clusters rows_a=" << wa.rows() << " rows_b=" << wb.rows() << " relay_restarts=" << restarts
                                      << " replay_scans=" << scans << " foreign_records_seen_by_scans=" << foreign
                                      << " total_s=" << std::chrono::duration<double>(clock::now() - t0).count());
    INFO("relay b log tail:\n" << rb->log_text(3000));
    CHECK(scans >= restarts);  // every restarted relay scanned the shared topics
    CHECK(foreign > 0);        // and met the other cluster's records there, and told them apart
    CHECK(rep_a.missing == 0);
    CHECK(rep_b.missing == 0);
    CHECK(rep_a.duplicated == 0);
    CHECK(rep_b.duplicated == 0);
    CHECK(rep_a.out_of_order == 0);
    CHECK(rep_b.out_of_order == 0);
    CHECK(rep_a.mismatched == 0);
    CHECK(rep_b.mismatched == 0);
    // Each side's "unexpected" records are exactly the other cluster's rows.
    CHECK(rep_a.unexpected == wb.rows());
    CHECK(rep_b.unexpected == wa.rows());
    // The second cluster's slot is dropped with it; drop its relay first.
    CHECK(ra->running());
    CHECK(rb->running());
}
