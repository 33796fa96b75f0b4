// Scenario 45: opt-in outbox cleanup (--cleanup-after), against the real
// Postgres and the real broker.
//
// The rule under test (cleanup_plan.hpp): a row is deleted only below the
// xmin of a mark (snapshot xmin + WAL insert LSN) that the relay's confirmed
// position has passed and that was taken at least the retention ago. So:
//   1. rows relayed and older than the retention go (checked by id), rows
//      younger than it stay until they age; rows committed before the slot
//      existed go too although they never reached Kafka (documented);
//   2. while the broker is paused nothing is confirmed, so rows written
//      during the outage stay however long it lasts, while rows relayed
//      before it still go; after the broker is back they reach Kafka, then go;
//   3. a transaction that stays open across several marks and commits long
//      after its row was inserted (while the broker is paused) keeps that row
//      until it was relayed: the marks taken while it was open have an xmin
//      at or below its xid, and the marks taken after its commit are above
//      the confirmed position until Kafka has it;
//   and the cleanup's own cost: 100,000 relayed rows, deleted in batches.
// A partitioned outbox is refused at start-up (exit 2) before any slot is made.
#include "harness.hpp"
#include "http_get.hpp"
#include "scenario_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <regex>
#include <set>
#include <sstream>

using namespace outbox::it::scn;

namespace {

using id_set = std::set<std::string>;

constexpr const char* retention = "3s";  // tick = 1 s
constexpr auto retention_d = 3s;

std::vector<std::string> cleanup_args(const std::vector<std::string>& more = {}) {
    std::vector<std::string> a{"--cleanup-after", retention, "--metrics-listen", "127.0.0.1:0",
                               "--status-interval-ms", "1000"};
    a.insert(a.end(), more.begin(), more.end());
    return a;
}

id_set ids_in_table(scenario& sc) {
    id_set out;
    for (auto& row : sc.admin().query("SELECT id::text FROM " + sc.table())) out.insert(*row[0]);
    return out;
}

// The ids of the records in `topic`, read from the real broker (at least `n`
// records, every partition read to its end).
id_set ids_in_kafka(const std::string& topic, std::size_t n) {
    id_set out;
    for (const auto& r : outbox::it::consume_all(env().brokers, topic, n, 120s))
        if (auto id = r.header("id")) out.insert(*id);
    return out;
}

bool none_of_in(const std::vector<std::string>& ids, const id_set& s) {
    return std::none_of(ids.begin(), ids.end(), [&](const std::string& id) { return s.count(id) > 0; });
}

bool all_of_in(const std::vector<std::string>& ids, const id_set& s) {
    return std::all_of(ids.begin(), ids.end(), [&](const std::string& id) { return s.count(id) > 0; });
}

// One sample of the relay's /metrics: the value of the series `name` (with
// its labels, e.g. `x_total{kind="delete"}`). Throws when it cannot be read.
double metric(const outbox::it::relay_process& r, const std::string& name) {
    const auto port = outbox::it::metrics_port_of(r.log_text());
    if (!port) throw std::runtime_error("the relay logged no metrics port");
    const auto resp = outbox::it::http_get("127.0.0.1", *port, "/metrics");
    if (resp.status != 200) throw std::runtime_error("/metrics answered " + std::to_string(resp.status));
    std::istringstream in(resp.body);
    for (std::string line; std::getline(in, line);)
        if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 && line[name.size()] == ' ')
            return std::stod(line.substr(name.size() + 1));
    throw std::runtime_error("no metric " + name);
}

double runs(const outbox::it::relay_process& r) { return metric(r, "outbox_relay_cleanup_runs_total"); }

// Waits until the cleaner completed `n` more ticks than `from`.
void wait_runs(const outbox::it::relay_process& r, double from, int n, std::chrono::seconds timeout = 60s) {
    REQUIRE_MESSAGE(wait_until(clock::now() + timeout, [&] { return runs(r) >= from + n; }),
                    "the cleaner did not complete " << n << " ticks within " << timeout.count() << " s; log:\n"
                                                    << r.log_text(3000));
}

std::uint64_t insert_lsn(scenario& sc) {
    return std::stoull(*sc.admin().scalar("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint::text"));
}

// Every `event=cleanup_pass` line with deleted > 0: (deleted, took_ms, mark_xmin).
struct pass_line {
    std::uint64_t deleted, took_ms, mark_xmin;
};
std::vector<pass_line> passes(const outbox::it::relay_process& r) {
    static const std::regex re(R"(event=cleanup_pass table=\S+ deleted=(\d+) batches=\d+ took_ms=(\d+) mark_xmin=(\d+))");
    std::vector<pass_line> out;
    const std::string log = r.log_text();
    for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator(); ++it)
        out.push_back({std::stoull((*it)[1]), std::stoull((*it)[2]), std::stoull((*it)[3])});
    return out;
}

std::string show(const id_set& s) {
    std::string out = "{";
    for (const auto& id : s) out += (out.size() > 1 ? "," : "") + id.substr(0, 8);
    return out + "}";
}

}  // namespace

TEST_CASE("45_outbox_cleanup_deletes_relayed_rows_once_older_than_the_retention") {
    scenario sc("45_outbox_cleanup");
    outbox_writer w(env().pg, sc.table(), "cl", 3, 1);
    const std::string topic = sc.topic("type0");

    // Arrange: rows committed before the relay made its slot. They are below
    // every position it will confirm, yet they were never relayed.
    const auto pre = w.write_txn(4);
    auto& relay = sc.start_relay("relay", cleanup_args());
    sc.wait_streaming(relay);
    INFO("relay log tail:\n" << relay.log_text(3000));

    // Act 1: rows A reach Kafka; once the retention has passed they go, and
    // so do the pre-slot rows.
    auto a = w.write_txn(5);
    const auto a2 = w.write_txn(5);
    a.insert(a.end(), a2.begin(), a2.end());
    CHECK(all_of_in(a, ids_in_kafka(topic, a.size())));
    REQUIRE(wait_until(clock::now() + 60s, [&] { return ids_in_table(sc).empty(); }));

    // Act 2: rows B, young: the cleaner runs at least twice while they are
    // younger than the retention and keeps every one of them. (Nothing can
    // delete them before 3 s after their commit: a mark above their xid is
    // taken after it, and used only 3 s after it was taken.)
    const auto t_b0 = clock::now();
    const auto b = w.write_txn(6);
    const double runs_b = runs(relay);
    double runs_seen = runs_b;
    std::size_t checks = 0;
    while (clock::now() < t_b0 + 2700ms) {
        const id_set now_ids = ids_in_table(sc);
        CHECK_MESSAGE(now_ids == id_set(b.begin(), b.end()), "remaining " << show(now_ids));
        runs_seen = runs(relay);
        ++checks;
        std::this_thread::sleep_for(100ms);
    }
    MESSAGE("young rows checked " << checks << " times over " << (runs_seen - runs_b) << " cleaner ticks");
    CHECK(runs_seen - runs_b >= 2);

    // ... and then they age and go, never before the retention.
    REQUIRE(wait_until(clock::now() + 60s, [&] { return ids_in_table(sc).empty(); }, 50ms));
    const auto b_gone_after = clock::now() - t_b0;
    MESSAGE("young rows deleted " << std::chrono::duration_cast<std::chrono::milliseconds>(b_gone_after).count()
                                  << " ms after their insert began (retention 3000 ms, tick 1000 ms)");
    CHECK(b_gone_after >= retention_d);

    // Check: Kafka (the real broker) has A and B, never the pre-slot rows.
    const id_set in_kafka = ids_in_kafka(topic, a.size() + b.size());
    CHECK(all_of_in(a, in_kafka));
    CHECK(all_of_in(b, in_kafka));
    CHECK(none_of_in(pre, in_kafka));
    CHECK(metric(relay, "outbox_relay_cleanup_deleted_rows_total") == pre.size() + a.size() + b.size());
    CHECK(metric(relay, "outbox_relay_cleanup_errors_total") == 0);
    // The publication is insert-only: the cleaner's DELETEs never reached the stream.
    CHECK(metric(relay, "outbox_relay_changes_ignored_total{kind=\"delete\"}") == 0);
    CHECK(*sc.admin().scalar("SELECT pubdelete::text FROM pg_publication WHERE pubname = '" + sc.publication() +
                             "'") == "false");

    relay.terminate();
    auto st = relay.wait_exit(clock::now() + 40s);
    REQUIRE(st.has_value());
    CHECK(st->exited_ok());
}

TEST_CASE("45_outbox_cleanup_keeps_rows_written_while_kafka_is_down") {
    scenario sc("45_outbox_cleanup");
    outbox_writer w(env().pg, sc.table(), "cl", 3, 1);
    const std::string topic = sc.topic("type0");
    auto& relay = sc.start_relay("relay", cleanup_args());
    sc.wait_streaming(relay);
    INFO("relay log tail:\n" << relay.log_text(3000));

    // Arrange: rows P relayed, and a mark taken after their commit whose
    // position the relay has confirmed, all before the broker stops.
    const auto p = w.write_txn(5);
    CHECK(all_of_in(p, ids_in_kafka(topic, p.size())));
    wait_runs(relay, runs(relay), 2);
    const std::uint64_t x = insert_lsn(sc);  // at or past that mark's LSN
    REQUIRE(wait_until(clock::now() + 30s, [&] { return metric(relay, "outbox_relay_confirmed_lsn") >= x; }));

    restart_guard guard{"kafka-resume", false};  // never leave the broker stopped for the next scenario
    stack("kafka-pause");
    guard.down = true;

    // Act: rows O while the broker answers nothing.
    auto o = w.write_txn(5);
    const auto o2 = w.write_txn(5);
    o.insert(o.end(), o2.begin(), o2.end());
    const auto t_o = clock::now();
    const std::uint64_t after_o = insert_lsn(sc);  // past O's commit records

    // P still goes during the outage: the cleaner keeps working below confirmed.
    REQUIRE(wait_until(clock::now() + 60s, [&] { return none_of_in(p, ids_in_table(sc)); }));
    const double confirmed_during = metric(relay, "outbox_relay_confirmed_lsn");
    // Well beyond the retention: O is 4 s old, then 5 more ticks.
    std::this_thread::sleep_until(t_o + retention_d + 1s);  // a floor, not the condition
    wait_runs(relay, runs(relay), 5);

    // Check: exactly the outage rows remain; confirmed did not move.
    const id_set during = ids_in_table(sc);
    CHECK_MESSAGE(during == id_set(o.begin(), o.end()), "remaining " << show(during));
    const double confirmed_end = metric(relay, "outbox_relay_confirmed_lsn");
    CHECK(confirmed_end == confirmed_during);
    CHECK(confirmed_end < static_cast<double>(after_o));
    const double lag = metric(relay, "outbox_relay_cleanup_mark_lag_seconds");
    MESSAGE("outage: " << o.size() << " rows kept over "
                       << std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - t_o).count()
                       << " ms, usable mark lag " << lag << " s");
    CHECK(lag > 4.0);  // the usable mark is the one from before the outage
    CHECK(metric(relay, "outbox_relay_cleanup_errors_total") == 0);

    // Act: the broker comes back; O reaches Kafka, then goes.
    stack("kafka-resume");
    guard.down = false;
    CHECK(all_of_in(o, ids_in_kafka(topic, p.size() + o.size())));
    REQUIRE(wait_until(clock::now() + 90s, [&] { return ids_in_table(sc).empty(); }));
    CHECK(metric(relay, "outbox_relay_cleanup_deleted_rows_total") == p.size() + o.size());
    CHECK(relay.running());
}

TEST_CASE("45_outbox_cleanup_holds_back_a_long_transaction_by_its_xid") {
    scenario sc("45_outbox_cleanup");
    outbox_writer w(env().pg, sc.table(), "cl", 3, 1);
    const std::string topic = sc.topic("type0");
    auto& relay = sc.start_relay("relay", cleanup_args());
    sc.wait_streaming(relay);
    INFO("relay log tail:\n" << relay.log_text(3000));

    // Arrange: rows E, committed and relayed before the long transaction begins.
    const auto e = w.write_txn(4);
    CHECK(all_of_in(e, ids_in_kafka(topic, e.size())));

    // The long transaction inserts its row L and stays open.
    pg longtx(env().pg);
    longtx.exec("BEGIN");
    const std::string l = *longtx.scalar("INSERT INTO " + sc.table() +
                                         " (aggregatetype, aggregateid, type, payload, seq) VALUES "
                                         "('type0', 'long-1', 'OrderCreated', '{\"long\": true}', 0) RETURNING id::text");
    const std::uint64_t l_xid = std::stoull(*longtx.scalar("SELECT pg_current_xact_id()::text"));
    const auto t_l = clock::now();

    // Rows F commit while it is open (their xids are above its xid).
    const auto f = w.write_txn(4);
    CHECK(all_of_in(f, ids_in_kafka(topic, e.size() + f.size())));
    const auto t_f = clock::now();

    // E goes: marks are usable and applied, and E lies below their xmin,
    // which is at most L's xid (L's transaction was open, or not yet begun,
    // when they were taken).
    REQUIRE(wait_until(clock::now() + 60s, [&] { return none_of_in(e, ids_in_table(sc)); }));
    const auto e_pass = passes(relay);
    REQUIRE(e_pass.size() == 1);
    CHECK(e_pass[0].deleted == e.size());
    CHECK(e_pass[0].mark_xmin <= l_xid);
    // F is relayed and aged, but above the open transaction's xid: it stays.
    std::this_thread::sleep_until(t_f + retention_d + 1s);  // a floor, not the condition
    wait_runs(relay, runs(relay), 3);
    const id_set open_ids = ids_in_table(sc);
    CHECK_MESSAGE(open_ids == id_set(f.begin(), f.end()), "remaining " << show(open_ids));
    CHECK(longtx.scalar("SELECT id::text FROM " + sc.table() + " WHERE id = '" + l + "'") == l);

    // Act: the broker stops and the transaction commits, its row now far older
    // than the retention by its insert time.
    restart_guard guard{"kafka-resume", false};
    stack("kafka-pause");
    guard.down = true;
    longtx.exec("COMMIT");
    const auto t_c = clock::now();
    MESSAGE("long transaction: row inserted "
            << std::chrono::duration_cast<std::chrono::milliseconds>(t_c - t_l).count() << " ms before its commit");
    CHECK(t_c - t_l > retention_d);

    // Check: over several ticks past the retention after its commit, L (now
    // visible, not relayed) and F stay. The marks still usable were taken
    // while it was open; the ones taken after its commit are above confirmed.
    std::this_thread::sleep_until(t_c + retention_d + 1s);  // a floor, not the condition
    wait_runs(relay, runs(relay), 4);
    const id_set committed_ids = ids_in_table(sc);
    id_set want(f.begin(), f.end());
    want.insert(l);
    CHECK_MESSAGE(committed_ids == want, "remaining " << show(committed_ids));
    CHECK(passes(relay).size() == 1);  // nothing deleted since E

    // Act: the broker is back; L reaches Kafka, then L and F go.
    stack("kafka-resume");
    guard.down = false;
    const id_set in_kafka = ids_in_kafka(topic, e.size() + f.size() + 1);
    CHECK(in_kafka.count(l) == 1);
    REQUIRE(wait_until(clock::now() + 90s, [&] { return ids_in_table(sc).empty(); }, 50ms));
    CHECK(clock::now() - t_c >= retention_d);
    const auto all = passes(relay);
    REQUIRE(all.size() >= 2);
    // The mark that let L go was taken after its commit: its xmin is above L's xid.
    CHECK(all.back().mark_xmin > l_xid);
    CHECK(metric(relay, "outbox_relay_cleanup_deleted_rows_total") == e.size() + f.size() + 1);
}

TEST_CASE("45_outbox_cleanup_deletes_100k_relayed_rows_in_batches") {
    scenario sc("45_outbox_cleanup");
    const std::string topic = sc.topic("type0");
    auto& relay = sc.start_relay("relay", cleanup_args());
    sc.wait_streaming(relay);
    INFO("relay log tail:\n" << relay.log_text(3000));

    // 100,000 rows in 10 transactions of 10,000.
    constexpr std::size_t n = 100'000;
    for (int t = 0; t < 10; ++t)
        sc.admin().exec("INSERT INTO " + sc.table() +
                        " (aggregatetype, aggregateid, type, payload, seq) SELECT 'type0', 'bulk-' || (g % 50), "
                        "'OrderCreated', jsonb_build_object('g', g, 'note', repeat('x', 200)), g FROM "
                        "generate_series(" + std::to_string(t * 10'000) + ", " + std::to_string(t * 10'000 + 9'999) +
                        ") g");
    const id_set in_kafka = ids_in_kafka(topic, n);
    CHECK(in_kafka.size() == n);
    REQUIRE(wait_until(clock::now() + 180s, [&] { return *sc.admin().scalar("SELECT count(*) FROM " + sc.table()) == "0"; }));

    std::uint64_t deleted = 0, took_ms = 0;
    for (const auto& p : passes(relay)) {
        deleted += p.deleted;
        took_ms += p.took_ms;
    }
    CHECK(deleted == n);
    CHECK(metric(relay, "outbox_relay_cleanup_deleted_rows_total") == n);
    MESSAGE("45_outbox_cleanup 100k: deleted=" << deleted << " in " << took_ms << " ms of passes (batch 10000, "
                                               << "pauses between batches included) = "
                                               << (took_ms > 0 ? deleted * 1000 / took_ms : 0) << " rows/s");
}

TEST_CASE("45_outbox_cleanup_refuses_a_partitioned_outbox_before_making_a_slot") {
    scenario sc("45_outbox_cleanup");
    const std::string parted = sc.prefix() + "_parted";
    sc.admin().exec("CREATE TABLE " + parted +
                    " (id uuid NOT NULL DEFAULT gen_random_uuid(), aggregatetype text NOT NULL, aggregateid text NOT "
                    "NULL, type text NOT NULL, payload jsonb, seq bigint NOT NULL) PARTITION BY LIST (aggregatetype)");
    sc.admin().exec("CREATE TABLE " + parted + "_p0 PARTITION OF " + parted + " DEFAULT");
    struct drop_guard {
        scenario& sc;
        std::string t;
        ~drop_guard() {
            try {
                sc.admin().exec("DROP TABLE IF EXISTS " + t);
            } catch (...) {
            }
        }
    } dropper{sc, parted};

    outbox::it::relay_options ro;
    ro.args = sc.relay_args(cleanup_args());
    for (std::size_t i = 0; i + 1 < ro.args.size(); ++i)
        if (ro.args[i] == "--table") ro.args[i + 1] = "public." + parted;
    ro.log_path = outbox::it::relay_log_path("45_outbox_cleanup-parted");
    outbox::it::relay_process refused(std::move(ro));
    const auto st = refused.wait_exit(clock::now() + 60s);
    const std::string log = refused.log_text();
    INFO("relay log:\n" << log);
    REQUIRE(st.has_value());
    CHECK(st->code == std::optional<int>(2));
    CHECK(log.find("table public." + parted + " is partitioned") != std::string::npos);
    CHECK(log.find("Drop old partitions") != std::string::npos);
    CHECK_FALSE(sc.slot_info().exists);
    CHECK(*sc.admin().scalar("SELECT count(*) FROM pg_publication WHERE pubname = '" + sc.publication() + "'") == "0");
}
