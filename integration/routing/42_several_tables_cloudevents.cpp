// Scenario 42: two outbox tables with different mappings in one relay (the
// JSON config's "tables"), written in one transaction, and the second one
// sent as CloudEvents 1.0 in the Kafka binding's binary mode. Each row goes
// to its own table's topic with its own columns; the CloudEvents record is
// checked attribute by attribute (ce_specversion, ce_id, ce_source, ce_type,
// ce_time within the commit's clock window, ce_subject, content-type) and its
// value is the payload column's bytes.
#include "routing_support.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <regex>

using namespace outbox::it::routing;

TEST_CASE("42_several_tables_cloudevents") {
    topic_cleanup topics;
    scenario sc("42_several_tables");
    topics.prefix = sc.prefix();
    const std::string a = sc.table();               // the scenario's outbox: Debezium's columns
    const std::string b = sc.table() + "_orders";   // a table of its own design
    sc.admin().exec("DROP TABLE IF EXISTS " + b);
    sc.admin().exec("CREATE TABLE " + b + " (event_id text PRIMARY KEY, stream text, kind text, body text)");
    struct drop_b {
        scenario& sc;
        std::string b;
        ~drop_b() {
            try {
                sc.admin().exec("DROP TABLE IF EXISTS " + b);
            } catch (...) {
            }
        }
    } dropper{sc, b};

    const std::string topic_a = sc.prefix() + ".a.type0";
    const std::string topic_b = sc.prefix() + ".orders";
    const auto cfg_path = std::filesystem::path(OUTBOX_BUILD_DIR) / (sc.prefix() + "-config.json");
    {
        std::ofstream f(cfg_path);
        f << R"({
  "topic": ")" << sc.prefix() << R"(.a.{aggregatetype}",
  "message-prefix": "",
  "tables": [
    {"table": ")" << a << R"("},
    {"table": ")" << b << R"(", "topic": ")" << topic_b << R"(",
     "id-column": "event_id", "key-column": "stream", "type-column": "kind", "payload-column": "body",
     "placement": "", "envelope": "cloudevents", "ce-source": "/shop/orders"}
  ]
})";
    }
    auto& relay = sc.start_relay_with("relay", base_args(sc, {"--config", cfg_path.string()}));
    sc.wait_streaming(relay);
    // Both tables are in the publication the relay made.
    CHECK(sc.admin().scalar("SELECT count(*)::text FROM pg_publication_tables WHERE pubname = '" + sc.publication() +
                            "'") == std::optional<std::string>("2"));

    const char* utc_now = "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
    const std::string before = *sc.admin().scalar(utc_now);
    std::string sql = "BEGIN;";
    for (int i = 0; i < 10; ++i) {
        sql += "INSERT INTO " + a + " (id, aggregatetype, aggregateid, type, payload, seq) VALUES (gen_random_uuid(),"
               " 'type0', 'agg-" + std::to_string(i % 3) + "', 'Created', '{\"i\": " + std::to_string(i) + "}', " +
               std::to_string(i) + ");";
        sql += "INSERT INTO " + b + " (event_id, stream, kind, body) VALUES ('evt-" + std::to_string(i) +
               "', 'order-" + std::to_string(i % 3) + "', 'com.shop.order.placed', 'order " + std::to_string(i) +
               " placed');";
    }
    sc.admin().exec(sql + "COMMIT;");
    const std::string after = *sc.admin().scalar(utc_now);

    INFO("relay log tail:\n" << relay.log_text(3000));
    auto recs_a = outbox::it::consume_all(env().brokers, topic_a, 10, 60s);
    auto recs_b = outbox::it::consume_all(env().brokers, topic_b, 10, 60s);
    REQUIRE(recs_a.size() == 10);
    REQUIRE(recs_b.size() == 10);
    for (const auto& r : recs_a) {
        CHECK(r.header("type") == std::optional<std::string>("Created"));
        CHECK(r.key.value_or("").starts_with("agg-"));
        CHECK(r.header("ce_specversion") == std::nullopt);
        CHECK(r.value.value_or("").starts_with("{\"i\": "));
    }
    const std::regex rfc3339(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)");
    std::string first_time;
    for (int i = 0; i < 10; ++i) {
        const auto* r = by_id(recs_b, "evt-" + std::to_string(i));
        REQUIRE_MESSAGE(r != nullptr, "evt-" << i << " missing");
        CAPTURE(i);
        CHECK(r->key == std::optional<std::string>("order-" + std::to_string(i % 3)));
        CHECK(r->value == std::optional<std::string>("order " + std::to_string(i) + " placed"));
        CHECK(r->header("ce_specversion") == std::optional<std::string>("1.0"));
        CHECK(r->header("ce_id") == std::optional<std::string>("evt-" + std::to_string(i)));
        CHECK(r->header("ce_source") == std::optional<std::string>("/shop/orders"));
        CHECK(r->header("ce_type") == std::optional<std::string>("com.shop.order.placed"));
        CHECK(r->header("ce_subject") == std::optional<std::string>("order-" + std::to_string(i % 3)));
        CHECK(r->header("content-type") == std::optional<std::string>("text/plain; charset=utf-8"));
        const std::string time = r->header("ce_time").value_or("");
        CHECK(std::regex_match(time, rfc3339));
        // The commit time: between the clock before the transaction and after it.
        CHECK(time >= before);
        CHECK(time <= after);
        if (first_time.empty()) first_time = time;
        CHECK(time == first_time);  // one transaction, one commit time
        CHECK(header_count(*r, "kind") == 0);  // "placement": "" means no type header
    }
    MESSAGE("42_several_tables a=" << recs_a.size() << " b=" << recs_b.size() << " ce_time=" << first_time
                                   << " window=[" << before << ", " << after << "]");
    CHECK(relay.running());
    std::filesystem::remove(cfg_path);
}
