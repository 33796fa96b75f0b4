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
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"
#include "outbox_relay/io/kafka_tail_scanner.hpp"
#include "outbox_relay/outbox.hpp"

using namespace std::chrono_literals;
using outbox::lsn;
using outbox::record_position;
using outbox::io::scan_topic_tail;
using outbox::io::tail_scan_options;
using outbox::it::env_or_fail;
using outbox::it::unique_name;

namespace {

using steady = std::chrono::steady_clock;

struct rk_destroy {
    void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using rk_ptr = std::unique_ptr<rd_kafka_t, rk_destroy>;

struct test_record {
    int32_t partition = 0;
    std::string lsn_text;
    std::string seq_text;
    bool no_headers = false;
};

test_record at(int32_t partition, std::uint64_t commit, std::uint32_t seq) {
    return {partition, lsn{commit}.to_string(), std::to_string(seq), false};
}
test_record headerless(int32_t partition) { return {partition, "", "", true}; }
test_record malformed(int32_t partition, std::string lsn_text, std::string seq_text) {
    return {partition, std::move(lsn_text), std::move(seq_text), false};
}

struct delivery_count {
    int ok = 0;
    int failed = 0;
};

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* c = static_cast<delivery_count*>(opaque);
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        ++c->ok;
    else
        ++c->failed;
}

// rd_kafka_produceva instead of the producev macros: those expand to a GNU
// statement expression that -Wpedantic (clang) flags. On success librdkafka
// owns `hdrs`; on failure the caller still does.
rd_kafka_resp_err_t produce_raw(rd_kafka_t* rk, const std::string& topic, int32_t partition, const std::string* key,
                                const std::string& value, rd_kafka_headers_t* hdrs) {
    std::vector<rd_kafka_vu_t> vus(5);
    vus[0].vtype = RD_KAFKA_VTYPE_TOPIC;
    vus[0].u.cstr = topic.c_str();
    vus[1].vtype = RD_KAFKA_VTYPE_PARTITION;
    vus[1].u.i32 = partition;
    vus[2].vtype = RD_KAFKA_VTYPE_VALUE;
    vus[2].u.mem = {const_cast<char*>(value.data()), value.size()};
    vus[3].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vus[3].u.i = RD_KAFKA_MSG_F_COPY;
    vus[4].vtype = RD_KAFKA_VTYPE_HEADERS;
    vus[4].u.headers = hdrs;
    if (key) {
        rd_kafka_vu_t k;
        k.vtype = RD_KAFKA_VTYPE_KEY;
        k.u.mem = {const_cast<char*>(key->data()), key->size()};
        vus.push_back(k);
    }
    rd_kafka_error_t* error = rd_kafka_produceva(rk, vus.data(), vus.size());
    if (!error) return RD_KAFKA_RESP_ERR_NO_ERROR;
    const rd_kafka_resp_err_t code = rd_kafka_error_code(error);
    rd_kafka_error_destroy(error);
    return code;
}

// Produces `recs` in order through an idempotent producer (per-partition order
// kept, like the relay's) and waits until every one is acknowledged.
void produce(const std::string& brokers, const std::string& topic, const std::vector<test_record>& recs) {
    char err[512];
    delivery_count count;
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    for (auto [k, v] : {std::pair{"bootstrap.servers", brokers.c_str()}, {"enable.idempotence", "true"},
                        {"acks", "all"}, {"linger.ms", "1"}})
        REQUIRE_MESSAGE(rd_kafka_conf_set(conf, k, v, err, sizeof err) == RD_KAFKA_CONF_OK, err);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &count);
    rk_ptr rk{rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err)};
    REQUIRE_MESSAGE(rk, err);
    for (const auto& r : recs) {
        const std::string value = "{\"lsn\":\"" + r.lsn_text + "\"}";
        rd_kafka_headers_t* hdrs = rd_kafka_headers_new(3);
        rd_kafka_header_add(hdrs, "id", -1, "event-id", -1);
        if (!r.no_headers) {
            rd_kafka_header_add(hdrs, outbox::header_commit_lsn.data(), -1, r.lsn_text.data(),
                                static_cast<ssize_t>(r.lsn_text.size()));
            rd_kafka_header_add(hdrs, outbox::header_seq.data(), -1, r.seq_text.data(),
                                static_cast<ssize_t>(r.seq_text.size()));
        }
        const auto e = produce_raw(rk.get(), topic, r.partition, nullptr, value, hdrs);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) rd_kafka_headers_destroy(hdrs);
        REQUIRE_MESSAGE(e == RD_KAFKA_RESP_ERR_NO_ERROR, rd_kafka_err2str(e));
    }
    REQUIRE(rd_kafka_flush(rk.get(), 60000) == RD_KAFKA_RESP_ERR_NO_ERROR);
    REQUIRE(count.failed == 0);
    REQUIRE(count.ok == static_cast<int>(recs.size()));
}

std::vector<record_position> expected_positions(const std::vector<test_record>& recs, lsn from) {
    std::vector<record_position> out;
    for (const auto& r : recs) {
        if (r.no_headers) continue;
        auto p = outbox::parse_position(r.lsn_text, r.seq_text);
        if (p && p->commit_lsn >= from) out.push_back(*p);
    }
    return out;
}

std::size_t count_without_position(const std::vector<test_record>& recs) {
    std::size_t n = 0;
    for (const auto& r : recs)
        if (r.no_headers || !outbox::parse_position(r.lsn_text, r.seq_text)) ++n;
    return n;
}

void check_exact(const outbox::position_set& present, const std::vector<record_position>& want) {
    outbox::position_set w;
    for (const auto& p : want) w.insert(p);
    CHECK(present.size() == w.size());
    for (const auto& p : want) {
        CAPTURE(p.commit_lsn.to_string());
        CAPTURE(p.seq);
        CHECK(present.contains(p));
    }
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
