// Scenario 16: one event is larger than the broker accepts for its topic.
// The topic is created with max.message.bytes=300000 through librdkafka's
// admin API (the stack's create-topic takes no configs), so the broker (not
// the client) refuses the record. The relay must stop with exit code 21
// (record rejected) and an error line naming the event id, and must not have
// confirmed past that event's transaction: the slot's next transaction is
// the oversized one, and every event before it is in Kafka. After the
// topic's limit is raised, a restarted relay delivers everything exactly
// once (also the events after the oversized one that the first relay may
// already have put into Kafka).
//
// Run twice. Without Kafka transactions (--kafka-transactions false) every
// event before the oversized one was acked on its own, so all of them are in
// Kafka and the slot's next transaction is the oversized one. With them (the
// default) the refusal aborts the open Kafka transaction, which may also
// hold the Postgres transactions just before the oversized one: those are
// not visible to read_committed consumers and not confirmed, so the slot
// resumes at or before the oversized transaction, and what Kafka shows is a
// prefix of the events before it.
#include "faults_support.hpp"

#include "harness.hpp"

#include <doctest/doctest.h>

#include <set>

using namespace outbox::it::faults;

namespace {
// Text that lz4 cannot shrink much (the broker checks the compressed batch).
std::string incompressible(std::size_t n, std::mt19937_64& rng) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    std::uniform_int_distribution<int> d(0, 61);
    std::string s(n, ' ');
    for (auto& c : s) c = alphabet[d(rng)];
    return s;
}
}  // namespace

namespace {
void run_oversized(bool kafka_txns) {
    const std::string name = kafka_txns ? "16_oversized_record" : "16_oversized_record_no_txn";
    const auto t0 = clock::now();
    std::mt19937_64 rng(pick_seed());
    topic_cleanup topics;  // destroyed after the scenario (relays stopped first)
    scenario sc(name);
    topics.prefix = sc.prefix();
    const std::string topic = sc.topic("type0");
    create_topic_with_config(env().brokers, topic, 3, {{"max.message.bytes", "300000"}});
    // batch.size keeps batches of ordinary records far below the topic limit,
    // so only the oversized record itself can be refused.
    std::vector<std::string> extra{"-X", "batch.size=100000"};
    if (!kafka_txns) extra.insert(extra.end(), {"--kafka-transactions", "false"});
    auto& first = sc.start_relay("first", extra);
    sc.wait_streaming(first);

    // 500 ordinary events, then the oversized one alone in its transaction,
    // then 500 more. One aggregate type: everything goes to `topic`.
    outbox_writer w(env().pg, sc.table(), "ord", 20, 1);
    std::vector<std::string> before_ids;
    for (int i = 0; i < 50; ++i)
        for (auto& id : w.write_txn(10)) before_ids.push_back(std::move(id));
    const std::size_t before = before_ids.size();

    pg conn(env().pg);
    const std::string blob = incompressible(600'000, rng);
    auto rows = conn.query("BEGIN; INSERT INTO " + sc.table() +
                           " (aggregatetype, aggregateid, type, payload, seq) VALUES ('type0', 'big-0', 'Huge', "
                           "jsonb_build_object('blob', '" + blob + "'), 0) RETURNING id::text");
    REQUIRE(rows.size() == 1);
    const std::string big_id = *rows[0][0];
    const std::string big_xid = *conn.scalar("SELECT txid_current()::text");
    conn.exec("COMMIT");
    for (int i = 0; i < 50; ++i) w.write_txn(10);
    const std::size_t total = w.rows() + 1;

    // The relay stops by itself: code 21 and the event named.
    auto st = first.wait_exit(clock::now() + 60s);
    INFO("first relay log:\n" << first.log_text(4000));
    REQUIRE_MESSAGE(st.has_value(), "the relay did not stop within 60 s after the oversized event");
    CHECK(st->code == std::optional<int>(21));
    const std::string log = first.log_text();
    std::string error_line;
    for (std::size_t p = log.find("event=fatal"); p != std::string::npos; p = log.find("event=fatal", p + 1)) {
        auto bol = log.rfind('\n', p);
        auto eol = log.find('\n', p);
        error_line = log.substr(bol == std::string::npos ? 0 : bol + 1, eol == std::string::npos ? std::string::npos : eol - bol - 1);
        break;
    }
    CHECK_MESSAGE(error_line.find("event_id=" + big_id) != std::string::npos,
                  "the error line does not name the oversized event " << big_id << ": " << error_line);
    CHECK(error_line.find("level=error") != std::string::npos);

    // Not confirmed past the oversized transaction: decoding the slot from
    // its confirmed position starts with that transaction (pgoutput in PG15
    // skips transactions without published changes, so nothing else can
    // come first).
    REQUIRE(wait_until(clock::now() + 30s, [&] { return !sc.slot_info().active_pid; }));
    auto next = sc.admin().query("SELECT xid::text FROM pg_logical_slot_peek_binary_changes('" + sc.slot() +
                                 "', NULL, NULL, 'proto_version', '1', 'publication_names', '" + sc.publication() +
                                 "') LIMIT 1");
    REQUIRE(next.size() == 1);
    const std::uint64_t next_xid = std::stoull(*next[0][0]), big = std::stoull(big_xid);
    if (kafka_txns)
        CHECK_MESSAGE(next_xid <= big, "the slot's next transaction is xid " << next_xid
                                                                              << ", after the oversized one " << big);
    else
        CHECK_MESSAGE(next_xid == big, "the slot's next transaction is xid " << next_xid
                                                                              << ", the oversized one is " << big);

    // Without transactions every event before it is in Kafka; with them a
    // prefix (in write order) of those. The oversized one is not.
    auto records = outbox::it::consume_all(env().brokers, topic, kafka_txns ? 0 : before, 60s);
    std::set<std::string> ids;
    for (const auto& r : records)
        if (auto id = r.header("id")) ids.insert(*id);
    std::size_t before_present = 0;
    for (const auto& id : before_ids) before_present += ids.count(id);
    if (kafka_txns) {
        for (std::size_t i = 0; i < before_present; ++i)
            CHECK_MESSAGE(ids.count(before_ids[i]) == 1, "event " << i << " of those before the oversized one is "
                                                                  << "missing while a later one is in Kafka");
    } else {
        CHECK(before_present == before);
    }
    CHECK(ids.count(big_id) == 0);
    const std::size_t after_already_in_kafka = ids.size() - before_present;

    // Raise the limit, restart: everything arrives exactly once.
    alter_topic_config(env().brokers, topic, {{"max.message.bytes", "2000000"}});
    auto& second = sc.start_relay("second", extra);
    sc.wait_streaming(second);
    auto rep = sc.check(120s, /*allow_duplicates=*/false, total);
    const auto f = replay_figures_of(second.log_text());
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    MESSAGE(name << " checker: " << rep.summary());
    MESSAGE(name << " exit_code=" << (st->code ? *st->code : -1) << " big_event=" << big_id
            << " events_before=" << before << " before_in_kafka=" << before_present << " after_already_in_kafka=" << after_already_in_kafka
            << " restart_duplicates_skipped(present)=" << f.present
            << " total_s=" << std::chrono::duration<double>(clock::now() - t0).count());
    MESSAGE(name << " error line: " << error_line);
    INFO("second relay log:\n" << second.log_text(3000));
    CHECK(second.running());
    CHECK(exactly_once(rep));
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);
    CHECK(rep.out_of_order == 0);
    CHECK(rep.mismatched == 0);
    CHECK(f.present == after_already_in_kafka);
}
}  // namespace

TEST_CASE("16_oversized_record") { run_oversized(/*kafka_txns=*/true); }
TEST_CASE("16_oversized_record_no_txn") { run_oversized(/*kafka_txns=*/false); }
