// librdkafka statistics JSON -> the summary the metrics and /readyz use.
#include "outbox_relay/kafka_stats.hpp"

#include <doctest/doctest.h>

using namespace outbox;

TEST_SUITE("kafka_stats") {

// Shaped like librdkafka 2.0.2's output (STATISTICS.md), trimmed.
constexpr std::string_view sample = R"({
  "name": "outbox-relay#producer-1", "type": "producer", "msg_cnt": 12, "msg_size": 3400,
  "brokers": {
    "127.0.0.1:19092/bootstrap": {"name": "127.0.0.1:19092/bootstrap", "nodeid": -1, "source": "configured",
      "state": "INIT", "txretries": 1, "txerrs": 0, "rtt": {"avg": 0}},
    "127.0.0.1:19092/1": {"name": "127.0.0.1:19092/1", "nodeid": 1, "source": "learned", "state": "UP",
      "txretries": 3, "txerrs": 2, "rtt": {"min": 100, "avg": 2500, "max": 9000}},
    "127.0.0.1:19093/2": {"nodeid": 2, "source": "learned", "state": "UP", "txretries": 0, "rtt": {"avg": 1200}},
    "GroupCoordinator": {"nodeid": -1, "source": "logical", "state": "UP", "txretries": 50}
  }
})";

TEST_CASE("summarises_queue_brokers_rtt_and_retries") {
    auto s = parse_kafka_stats(sample);
    REQUIRE(s.has_value());
    CHECK(s->msg_cnt == 12);
    CHECK(s->msg_size == 3400);
    CHECK(s->brokers_known == 3);  // the logical coordinator is not a broker
    CHECK(s->brokers_up == 2);
    CHECK(s->rtt_avg_max_s == doctest::Approx(0.0025));
    CHECK(s->txretries == 4);
    CHECK(s->txerrs == 2);
}

TEST_CASE("all_brokers_down") {
    auto s = parse_kafka_stats(R"({"msg_cnt": 5, "brokers": {"a/1": {"source": "learned", "state": "TRY_CONNECT"}}})");
    REQUIRE(s.has_value());
    CHECK(s->brokers_known == 1);
    CHECK(s->brokers_up == 0);
    CHECK(s->rtt_avg_max_s == 0);
}

TEST_CASE("bad_documents_are_errors_missing_fields_are_zero") {
    CHECK_FALSE(parse_kafka_stats("not json").has_value());
    CHECK_FALSE(parse_kafka_stats("[1,2]").has_value());
    auto s = parse_kafka_stats("{}");
    REQUIRE(s.has_value());
    CHECK(s->msg_cnt == 0);
    CHECK(s->brokers_known == 0);
}

}  // TEST_SUITE
