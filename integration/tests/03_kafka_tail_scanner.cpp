// Scenario 03: the Kafka tail scanner against the real broker of the local stack.
//
// Arrange: a 3-partition topic holding records the way relay sessions leave them:
//   older transactions below `from`, the boundary transaction (commit == from),
//   newer ones, records without position headers or with malformed ones, and a
//   refilled gap (a record of an older transaction appended after newer ones).
// Act: scan_topic_tail(topic, from), once with the default chunk and once with
//   one-record chunks (several backward rounds on the real fetch path).
// Check: exactly the positions >= from that were produced; the headerless and
//   malformed records counted; an empty topic and a missing topic give an empty
//   set, and scanning a missing topic does not create it; an unreachable broker
//   makes the scan throw within its deadline.
//
// Needs OUTBOX_TEST_BROKERS and OUTBOX_STACK_SH (eval "$(integration/stack.sh env)").
#include <doctest/doctest.h>
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"
#include "kafka_test_checks.hpp"
#include "outbox_relay/io/kafka_tail_scanner.hpp"
#include "outbox_relay/outbox.hpp"

using namespace std::chrono_literals;
using outbox::lsn;
using outbox::record_position;
using outbox::io::scan_topic_tail;
using outbox::io::tail_scan_options;
using outbox::it::env_or_fail;
using outbox::it::unique_name;
using outbox::test::at;
using outbox::test::check_exact;
using outbox::test::count_without_position;
using outbox::test::expected_positions;
using outbox::test::headerless;
using outbox::test::malformed;
using outbox::test::produce_records;
using outbox::test::require_delivered;
using outbox::test::test_record;

namespace {

using steady = std::chrono::steady_clock;

// The produced value holds the commit LSN, like a relay payload would carry data.
std::string lsn_value(const test_record& r) { return "{\"lsn\":\"" + r.lsn_text + "\"}"; }

// Produces `recs` in order through an idempotent acks=all producer (per-partition
// order kept, like the relay's) and waits until every one is acknowledged.
void produce(const std::string& brokers, const std::string& topic, const std::vector<test_record>& recs) {
    const auto out = produce_records(brokers, topic, recs,
                                     {.properties = {{"acks", "all"}, {"linger.ms", "1"}},
                                      .id_header = "event-id",
                                      .value_of = lsn_value,
                                      .flush_timeout_ms = 60000});
    require_delivered(out, recs.size());
}

// LSNs in the range a real server uses, so X/X has both halves non-zero.
constexpr std::uint64_t from_value = 0x1A2B3C4D5Eull;

std::vector<test_record> three_partition_records() {
    const std::uint64_t old1 = from_value - 0x3000, old2 = from_value - 0x100;
    const std::uint64_t t1 = from_value + 0x100, t2 = from_value + 0x2000, t3 = from_value + 0x3000;
    std::vector<test_record> recs = {
        // p0: older transactions, the boundary one, newer ones
        at(0, old1, 0), at(0, old1, 1), at(0, old2, 0), at(0, from_value, 0), at(0, from_value, 1), at(0, t1, 0),
        at(0, t3, 2),
        // p1: headerless and malformed records among new positions
        at(1, old2, 1), headerless(1), at(1, t1, 1), malformed(1, "16/not-hex", "0"),
        malformed(1, lsn{t2}.to_string(), "-1"), headerless(1), at(1, t2, 1),
        // p2: a refilled gap: (t1, 2) failed while (t2, *) succeeded, the replay appended it after
        at(2, old1, 3), at(2, t2, 0), at(2, t2, 2), at(2, t1, 2), at(2, t3, 0),
    };
    // Plus enough older history in p0 that one-record chunks need several rounds.
    std::vector<test_record> history;
    for (std::uint32_t i = 0; i < 40; ++i) history.push_back(at(0, old1 - 0x1000 + i, 0));
    recs.insert(recs.begin(), history.begin(), history.end());
    return recs;
}

tail_scan_options options(const std::string& brokers) {
    tail_scan_options o;
    o.brokers = brokers;
    o.deadline = 60s;
    return o;
}

}  // namespace

TEST_CASE("tail_scanner/exact_set_on_three_partitions") {
    const std::string brokers = env_or_fail("OUTBOX_TEST_BROKERS");
    const std::string topic = unique_name("scan3");
    outbox::it::stack({"create-topic", topic, "3"});
    const auto recs = three_partition_records();
    produce(brokers, topic, recs);
    const lsn from{from_value};

    SUBCASE("default_chunk") {
        const auto r = scan_topic_tail(options(brokers), topic, from);
        CHECK(r.partitions == 3u);
        check_exact(r.present, expected_positions(recs, from));
        CHECK(r.rounds == 1u);
        CHECK(r.records_read == recs.size());
        CHECK(r.records_without_position == count_without_position(recs));
        CHECK(r.present.contains(record_position{lsn{from_value + 0x100}, 2}));  // the refill
        CHECK(r.present.contains(record_position{from, 0}));                      // the boundary
        MESSAGE("default chunk: took " << r.took.count() << " ms, read " << r.records_read);
    }
    SUBCASE("one_record_chunks") {
        auto opts = options(brokers);
        opts.first_chunk = 1;
        const auto r = scan_topic_tail(opts, topic, from);
        check_exact(r.present, expected_positions(recs, from));
        CHECK(r.rounds > 1u);
        // The stop rule left most of p0's older history unread.
        CHECK(r.records_read < recs.size());
        MESSAGE("1-record chunks: took " << r.took.count() << " ms, rounds " << r.rounds << ", read "
                                         << r.records_read << " of " << recs.size());
    }
}

TEST_CASE("tail_scanner/empty_topic") {
    const std::string brokers = env_or_fail("OUTBOX_TEST_BROKERS");
    const std::string topic = unique_name("scan3e");
    outbox::it::stack({"create-topic", topic, "3"});
    const auto r = scan_topic_tail(options(brokers), topic, lsn{from_value});
    CHECK(r.partitions == 3u);
    CHECK(r.present.empty());
    CHECK(r.records_read == 0u);
}

TEST_CASE("tail_scanner/missing_topic_is_empty_and_not_created") {
    const std::string brokers = env_or_fail("OUTBOX_TEST_BROKERS");
    const std::string topic = unique_name("scan3m");
    const auto first = scan_topic_tail(options(brokers), topic, lsn{from_value});
    CHECK(first.partitions == 0u);
    CHECK(first.present.empty());
    // Had the scan's metadata request auto-created the topic (the broker allows
    // it), the second scan would find its partitions.
    const auto second = scan_topic_tail(options(brokers), topic, lsn{from_value});
    CHECK(second.partitions == 0u);
}

TEST_CASE("tail_scanner/unreachable_broker_throws_within_deadline") {
    // A closed port on loopback rather than stopping the shared broker.
    auto opts = options("127.0.0.1:1");
    opts.deadline = 3000ms;
    const auto t0 = steady::now();
    std::optional<std::string> error;
    try {
        (void)scan_topic_tail(opts, "scan-unreachable", lsn{from_value});
    } catch (const std::runtime_error& e) {
        error = e.what();
    }
    const auto took = steady::now() - t0;
    REQUIRE_MESSAGE(error.has_value(), "scan succeeded against a closed port");
    CHECK(error->find("scan-unreachable") != std::string::npos);
    CHECK(took >= opts.deadline);
    CHECK(took < opts.deadline + 2s);
}
