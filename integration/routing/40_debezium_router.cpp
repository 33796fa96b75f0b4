// Scenario 40: the relay as a drop-in for Debezium's Outbox Event Router.
// A table with Debezium's outbox columns, configured the way a Debezium user
// configures the router (route.by.field, route.topic.replacement, additional
// placements, tombstones), produces exactly the topic, key, value, headers
// and partition a consumer of the Debezium pipeline reads: 1,000 keys land on
// the partition the Java producer's murmur2 partitioner picks. A placement
// naming a column the table lacks is refused at start (error) or left out
// (ignore); the json envelope and a partition placement put fields and
// partitions where they are told.
#include "routing_support.hpp"

#include <doctest/doctest.h>

#include <map>
#include <set>

using namespace outbox::it::routing;

namespace {

// Debezium's documented outbox table, plus a tenant and a shard column.
void debezium_outbox(scenario& sc) {
    sc.admin().exec("DROP TABLE " + sc.table());
    sc.admin().exec("CREATE TABLE " + sc.table() +
                    " (id uuid PRIMARY KEY, aggregatetype varchar(255) NOT NULL, aggregateid varchar(255) NOT NULL,"
                    " type varchar(255) NOT NULL, payload jsonb, tenant text, shard int)");
}

std::string uuid_of(int i) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "00000000-0000-0000-0000-%012d", i);
    return buf;
}

}  // namespace

TEST_CASE("40_java_murmur2_matches_kafka_utils") {
    // Values of Kafka's own UtilsTest for Utils.murmur2.
    CHECK(static_cast<std::int32_t>(java_murmur2("21")) == -973932308);
    CHECK(static_cast<std::int32_t>(java_murmur2("foobar")) == -790332482);
    CHECK(static_cast<std::int32_t>(java_murmur2("a-little-bit-long-string")) == -985981536);
    CHECK(static_cast<std::int32_t>(java_murmur2("abc")) == 479470107);
}

TEST_CASE("40_debezium_router_topic_key_value_headers_partitions") {
    topic_cleanup topics;
    scenario sc("40_debezium_router");
    topics.prefix = sc.prefix();
    debezium_outbox(sc);
    const std::string order_topic = sc.prefix() + ".outbox.order";
    const int partitions = 6;
    create_topic_with_config(env().brokers, order_topic, partitions, {});

    // route.by.field=aggregatetype, route.topic.replacement=<prefix>.outbox.${routedByValue},
    // table.fields.additional.placement=type:header:eventType,tenant:header,
    // route.tombstone.on.empty.payload=true.
    auto& relay = sc.start_relay_with(
        "relay", base_args(sc, {"--table", sc.table(), "--route-by", "aggregatetype", "--topic",
                                sc.prefix() + ".outbox.${routedByValue}", "--placement",
                                "type:header:eventType,tenant:header", "--tombstone-on-empty-payload", "true"}));
    sc.wait_streaming(relay);

    const std::string t = sc.table();
    // 1,000 orders with distinct keys, in transactions of 100.
    for (int b = 0; b < 10; ++b) {
        std::string sql = "INSERT INTO " + t + " (id, aggregatetype, aggregateid, type, payload, tenant) VALUES ";
        for (int j = 0; j < 100; ++j) {
            const int i = b * 100 + j;
            sql += std::string(j ? "," : "") + "('" + uuid_of(i) + "', 'order', 'order-" + std::to_string(i) +
                   "', 'OrderCreated', '{\"n\": " + std::to_string(i) + ", \"s\": \"x y\"}', 'acme')";
        }
        sc.admin().exec(sql);
    }
    // A NULL tenant (a null header), a NULL payload (a tombstone), another
    // aggregate type (another topic, created by the broker).
    sc.admin().exec("INSERT INTO " + t + " (id, aggregatetype, aggregateid, type, payload, tenant) VALUES ('" +
                    uuid_of(2000) + "', 'order', 'order-x', 'OrderNoted', '{\"note\": 1}', NULL)");
    sc.admin().exec("INSERT INTO " + t + " (id, aggregatetype, aggregateid, type, payload, tenant) VALUES ('" +
                    uuid_of(2001) + "', 'order', 'order-x', 'OrderDeleted', NULL, 'acme')");
    sc.admin().exec("INSERT INTO " + t + " (id, aggregatetype, aggregateid, type, payload, tenant) VALUES ('" +
                    uuid_of(2002) + "', 'customer', 'c-1', 'CustomerCreated', '{\"c\": 1}', 'acme')");

    INFO("relay log tail:\n" << relay.log_text(3000));
    auto orders = outbox::it::consume_all(env().brokers, order_topic, 1002, 60s);
    auto customers = outbox::it::consume_all(env().brokers, sc.prefix() + ".outbox.customer", 1, 60s);
    REQUIRE(orders.size() == 1002);
    REQUIRE(customers.size() == 1);

    std::size_t wrong_partition = 0, wrong_value = 0;
    std::set<int> partitions_used;
    for (int i = 0; i < 1000; ++i) {
        const auto* r = by_id(orders, uuid_of(i));
        REQUIRE_MESSAGE(r != nullptr, "event " << uuid_of(i) << " missing");
        const std::string key = "order-" + std::to_string(i);
        REQUIRE(r->key == std::optional<std::string>(key));
        // The value is the payload as Postgres prints the jsonb: what
        // Debezium's StringConverter hands a consumer.
        if (r->value != std::optional<std::string>("{\"n\": " + std::to_string(i) + ", \"s\": \"x y\"}")) ++wrong_value;
        if (r->partition != java_partition(key, partitions)) ++wrong_partition;
        partitions_used.insert(r->partition);
        CHECK(r->header("eventType") == std::optional<std::string>("OrderCreated"));
        CHECK(r->header("tenant") == std::optional<std::string>("acme"));
        CHECK(header_count(*r, "id") == 1);
        CHECK(header_count(*r, "type") == 0);  // the placement replaced the default type:header
    }
    MESSAGE("40_debezium_router records=" << orders.size() << " wrong_partition=" << wrong_partition
                                          << " partitions_used=" << partitions_used.size());
    CHECK(wrong_value == 0);
    CHECK(wrong_partition == 0);
    CHECK(partitions_used.size() == static_cast<std::size_t>(partitions));

    const auto* noted = by_id(orders, uuid_of(2000));
    REQUIRE(noted != nullptr);
    CHECK(has_null_header(*noted, "tenant"));
    CHECK(noted->value == std::optional<std::string>("{\"note\": 1}"));
    const auto* deleted = by_id(orders, uuid_of(2001));
    REQUIRE(deleted != nullptr);
    CHECK_FALSE(deleted->value.has_value());  // the tombstone
    CHECK(deleted->key == std::optional<std::string>("order-x"));
    CHECK(deleted->partition == noted->partition);  // one key, one partition
    CHECK(deleted->header("eventType") == std::optional<std::string>("OrderDeleted"));
    CHECK(customers[0].key == std::optional<std::string>("c-1"));
    CHECK(customers[0].header("id") == std::optional<std::string>(uuid_of(2002)));
    CHECK(relay.running());
}

TEST_CASE("40_json_envelope_and_partition_placement") {
    topic_cleanup topics;
    scenario sc("40_envelope");
    topics.prefix = sc.prefix();
    debezium_outbox(sc);
    const std::string topic = sc.prefix() + ".all";  // no placeholder: one topic
    create_topic_with_config(env().brokers, topic, 4, {});
    auto& relay = sc.start_relay_with(
        "relay", base_args(sc, {"--table", sc.table(), "--topic", topic, "--envelope", "json", "--placement",
                                "type:envelope:eventType,tenant:envelope,shard:partition,aggregatetype:header"}));
    sc.wait_streaming(relay);
    for (int i = 0; i < 8; ++i)
        sc.admin().exec("INSERT INTO " + sc.table() + " (id, aggregatetype, aggregateid, type, payload, tenant, shard) "
                        "VALUES ('" + uuid_of(i) + "', 'order', 'k" + std::to_string(i) + "', 'T" +
                        std::to_string(i) + "', '{\"i\": " + std::to_string(i) + "}', " +
                        (i == 3 ? std::string("NULL") : "'acme'") + ", " + std::to_string(i % 4) + ")");
    INFO("relay log tail:\n" << relay.log_text(3000));
    auto recs = outbox::it::consume_all(env().brokers, topic, 8, 60s);
    REQUIRE(recs.size() == 8);
    for (int i = 0; i < 8; ++i) {
        const auto* r = by_id(recs, uuid_of(i));
        REQUIRE(r != nullptr);
        CAPTURE(i);
        CHECK(r->partition == i % 4);
        const std::string tenant = i == 3 ? "null" : "\"acme\"";
        CHECK(r->value == std::optional<std::string>("{\"payload\":{\"i\": " + std::to_string(i) +
                                                      "},\"eventType\":\"T" + std::to_string(i) +
                                                      "\",\"tenant\":" + tenant + "}"));
        CHECK(r->header("aggregatetype") == std::optional<std::string>("order"));
    }
    CHECK(relay.running());
}

TEST_CASE("40_placement_of_a_missing_column_error_refuses_ignore_leaves_out") {
    topic_cleanup topics;
    scenario sc("40_missing");
    topics.prefix = sc.prefix();
    debezium_outbox(sc);
    const std::string topic = sc.prefix() + ".t";
    std::vector<std::string> route{"--table", sc.table(), "--topic", topic, "--placement",
                                   "type:header:eventType,region:header"};
    // table.field.additional.missing=error (the default): a clear stop
    // naming the column, before anything is read.
    auto& refused = sc.start_relay_with("refused", base_args(sc, route));
    auto st = refused.wait_exit(clock::now() + 60s);
    REQUIRE(st.has_value());
    const auto log = refused.log_text();
    INFO(log);
    CHECK(st->code == std::optional<int>(14));
    CHECK(log.find("has no column") != std::string::npos);
    CHECK(log.find("region") != std::string::npos);
    CHECK_FALSE(sc.slot_info().exists);  // a refused start leaves no slot holding WAL

    // ignore: delivered without the header.
    route.insert(route.end(), {"--additional-missing", "ignore"});
    auto& relay = sc.start_relay_with("relay", base_args(sc, route));
    sc.wait_streaming(relay);
    sc.admin().exec("INSERT INTO " + sc.table() + " (id, aggregatetype, aggregateid, type, payload) VALUES ('" +
                    uuid_of(1) + "', 'order', 'k1', 'T', '{}')");
    auto recs = outbox::it::consume_all(env().brokers, topic, 1, 60s);
    REQUIRE(recs.size() == 1);
    CHECK(recs[0].header("eventType") == std::optional<std::string>("T"));
    CHECK(header_count(recs[0], "region") == 0);
}

// route.topic.replacement that is only a column: the column holds the topic.
TEST_CASE("40_topic_from_a_column") {
    topic_cleanup topics;
    scenario sc("40_topic_column");
    topics.prefix = sc.prefix();
    sc.admin().exec("ALTER TABLE " + sc.table() + " ADD COLUMN dest text");
    auto& relay = sc.start_relay_with("relay", base_args(sc, {"--table", sc.table(), "--topic", "{dest}"}));
    sc.wait_streaming(relay);
    for (int i = 0; i < 4; ++i)
        sc.admin().exec("INSERT INTO " + sc.table() + " (id, aggregatetype, aggregateid, type, payload, seq, dest) "
                        "VALUES ('" + uuid_of(i) + "', 'ignored', 'k', 'T', '{}', " + std::to_string(i) + ", '" +
                        sc.prefix() + (i % 2 ? ".odd" : ".even") + "')");
    INFO("relay log tail:\n" << relay.log_text(3000));
    auto even = outbox::it::consume_all(env().brokers, sc.prefix() + ".even", 2, 60s);
    auto odd = outbox::it::consume_all(env().brokers, sc.prefix() + ".odd", 2, 60s);
    REQUIRE(even.size() == 2);
    REQUIRE(odd.size() == 2);
    CHECK(even[0].header("id") == std::optional<std::string>(uuid_of(0)));
    CHECK(even[1].header("id") == std::optional<std::string>(uuid_of(2)));
    CHECK(odd[0].header("id") == std::optional<std::string>(uuid_of(1)));
    CHECK(odd[1].header("id") == std::optional<std::string>(uuid_of(3)));
}
