// Scenario 41: the table-less outbox. pg_logical_emit_message events with the
// outbox prefix are relayed like rows: interleaved with rows of the same key
// in one transaction they keep their commit order; their "headers" become
// Kafka headers; a malformed one (not JSON, a missing key field, one of our
// own header names) becomes a dead letter and the events after it flow; a
// non-transactional one is relayed even though the transaction around it
// rolled back (that is what non-transactional means); other prefixes are not
// events; a traceparent in "headers" passes on when valid, else is dropped.
#include "routing_support.hpp"

#include <doctest/doctest.h>

#include <map>
#include <fstream>
#include <regex>
#include <sstream>

using namespace outbox::it::routing;

namespace {

std::string uuid_of(int i) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "00000000-0000-0000-0000-%012d", i);
    return buf;
}

std::string message_sql(bool transactional, const std::string& prefix, const std::string& content) {
    return std::string("SELECT pg_logical_emit_message(") + (transactional ? "true" : "false") + ", " +
           sql_quote(prefix) + ", " + sql_quote(content) + ")";
}

std::string event_json(int id, const std::string& key, int seq, const std::string& extra = {}) {
    return "{\"id\": \"" + uuid_of(id) + "\", \"aggregatetype\": \"type0\", \"aggregateid\": \"" + key +
           "\", \"type\": \"Msg\", \"payload\": {\"seq\": " + std::to_string(seq) + "}" + extra + "}";
}

std::optional<long> seq_of(const outbox::it::kafka_record& r) {
    static const std::regex re("\"seq\": ?([0-9]+)");
    std::smatch m;
    if (!r.value || !std::regex_search(*r.value, m, re)) return std::nullopt;
    return std::stol(m[1]);
}

}  // namespace

TEST_CASE("41_outbox_messages") {
    topic_cleanup topics;
    scenario sc("41_outbox_messages");
    topics.prefix = sc.prefix();
    const std::string dlq = sc.prefix() + ".dlq";
    auto& relay = sc.start_relay("relay", {"--dead-letter-topic", dlq, "--metrics-listen", "127.0.0.1:0"});
    sc.wait_streaming(relay);
    const std::string t = sc.table();

    // Five transactions of ten events, rows and messages alternating, two
    // keys; each key's seq counts up in commit order.
    int id = 0;
    std::map<std::string, int> next_seq;
    for (int txn = 0; txn < 5; ++txn) {
        std::string sql = "BEGIN;";
        for (int j = 0; j < 10; ++j) {
            const std::string key = "k" + std::to_string(j % 2);
            const int seq = next_seq[key]++;
            if (j % 2 == txn % 2)
                sql += "INSERT INTO " + t + " (id, aggregatetype, aggregateid, type, payload, seq) VALUES ('" +
                       uuid_of(id++) + "', 'type0', '" + key + "', 'Row', '{\"seq\": " + std::to_string(seq) +
                       "}', " + std::to_string(seq) + ");";
            else
                sql += message_sql(true, "outbox", event_json(id++, key, seq)) + ";";
        }
        sc.admin().exec(sql + "COMMIT;");
    }
    // Headers from the message; then poison between good events.
    const int header_seq = next_seq["k0"]++;
    const char* traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    sc.admin().exec(message_sql(true, "outbox",
                                event_json(100, "k0", header_seq,
                                           ", \"headers\": {\"tenant\": \"t9\", \"traceparent\": \"" +
                                               std::string(traceparent) + "\"}")));
    sc.admin().exec("BEGIN;" + message_sql(true, "outbox", "not json {") + ";" +
                    message_sql(true, "outbox",
                                "{\"id\": \"" + uuid_of(101) + "\", \"aggregatetype\": \"type0\", \"type\": \"Msg\","
                                " \"payload\": {}}") + ";" +
                    message_sql(true, "outbox",
                                event_json(102, "k1", 999, ", \"headers\": {\"outbox-relay.seq\": \"1\"}")) + ";" +
                    message_sql(true, "outbox", event_json(103, "k1", next_seq["k1"]++)) + ";COMMIT;");
    // Non-transactional, in a transaction that rolls back: still an event.
    sc.admin().exec("BEGIN;" + message_sql(false, "outbox", event_json(104, "k0", next_seq["k0"]++)) +
                    ";INSERT INTO " + t + " (id, aggregatetype, aggregateid, type, payload, seq) VALUES ('" +
                    uuid_of(105) + "', 'type0', 'k0', 'Row', '{\"seq\": 9999}', 9999);ROLLBACK;");
    // Another prefix is not ours; then a last event on the same key.
    sc.admin().exec(message_sql(true, "other", event_json(106, "k0", 9998)));
    sc.admin().exec(message_sql(true, "outbox",
                                event_json(107, "k0", next_seq["k0"]++, ", \"headers\": {\"traceparent\": \"zz\"}")));

    INFO("relay log tail:\n" << relay.log_text(4000));
    const std::size_t expected = 50 + 1 + 1 + 1 + 1;  // 50, headers, k1 after the poison, non-txn, last
    auto recs = outbox::it::consume_all(env().brokers, sc.topic("type0"), expected, 60s);
    auto dead = outbox::it::consume_all(env().brokers, dlq, 3, 60s);
    REQUIRE(recs.size() == expected);
    REQUIRE(dead.size() == 3);

    // Per key, in partition order, seq is 0, 1, 2, ... with nothing missing.
    std::map<std::string, std::vector<long>> seqs;
    for (const auto& r : recs) {
        auto s = seq_of(r);
        REQUIRE_MESSAGE(s.has_value(), "record without seq: " << r.value.value_or("<null>"));
        seqs[r.key.value_or("?")].push_back(*s);
    }
    for (const auto& [key, list] : seqs) {
        CAPTURE(key);
        for (std::size_t i = 0; i < list.size(); ++i) CHECK(list[i] == static_cast<long>(i));
        CHECK(list.size() == static_cast<std::size_t>(next_seq[key]));
    }
    // Rows and messages both arrived, rows with type Row, messages with Msg.
    std::size_t rows = 0, msgs = 0;
    for (const auto& r : recs) (r.header("type") == std::optional<std::string>("Row") ? rows : msgs)++;
    CHECK(rows == 25);
    CHECK(msgs == expected - 25);
    const auto* with_headers = by_id(recs, uuid_of(100));
    REQUIRE(with_headers != nullptr);
    CHECK(with_headers->header("tenant") == std::optional<std::string>("t9"));
    CHECK(with_headers->value == std::optional<std::string>("{\"seq\":" + std::to_string(header_seq) + "}"));  // jsonb compact, as parsed
    CHECK(with_headers->header("traceparent") == std::optional<std::string>(traceparent));
    const auto* last = by_id(recs, uuid_of(107));
    REQUIRE(last != nullptr);
    CHECK(header_count(*last, "traceparent") == 0);  // not a W3C traceparent: left out, counted
    CHECK(relay_metric(relay, "outbox_relay_trace_context_dropped_total") == std::optional<double>(1));
    CHECK(relay_metric(relay, "outbox_relay_outbox_messages_total").value_or(0) >= 29);
    CHECK(by_id(recs, uuid_of(104)) != nullptr);       // non-transactional, rolled back around it
    CHECK(by_id(recs, uuid_of(105)) == nullptr);       // the rolled-back row
    CHECK(by_id(recs, uuid_of(106)) == nullptr);       // another prefix

    std::map<std::string, int> reasons;
    bool names_the_field = false;
    for (const auto& r : dead) {
        reasons[r.header("outbox-relay.dlq.reason").value_or("?")]++;
        if (r.header("outbox-relay.dlq.detail").value_or("").find("aggregateid") != std::string::npos)
            names_the_field = true;
        CHECK_FALSE(r.header("outbox-relay.dlq.detail").value_or("").empty());
        CHECK(r.header("outbox-relay.dlq.table") == std::optional<std::string>("message:outbox"));
    }
    // Not JSON; no aggregateid (the key); our own header name. A message is
    // refused as a whole: one reason, the detail says what is wrong.
    CHECK(reasons["bad_message"] == 3);
    CHECK(names_the_field);
    const auto wal = sc.current_wal();
    CHECK(wait_until(clock::now() + 30s, [&] { return sc.slot_info().confirmed_flush.value_or(0) >= wal; }));
    CHECK(relay.running());
}

// sql/05_emit_event.sql's function, as a user installs it, relays an event
// with its headers in order with the rows of its transaction.
TEST_CASE("41_emit_event_function_from_sql_file") {
    topic_cleanup topics;
    scenario sc("41_emit_event");
    topics.prefix = sc.prefix();
    std::ifstream f(std::string(OUTBOX_REPO_ROOT) + "/sql/05_emit_event.sql");
    REQUIRE(f.good());
    std::stringstream ddl;
    ddl << f.rdbuf();
    sc.admin().exec(ddl.str());
    auto& relay = sc.start_relay();
    sc.wait_streaming(relay);
    const auto id = sc.admin().query(
        "BEGIN;"
        "INSERT INTO " + sc.table() + " (id, aggregatetype, aggregateid, type, payload, seq) VALUES ('" + uuid_of(1) +
        "', 'type1', 'k', 'Row', '{\"seq\": 0}', 0);"
        "SELECT outbox.emit_event('type1', 'k', 'OrderPlaced', '{\"seq\": 1}', '{\"tenant\": \"acme\"}')::text;"
        "COMMIT;");
    (void)id;
    INFO("relay log tail:\n" << relay.log_text(3000));
    auto recs = outbox::it::consume_all(env().brokers, sc.topic("type1"), 2, 60s);
    REQUIRE(recs.size() == 2);
    CHECK(recs[0].header("type") == std::optional<std::string>("Row"));
    CHECK(recs[1].header("type") == std::optional<std::string>("OrderPlaced"));
    CHECK(recs[1].header("tenant") == std::optional<std::string>("acme"));
    CHECK(recs[1].value == std::optional<std::string>("{\"seq\":1}"));
    CHECK(recs[1].header("id").value_or("").size() == 36);  // the uuid the function made
}
