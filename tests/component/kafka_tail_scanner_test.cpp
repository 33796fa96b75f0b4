// scan_topic_tail against librdkafka's in-process mock cluster: the exact set of
// positions >= from across partitions, records without (or with malformed)
// position headers, a refilled gap, the stop rule over several chunk rounds,
// empty and missing topics, and the deadline when every broker is down.
//
// Records are written by a plain idempotent producer with explicit partitions
// and the relay's header names, so each test decides what every partition holds.
// Expected sets are computed from the records the test produced.
#include "outbox_relay/io/kafka_tail_scanner.hpp"
#include "outbox_relay/outbox.hpp"

#include "kafka_test_checks.hpp"

#include <doctest/doctest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using outbox::lsn;
using outbox::record_position;
using outbox::io::scan_topic_tail;
using outbox::io::tail_scan_options;
using outbox::test::at;
using outbox::test::check_exact;
using outbox::test::count_without_position;
using outbox::test::expected_positions;
using outbox::test::headerless;
using outbox::test::malformed;
using outbox::test::produce_records;
using outbox::test::require_delivered;
using outbox::test::test_record;
using steady = std::chrono::steady_clock;

constexpr int32_t broker_count = 3;

// The shared mock cluster (the scanner and the test producer reach it over
// loopback like a real cluster) plus what these tests set up on it.
class mock_cluster : public outbox::test::mock_cluster {
public:
    mock_cluster() : outbox::test::mock_cluster(broker_count, "3") {}

    // Partitions led round-robin by all brokers, so the scan talks to each.
    void create_topic(const std::string& topic, int partitions) {
        REQUIRE(rd_kafka_mock_topic_create(get(), topic.c_str(), partitions, broker_count) ==
                RD_KAFKA_RESP_ERR_NO_ERROR);
        for (int32_t p = 0; p < partitions; ++p)
            REQUIRE(rd_kafka_mock_partition_set_leader(get(), topic.c_str(), p, p % broker_count + 1) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    void all_brokers_down() {
        for (int32_t b = 1; b <= broker_count; ++b)
            REQUIRE(rd_kafka_mock_broker_set_down(get(), b) == RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    void topic_error(const std::string& topic, rd_kafka_resp_err_t err) {
        rd_kafka_mock_topic_set_error(get(), topic.c_str(), err);
    }
};

std::string payload_value(const test_record& r) { return "payload-" + r.lsn_text + "-" + r.seq_text; }

// Produces `recs` in order (the idempotent producer keeps per-partition order)
// and waits until every one is acknowledged.
void produce(const std::string& brokers, const std::string& topic, const std::vector<test_record>& recs) {
    const auto out = produce_records(brokers, topic, recs,
                                     {.properties = {{"linger.ms", "1"}, {"log_level", "3"}},
                                      .id_header = "some-id",
                                      .value_of = payload_value,
                                      .flush_timeout_ms = 30000});
    require_delivered(out, recs.size());
}

constexpr std::uint64_t from_value = 0x10000;

// Four partitions: everything the scanner must handle, in one topic.
//  p0: older transactions, then the boundary transaction (commit == from), then newer
//  p1: records without headers and with malformed ones among positions >= from
//  p2: only transactions below from: contributes nothing
//  p3: a refilled gap: (T1, seq 1) failed while (T2, 0) succeeded, and the replay
//      appended it after T2
std::vector<test_record> four_partition_records() {
    const std::uint64_t old1 = from_value - 0x300, old2 = from_value - 0x100;
    const std::uint64_t t1 = from_value + 0x100, t2 = from_value + 0x200, t3 = from_value + 0x300;
    return {
        at(0, old1, 0), at(0, old1, 1), at(0, old2, 0),
        at(0, from_value, 0), at(0, from_value, 1), at(0, t1, 0), at(0, t3, 2),

        at(1, old2, 1), headerless(1), at(1, t1, 1), malformed(1, "not-an-lsn", "0"),
        malformed(1, lsn{t2}.to_string(), "99999999999"), headerless(1), at(1, t2, 1),

        at(2, old1, 2), at(2, old2, 2), at(2, old2, 3),

        at(3, old1, 3), at(3, t1, 2), at(3, t2, 0), at(3, t2, 2), at(3, t1, 3) /* refill */, at(3, t3, 0),
    };
}

tail_scan_options options_for(const mock_cluster& mc) {
    tail_scan_options o;
    o.brokers = mc.bootstraps();
    o.deadline = 30s;
    return o;
}

}  // namespace

TEST_CASE("tail_scan/exact_set_across_four_partitions") {
    mock_cluster mc;
    const std::string topic = "scan-four";
    mc.create_topic(topic, 4);
    const auto recs = four_partition_records();
    produce(mc.bootstraps(), topic, recs);

    const lsn from{from_value};
    const auto r = scan_topic_tail(options_for(mc), topic, from);

    CHECK(r.partitions == 4u);
    check_exact(r.present, expected_positions(recs, from));
    // One default-sized chunk covers every partition, so every record is read.
    CHECK(r.rounds == 1u);
    CHECK(r.records_read == recs.size());
    CHECK(r.records_without_position == count_without_position(recs));
    // The gap refilled after newer records is found, and the boundary (commit == from) is in.
    CHECK(r.present.contains(record_position{lsn{from_value + 0x100}, 3}));
    CHECK(r.present.contains(record_position{from, 0}));
    CHECK_FALSE(r.present.contains(record_position{lsn{from_value - 0x100}, 0}));
}

TEST_CASE("tail_scan/single_record_chunks_give_the_same_set") {
    // first_chunk = 1: partitions are read backwards over several rounds of
    // 1, 2, 4, ... records; the result must not depend on chunking.
    mock_cluster mc;
    const std::string topic = "scan-chunks";
    mc.create_topic(topic, 4);
    const auto recs = four_partition_records();
    produce(mc.bootstraps(), topic, recs);

    auto opts = options_for(mc);
    opts.first_chunk = 1;
    const lsn from{from_value};
    const auto r = scan_topic_tail(opts, topic, from);

    check_exact(r.present, expected_positions(recs, from));
    CHECK(r.rounds > 1u);
}

TEST_CASE("tail_scan/stops_after_chunk_below_from") {
    // 3000 old records then 10 new ones in one partition: the first chunk of
    // 1000 already holds records below from, so the older 2010 are never read.
    mock_cluster mc;
    const std::string topic = "scan-stop";
    mc.create_topic(topic, 1);
    std::vector<test_record> recs;
    const std::uint64_t old_count = 3000, new_count = 10;
    for (std::uint32_t i = 0; i < old_count; ++i) recs.push_back(at(0, from_value - old_count + i, 0));
    for (std::uint32_t i = 0; i < new_count; ++i) recs.push_back(at(0, from_value + i, 0));
    produce(mc.bootstraps(), topic, recs);

    auto opts = options_for(mc);
    opts.first_chunk = 1000;
    const auto r = scan_topic_tail(opts, topic, lsn{from_value});

    CHECK(r.rounds == 1u);
    CHECK(r.records_read == static_cast<std::size_t>(opts.first_chunk));
    check_exact(r.present, expected_positions(recs, lsn{from_value}));
}

TEST_CASE("tail_scan/reads_back_until_below_from_over_rounds") {
    // 50 records >= from on top of 20 older ones, chunks 4, 8, 16, 32: the
    // scan needs 4 rounds (4+8+16+32 = 60 >= 51) and must not stop early.
    mock_cluster mc;
    const std::string topic = "scan-rounds";
    mc.create_topic(topic, 1);
    std::vector<test_record> recs;
    for (std::uint32_t i = 0; i < 20; ++i) recs.push_back(at(0, from_value - 100 + i, i));
    for (std::uint32_t i = 0; i < 50; ++i) recs.push_back(at(0, from_value + i / 5, i % 5));
    produce(mc.bootstraps(), topic, recs);

    auto opts = options_for(mc);
    opts.first_chunk = 4;
    const auto r = scan_topic_tail(opts, topic, lsn{from_value});

    check_exact(r.present, expected_positions(recs, lsn{from_value}));
    CHECK(r.present.size() == 50u);
    CHECK(r.rounds == 4u);
    CHECK(r.records_read == 60u);  // the last chunk holds 10 older records
}

TEST_CASE("tail_scan/reads_to_log_start_when_nothing_is_below_from") {
    mock_cluster mc;
    const std::string topic = "scan-all-new";
    mc.create_topic(topic, 2);
    std::vector<test_record> recs;
    for (std::uint32_t i = 0; i < 37; ++i) recs.push_back(at(static_cast<int32_t>(i % 2), from_value + i, 0));
    produce(mc.bootstraps(), topic, recs);

    auto opts = options_for(mc);
    opts.first_chunk = 3;
    const auto r = scan_topic_tail(opts, topic, lsn{from_value});

    check_exact(r.present, expected_positions(recs, lsn{from_value}));
    CHECK(r.records_read == recs.size());
}

TEST_CASE("tail_scan/known_limit_refill_below_from_hides_older_positions") {
    // The documented limit: an older session's record at T (>= from) followed by
    // a refilled record below from. With one-record chunks the scan stops at the
    // refill and misses T, so the relay would produce T again: a duplicate, never
    // a loss. With the default chunk both are in one chunk and T is found.
    mock_cluster mc;
    const std::string topic = "scan-limit";
    mc.create_topic(topic, 1);
    const std::uint64_t t = from_value + 0x50;
    const std::vector<test_record> recs = {at(0, from_value - 0x20, 0), at(0, t, 0), at(0, from_value - 0x10, 0)};
    produce(mc.bootstraps(), topic, recs);

    auto tiny = options_for(mc);
    tiny.first_chunk = 1;
    const auto narrow = scan_topic_tail(tiny, topic, lsn{from_value});
    CHECK(narrow.rounds == 1u);
    CHECK_FALSE(narrow.present.contains(record_position{lsn{t}, 0}));

    const auto wide = scan_topic_tail(options_for(mc), topic, lsn{from_value});
    CHECK(wide.present.contains(record_position{lsn{t}, 0}));
    CHECK(wide.present.size() == 1u);
}

TEST_CASE("tail_scan/empty_topic_yields_empty_set") {
    mock_cluster mc;
    const std::string topic = "scan-empty";
    mc.create_topic(topic, 3);
    const auto r = scan_topic_tail(options_for(mc), topic, lsn{from_value});
    CHECK(r.partitions == 3u);
    CHECK(r.present.empty());
    CHECK(r.records_read == 0u);
    CHECK(r.rounds == 0u);
}

TEST_CASE("tail_scan/nonexistent_topic_yields_empty_result") {
    mock_cluster mc;
    mc.create_topic("some-other-topic", 1);
    // librdkafka 2.0.2's mock answers Metadata below v4, which has no
    // AllowAutoTopicCreation field, so it would auto-create any topic asked
    // about. Make it answer the way a real broker does for a missing topic
    // when the client (like the scanner) disallows auto-creation; the
    // integration test checks the real broker does not create it.
    mc.topic_error("scan-missing", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
    const auto r = scan_topic_tail(options_for(mc), "scan-missing", lsn{from_value});
    CHECK(r.partitions == 0u);
    CHECK(r.present.empty());
    CHECK(r.records_read == 0u);
}

TEST_CASE("tail_scan/producer_only_properties_are_not_passed_on") {
    // The relay hands over the producer's -X settings; a consumer would reject
    // acks/linger.ms, so the scanner must drop them and still work.
    mock_cluster mc;
    const std::string topic = "scan-props";
    mc.create_topic(topic, 1);
    const std::vector<test_record> recs = {at(0, from_value, 0)};
    produce(mc.bootstraps(), topic, recs);
    auto opts = options_for(mc);
    opts.properties = {{"acks", "all"}, {"linger.ms", "5"}, {"enable.idempotence", "true"},
                       {"client.id", "relay-under-test"}, {"socket.keepalive.enable", "true"}};
    const auto r = scan_topic_tail(opts, topic, lsn{from_value});
    check_exact(r.present, expected_positions(recs, lsn{from_value}));
}

TEST_CASE("tail_scan/bad_connection_property_names_it") {
    mock_cluster mc;
    auto opts = options_for(mc);
    opts.properties = {{"security.protocol", "carrier-pigeon"}};
    try {
        (void)scan_topic_tail(opts, "scan-bad-prop", lsn{from_value});
        FAIL("expected an exception");
    } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()).find("security.protocol") != std::string::npos);
    }
}

TEST_CASE("tail_scan/secret_property_value_not_in_error") {
    mock_cluster mc;
    auto opts = options_for(mc);
    // An unknown sasl.* name is rejected by librdkafka; its value must not leak.
    opts.properties = {{"sasl.nonexistent.password", "hunter2"}};
    try {
        (void)scan_topic_tail(opts, "scan-secret", lsn{from_value});
        FAIL("expected an exception");
    } catch (const std::runtime_error& e) {
        const std::string what = e.what();
        CHECK(what.find("sasl.nonexistent.password") != std::string::npos);
        CHECK(what.find("hunter2") == std::string::npos);
    }
}

TEST_CASE("tail_scan/deadline_honoured_when_all_brokers_down") {
    mock_cluster mc;
    const std::string topic = "scan-down";
    mc.create_topic(topic, 2);
    produce(mc.bootstraps(), topic, {at(0, from_value, 0), at(1, from_value, 1)});
    mc.all_brokers_down();

    auto opts = options_for(mc);
    opts.deadline = 2000ms;
    const auto t0 = steady::now();
    std::optional<std::string> error;
    try {
        (void)scan_topic_tail(opts, topic, lsn{from_value});
    } catch (const std::runtime_error& e) {
        error = e.what();
    }
    const auto took = steady::now() - t0;
    REQUIRE_MESSAGE(error.has_value(), "scan succeeded with every broker down");
    CHECK(error->find(topic) != std::string::npos);
    CHECK(took >= opts.deadline);
    // Slack covers closing and destroying the consumer.
    CHECK(took < opts.deadline + 2s);
    MESSAGE("threw after " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                           << " ms: " << *error);
}
