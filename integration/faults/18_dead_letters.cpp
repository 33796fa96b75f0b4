// Scenario 18: poison rows go to the dead-letter topic, with exact headers,
// and the events after them keep flowing; the relay stays up. Reasons
// exercised against the real broker: invalid_topic, null_column (id),
// record_too_large (too large even for the dead-letter topic: it goes there
// without its value), unmapped_column (a mapped column dropped mid-stream).
// Without a dead-letter topic, a poison row stops the relay with exit 21
// naming the event id and the fix, the slot stays before it, and once the
// cause is fixed a restart delivers it.
#include "faults_support.hpp"
#include "harness.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>

using namespace outbox::it::faults;

namespace {

// A table like the scenario's, but every column nullable: poison is allowed in.
void nullable_outbox(scenario& sc) {
    sc.admin().exec("DROP TABLE " + sc.table());
    sc.admin().exec("CREATE TABLE " + sc.table() +
                    " (id uuid, aggregatetype text, aggregateid text, type text, payload jsonb, seq bigint)");
}

void insert(scenario& sc, const std::string& id_sql, const std::string& aggtype_sql, const std::string& key,
            const std::string& type_sql, const std::string& payload_sql) {
    sc.admin().exec("INSERT INTO " + sc.table() + " (id, aggregatetype, aggregateid, type, payload, seq) VALUES (" +
                    id_sql + ", " + aggtype_sql + ", '" + key + "', " + type_sql + ", " + payload_sql + ", 0)");
}

std::map<std::string, std::string> headers_of(const outbox::it::kafka_record& r) {
    std::map<std::string, std::string> h;
    for (const auto& [k, v] : r.headers) h[k] = v;
    return h;
}

}  // namespace

TEST_CASE("18_dead_letters") {
    topic_cleanup topics;
    scenario sc("18_dead_letters");
    topics.prefix = sc.prefix();
    nullable_outbox(sc);
    const std::string dlq = sc.prefix() + ".dlq";
    // The dead-letter topic holds at most 30 kB per record; the producer 40 kB.
    create_topic_with_config(env().brokers, dlq, 1, {{"max.message.bytes", "30000"}});
    auto& relay = sc.start_relay("relay", {"--dead-letter-topic", dlq, "-X", "message.max.bytes=40000"});
    sc.wait_streaming(relay);

    const std::string big(50'000, 'x');
    insert(sc, "'00000000-0000-0000-0000-000000000001'", "'good'", "k1", "'Created'", "'{\"n\":1}'");
    insert(sc, "'00000000-0000-0000-0000-000000000002'", "'bad topic/x'", "k2", "'Created'", "'{\"n\":2}'");
    insert(sc, "NULL", "'good'", "k3", "'Created'", "'{\"n\":3}'");
    insert(sc, "'00000000-0000-0000-0000-000000000004'", "'good'", "k4", "NULL", "'{\"n\":4}'");
    insert(sc, "'00000000-0000-0000-0000-000000000005'", "'good'", "k5", "'Created'",
           "jsonb_build_object('big', '" + big + "')");
    insert(sc, "'00000000-0000-0000-0000-000000000006'", "'good'", "k6", "'Created'", "'{\"n\":6}'");
    sc.admin().exec("ALTER TABLE " + sc.table() + " DROP COLUMN type");
    sc.admin().exec("INSERT INTO " + sc.table() +
                    " (id, aggregatetype, aggregateid, payload, seq) VALUES ('00000000-0000-0000-0000-000000000007',"
                    " 'good', 'k7', '{\"n\":7}', 0)");

    // Four rows become dead letters (the big one only without its value: with
    // it, it is too large for the dead-letter topic as well), three rows arrive
    // where they belong: a NULL type is only a header value, sent as a null
    // header (as Debezium's router does), not poison.
    INFO("relay log tail:\n" << relay.log_text(4000));
    auto dead = outbox::it::consume_all(env().brokers, dlq, 4, 60s);
    auto good = outbox::it::consume_all(env().brokers, sc.topic("good"), 3, 60s);
    REQUIRE(dead.size() == 4);
    REQUIRE(good.size() == 3);
    std::set<std::string> good_ids;  // three keys, any partitions: any order
    for (const auto& r : good) {
        good_ids.insert(r.header("id").value_or("?"));
        const bool null_type = std::find(r.null_headers.begin(), r.null_headers.end(), "type") != r.null_headers.end();
        CHECK(null_type == (r.header("id") == std::optional<std::string>("00000000-0000-0000-0000-000000000004")));
    }
    CHECK(good_ids == std::set<std::string>{"00000000-0000-0000-0000-000000000001",
                                            "00000000-0000-0000-0000-000000000004",
                                            "00000000-0000-0000-0000-000000000006"});

    std::map<std::string, std::vector<std::map<std::string, std::string>>> by_reason;
    for (const auto& r : dead) by_reason[headers_of(r)["outbox-relay.dlq.reason"]].push_back(headers_of(r));
    CHECK(by_reason["invalid_topic"].size() == 1);
    CHECK(by_reason["null_column"].size() == 1);
    CHECK(by_reason["unmapped_column"].size() == 1);
    CHECK(by_reason["record_too_large"].size() == 1);  // the copy with its value never got in
    for (const auto& r : dead) {
        auto h = headers_of(r);
        CAPTURE(h["outbox-relay.dlq.reason"]);
        CHECK(h["outbox-relay.dlq.table"] == sc.table());
        CHECK_FALSE(h["outbox-relay.dlq.detail"].empty());
        CHECK(h.count("outbox-relay.commit-lsn") == 1);
        CHECK(h.count("outbox-relay.seq") == 1);
        CHECK(h.count("outbox-relay.source") == 1);
    }
    const auto& inv = by_reason["invalid_topic"].front();
    CHECK(inv.at("outbox-relay.dlq.topic") == sc.prefix() + ".event.bad topic/x");
    CHECK(inv.at("id") == "00000000-0000-0000-0000-000000000002");
    // The big one: in the dead-letter topic without its value, with its size.
    const outbox::it::kafka_record* big_dl = nullptr;
    for (const auto& r : dead)
        if (r.header("outbox-relay.dlq.value-bytes")) big_dl = &r;
    REQUIRE(big_dl != nullptr);
    CHECK_FALSE(big_dl->value.has_value());
    CHECK(std::stoul(*big_dl->header("outbox-relay.dlq.value-bytes")) > 50'000);
    CHECK(big_dl->header("outbox-relay.dlq.topic") == std::optional<std::string>(sc.topic("good")));
    CHECK(big_dl->key == std::optional<std::string>("k5"));
    CHECK(relay.running());
    // Everything was confirmed past the poison.
    const auto wal = sc.current_wal();
    CHECK(wait_until(clock::now() + 30s, [&] { return sc.slot_info().confirmed_flush.value_or(0) >= wal; }));
    MESSAGE("18_dead_letters dead_letters=" << dead.size() << " reasons=" << by_reason.size());
}

TEST_CASE("18_poison_without_dead_letter_topic_stops_then_a_fixed_restart_delivers") {
    topic_cleanup topics;
    scenario sc("18_poison_stop");
    topics.prefix = sc.prefix();
    auto& relay = sc.start_relay("limited", {"-X", "message.max.bytes=40000"});
    sc.wait_streaming(relay);
    outbox_writer w(env().pg, sc.table(), "ps", 5, 2);
    w.write_txn(10);
    const auto before = sc.current_wal();
    sc.admin().exec("INSERT INTO " + sc.table() + " (id, aggregatetype, aggregateid, type, payload, seq) VALUES"
                    " ('00000000-0000-0000-0000-0000000000aa', 'type0', 'big', 'Big', jsonb_build_object('b', repeat('x', 50000)), 0)");
    const auto t0 = clock::now();
    auto st = relay.wait_exit(t0 + 30s);
    const double stopped_after = std::chrono::duration<double>(clock::now() - t0).count();
    const auto log = relay.log_text();
    INFO(relay.log_text(3000));
    REQUIRE(st.has_value());
    CHECK(st->code == std::optional<int>(21));
    CHECK(stopped_after <= 30.0);
    CHECK(log.find("event_id=00000000-0000-0000-0000-0000000000aa") != std::string::npos);
    CHECK(log.find("record_too_large") != std::string::npos);
    CHECK(log.find("--dead-letter-topic") != std::string::npos);
    CHECK(sc.slot_info().confirmed_flush.value_or(0) <= before);
    // The fix: a producer that takes the record. The restart delivers it.
    auto& fixed = sc.start_relay("fixed");
    sc.wait_streaming(fixed);
    auto rep = sc.check(60s, /*allow_duplicates=*/false, 11);
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    CHECK(exactly_once(rep));
    MESSAGE("18_poison_stop stopped_after_s=" << stopped_after << " " << rep.summary());
}
