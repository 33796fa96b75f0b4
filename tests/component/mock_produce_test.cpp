// What the relay relies on from librdkafka 2.0.2's idempotent producer, checked
// against its in-process mock cluster (rdkafka_mock.h) with injected broker errors:
// every message gets exactly one successful delivery report, lands in the topic
// exactly once, and each partition holds its messages in produce order
// (ARCHITECTURE.md invariant 3; PROTOCOL.md 5.1 and 5.3).
//
// The producer is used raw here (not through kafka_sink) on purpose: these tests pin
// the library's behaviour, so a failure tells "librdkafka/mock" apart from "our sink".
#include "kafka_test_support.hpp"

#include <doctest/doctest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int16_t api_produce = 0;  // ApiKey numbers: the RD_KAFKAP_* names are not installed
constexpr int32_t broker_count = 3;
constexpr int32_t partition_count = 6;
constexpr int message_count = 5000;
constexpr int key_count = 64;

std::string key_of(int seq) { return "key-" + std::to_string(seq % key_count); }

using outbox::test::rk_ptr;

rk_ptr make_client(rd_kafka_type_t type, const std::map<std::string, std::string>& props,
                   const std::function<void(rd_kafka_conf_t*)>& extra = {}) {
    char err[512] = "";
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    // Not a structured binding: clang 14 cannot capture one in doctest's lambdas.
    for (const auto& kv : props) {
        const bool ok =
            rd_kafka_conf_set(conf, kv.first.c_str(), kv.second.c_str(), err, sizeof err) == RD_KAFKA_CONF_OK;
        REQUIRE_MESSAGE(ok, kv.first << "=" << kv.second << ": " << err);
    }
    if (extra) extra(conf);
    rk_ptr rk{rd_kafka_new(type, conf, err, sizeof err)};
    REQUIRE_MESSAGE(rk, err);
    return rk;
}

// A 3-broker mock cluster (the shared one: the producer and consumer under test
// connect to it over loopback like to a real cluster) with one topic whose
// partitions are led round-robin by all brokers, so errors pushed on every
// broker's stack are all reached.
class mock_cluster : public outbox::test::mock_cluster {
public:
    explicit mock_cluster(const std::string& topic) : outbox::test::mock_cluster(broker_count, "3") {
        REQUIRE(rd_kafka_mock_topic_create(get(), topic.c_str(), partition_count, broker_count) ==
                RD_KAFKA_RESP_ERR_NO_ERROR);
        for (int32_t p = 0; p < partition_count; ++p) {
            REQUIRE(rd_kafka_mock_partition_set_leader(get(), topic.c_str(), p, p % broker_count + 1) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR);
        }
    }

    // Injected Produce errors not yet served by broker `id`.
    size_t pending_produce_errors(int32_t id) const {
        size_t cnt = 0;
        REQUIRE(rd_kafka_mock_broker_error_stack_cnt(get(), id, api_produce, &cnt) ==
                RD_KAFKA_RESP_ERR_NO_ERROR);
        return cnt;
    }
};

struct report {
    int count = 0;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    int32_t partition = -1;
    int64_t offset = -1;
};

struct delivery_log {
    std::vector<report> by_seq = std::vector<report>(message_count);
    int total = 0;
};

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* log = static_cast<delivery_log*>(opaque);
    const auto seq = reinterpret_cast<std::intptr_t>(m->_private);
    auto& r = log->by_seq.at(static_cast<size_t>(seq));
    ++r.count;
    ++log->total;
    r.err = m->err;
    r.partition = m->partition;
    r.offset = m->offset;
}

struct consumed {
    int32_t partition;
    int64_t offset;
    std::string key;
    int seq;
};

// Reads every partition of `topic` from the beginning with assign() until each
// partition reported EOF after at least `want` records arrived.
std::vector<consumed> consume_everything(const std::string& bootstraps, const std::string& topic, int want) {
    rk_ptr rk = make_client(RD_KAFKA_CONSUMER, {{"bootstrap.servers", bootstraps},
                                                {"group.id", "mock-produce-check"},
                                                {"enable.auto.commit", "false"},
                                                {"enable.partition.eof", "true"},
                                                {"log_level", "3"}});
    rd_kafka_poll_set_consumer(rk.get());
    rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(partition_count);
    for (int32_t p = 0; p < partition_count; ++p) {
        rd_kafka_topic_partition_list_add(parts, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    const auto assign_err = rd_kafka_assign(rk.get(), parts);
    rd_kafka_topic_partition_list_destroy(parts);
    REQUIRE(assign_err == RD_KAFKA_RESP_ERR_NO_ERROR);

    std::vector<consumed> out;
    std::vector<bool> at_end(partition_count, false);
    auto all_at_end = [&] {
        for (bool b : at_end) {
            if (!b) return false;
        }
        return true;
    };
    const auto deadline = steady::now() + 60s;
    while (!(static_cast<int>(out.size()) >= want && all_at_end())) {
        if (steady::now() >= deadline)
            FAIL("consumed " << out.size() << " of " << want << " before the deadline");
        rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 100);
        if (m == nullptr) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            at_end.at(static_cast<size_t>(m->partition)) = true;
        } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            at_end.at(static_cast<size_t>(m->partition)) = false;
            out.push_back({m->partition, m->offset, std::string(static_cast<const char*>(m->key), m->key_len),
                           std::stoi(std::string(static_cast<const char*>(m->payload), m->len))});
        } else {
            MESSAGE("consumer error: " << rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk.get());
    return out;
}

// Produces message_count keyed messages (value = sequence number) through an
// idempotent producer, calling `inject(phase)` before producing (phase 0) and after
// half of them were handed over, while batches are in flight (phase 1). Then checks
// delivery reports, topic contents and order.
void produce_and_verify(const std::string& topic, const std::function<void(mock_cluster&, int)>& inject) {
    mock_cluster mc(topic);
    delivery_log log;
    rk_ptr producer = make_client(RD_KAFKA_PRODUCER,
                                  {{"bootstrap.servers", mc.bootstraps()},
                                   {"enable.idempotence", "true"},
                                   {"acks", "all"},
                                   // Small batches: many Produce requests, so the injected
                                   // errors hit batches that have others in flight behind them.
                                   {"linger.ms", "2"},
                                   {"batch.num.messages", "50"},
                                   {"retry.backoff.ms", "10"},
                                   // Bounded so a stuck producer fails the test instead of hanging it.
                                   {"message.timeout.ms", "60000"},
                                   // The injected disconnects are expected; do not log each one.
                                   {"log.connection.close", "false"},
                                   {"log_level", "3"}},
                                  [&](rd_kafka_conf_t* conf) {
                                      rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
                                      rd_kafka_conf_set_opaque(conf, &log);
                                  });

    inject(mc, 0);
    for (int seq = 0; seq < message_count; ++seq) {
        if (seq == message_count / 2) inject(mc, 1);
        const std::string key = key_of(seq);
        const std::string value = std::to_string(seq);
        for (;;) {
            const auto err = rd_kafka_producev(
                producer.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
                RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::intptr_t>(seq))), RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                FAIL("produce seq=" << seq << ": " << rd_kafka_err2str(err));
            rd_kafka_poll(producer.get(), 10);  // backpressure: serve reports, then retry
        }
        rd_kafka_poll(producer.get(), 0);
    }
    const auto deadline = steady::now() + 90s;
    while (log.total < message_count && steady::now() < deadline) rd_kafka_poll(producer.get(), 100);

    char fatal[512] = "";
    const auto fatal_err = rd_kafka_fatal_error(producer.get(), fatal, sizeof fatal);
    CHECK_MESSAGE(fatal_err == RD_KAFKA_RESP_ERR_NO_ERROR, "fatal producer error: " << fatal);
    REQUIRE(log.total == message_count);

    // Every message: exactly one report, and it is a success.
    int failed = 0, repeated = 0;
    for (const auto& r : log.by_seq) {
        failed += r.err != RD_KAFKA_RESP_ERR_NO_ERROR;
        repeated += r.count != 1;
    }
    CHECK(failed == 0);
    CHECK(repeated == 0);

    // Every injected error was actually served (else this test proved nothing).
    for (int32_t b = 1; b <= broker_count; ++b) CHECK(mc.pending_produce_errors(b) == 0);

    // The topic holds every message exactly once, per partition in produce order.
    const auto records = consume_everything(mc.bootstraps(), topic, message_count);
    CHECK(records.size() == static_cast<size_t>(message_count));
    std::vector<int> seen(message_count, 0);
    std::map<int32_t, int> last_seq;               // partition -> last sequence read
    std::map<std::string, int32_t> key_partition;  // key -> partition
    int out_of_order = 0, wrong_key = 0, split_keys = 0, offset_mismatch = 0, foreign = 0;
    for (const auto& rec : records) {
        if (rec.seq < 0 || rec.seq >= message_count) {
            ++foreign;  // not a value this test produced
            continue;
        }
        ++seen[static_cast<size_t>(rec.seq)];
        auto [it, fresh] = last_seq.try_emplace(rec.partition, rec.seq);
        if (!fresh) {
            out_of_order += rec.seq <= it->second;
            it->second = rec.seq;
        }
        wrong_key += rec.key != key_of(rec.seq);
        auto [kp, new_key] = key_partition.try_emplace(rec.key, rec.partition);
        split_keys += !new_key && kp->second != rec.partition;
        const auto& r = log.by_seq[static_cast<size_t>(rec.seq)];
        // A retried message acked as DUPLICATE_SEQUENCE reports offset -1 (PROTOCOL.md 5.1).
        offset_mismatch += r.partition != rec.partition || (r.offset >= 0 && r.offset != rec.offset);
    }
    int missing = 0, duplicated = 0;
    for (int n : seen) {
        missing += n == 0;
        duplicated += n > 1;
    }
    CHECK(foreign == 0);
    CHECK(missing == 0);
    CHECK(duplicated == 0);
    CHECK(out_of_order == 0);
    CHECK(wrong_key == 0);
    CHECK(split_keys == 0);
    CHECK(offset_mismatch == 0);
    CHECK(last_seq.size() == static_cast<size_t>(partition_count));  // keys spread over all partitions
}

// Pushes the same error sequence on every broker's Produce stack.
void push_on_all_brokers(mock_cluster& mc, const std::vector<rd_kafka_resp_err_t>& errs) {
    for (int32_t b = 1; b <= broker_count; ++b) {
        for (auto e : errs) {
            REQUIRE(rd_kafka_mock_broker_push_request_error_rtts(mc.get(), b, api_produce, 1, e, 0) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR);
        }
    }
}

}  // namespace

TEST_CASE("mock_produce/retriable_produce_errors_deliver_all_once_in_order") {
    produce_and_verify("mock-retriable", [](mock_cluster& mc, int) {
        push_on_all_brokers(mc, {RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                 RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT});
    });
}

TEST_CASE("mock_produce/transport_disconnects_deliver_all_once_in_order") {
    produce_and_verify("mock-disconnect", [](mock_cluster& mc, int) {
        push_on_all_brokers(mc, {RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                                 RD_KAFKA_RESP_ERR__TRANSPORT});
    });
}
