// tail_scan_bench: how long scan_topic_tail takes against a real broker.
//
//   build/bench/tail_scan_bench [brokers] [window_records] [wide_partitions] [repetitions]
//
// brokers defaults to $OUTBOX_TEST_BROKERS (eval "$(integration/stack.sh env)").
// Two scenarios, each on a fresh topic the bench creates and fills itself with an
// idempotent acks=all producer, headers set like the relay's (id, type,
// outbox-relay.commit-lsn, outbox-relay.seq), keys spread by the default
// partitioner:
//   replay  3 partitions: 10% older history (commit LSN < from), then a replay
//           window of `window_records` (default 100000) records >= from, in
//           transactions of 10 records.
//   wide    `wide_partitions` (default 200) partitions with 5 records each,
//           2 below from and 3 at/above it.
// Each scan runs `repetitions` times (default 3); the bench prints every run and
// the median, and whether the set found is complete. It prints, never asserts.
#include "outbox_relay/io/kafka_tail_scanner.hpp"
#include "outbox_relay/outbox.hpp"

#include "kafka_test_support.hpp"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;
using outbox::lsn;

using outbox::test::produce_raw;
using outbox::test::rk_ptr;

rk_ptr make_producer(const std::string& brokers, int* failed) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    for (auto [k, v] : {std::pair{"bootstrap.servers", brokers.c_str()}, {"enable.idempotence", "true"},
                        {"acks", "all"}, {"linger.ms", "5"}, {"compression.type", "lz4"}})
        if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK)
            throw std::runtime_error(std::string(k) + ": " + err);
    rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
        if (m->err) ++*static_cast<int*>(opaque);
    });
    rd_kafka_conf_set_opaque(conf, failed);
    rk_ptr rk{rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err)};
    if (!rk) throw std::runtime_error(err);
    return rk;
}

// Creates `topic` with `partitions` partitions (replication factor 1: the
// local stack has one broker) and waits for the answer.
void create_topic(const std::string& brokers, const std::string& topic, int partitions) {
    int failed = 0;
    rk_ptr rk = make_producer(brokers, &failed);
    char err[512];
    rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, err, sizeof err);
    if (!nt) throw std::runtime_error(err);
    rd_kafka_queue_t* q = rd_kafka_queue_new(rk.get());
    rd_kafka_CreateTopics(rk.get(), &nt, 1, nullptr, q);
    rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 60000);
    std::string error;
    if (!ev) {
        error = "CreateTopics timed out";
    } else if (rd_kafka_event_error(ev)) {
        error = rd_kafka_event_error_string(ev);
    } else {
        size_t n = 0;
        const rd_kafka_topic_result_t** res = rd_kafka_CreateTopics_result_topics(
            rd_kafka_event_CreateTopics_result(ev), &n);
        for (size_t i = 0; i < n; ++i)
            if (rd_kafka_topic_result_error(res[i])) error = rd_kafka_topic_result_error_string(res[i]);
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    if (!error.empty()) throw std::runtime_error("create topic " + topic + ": " + error);
}

// One relay-like record: keyed, JSON payload, the four headers.
void produce_one(rd_kafka_t* rk, const std::string& topic, std::int32_t partition, const std::string& key,
                 lsn commit, std::uint32_t seq, std::uint64_t n) {
    const std::string id = "evt-" + std::to_string(n);
    const std::string value = "{\"order\":" + std::to_string(n) +
                              ",\"status\":\"created\",\"lines\":[{\"sku\":\"A-1\",\"qty\":2},{\"sku\":\"B-7\","
                              "\"qty\":1}],\"note\":\"benchmark payload of a typical outbox event\"}";
    const std::string commit_text = commit.to_string();
    const std::string seq_text = std::to_string(seq);
    rd_kafka_headers_t* h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "id", -1, id.data(), static_cast<ssize_t>(id.size()));
    rd_kafka_header_add(h, "type", -1, "OrderCreated", -1);
    outbox::test::add_position_headers(h, commit_text, seq_text);
    for (;;) {
        const auto e = produce_raw(rk, topic, partition, &key, value, h);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) return;
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_headers_destroy(h);
            throw std::runtime_error(std::string("produce: ") + rd_kafka_err2str(e));
        }
        rd_kafka_poll(rk, 10);
    }
}

void flush_or_throw(rd_kafka_t* rk, const int& failed) {
    if (rd_kafka_flush(rk, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR) throw std::runtime_error("flush timed out");
    if (failed) throw std::runtime_error(std::to_string(failed) + " records failed");
}

std::string topic_name(const char* what) {
    return std::string("tail_scan_bench_") + what + "_" + std::to_string(::getpid()) + "_" +
           std::to_string(steady::now().time_since_epoch().count() % 1000000000);
}

void run_scans(const char* scenario, const std::string& brokers, const std::string& topic, lsn from,
               std::size_t expected, int reps, std::int64_t first_chunk) {
    std::vector<long> ms;
    for (int i = 0; i < reps; ++i) {
        outbox::io::tail_scan_options o;
        o.brokers = brokers;
        o.deadline = std::chrono::minutes(5);
        o.first_chunk = first_chunk;
        const auto r = outbox::io::scan_topic_tail(o, topic, from);
        ms.push_back(static_cast<long>(r.took.count()));
        std::printf("%s first_chunk=%lld run=%d took_ms=%ld partitions=%zu rounds=%zu records_read=%zu present=%zu "
                    "expected=%zu complete=%s records_per_s=%.0f\n",
                    scenario, static_cast<long long>(first_chunk), i + 1, ms.back(), r.partitions, r.rounds,
                    r.records_read, r.present.size(), expected, r.present.size() == expected ? "yes" : "NO",
                    r.took.count() ? 1000.0 * static_cast<double>(r.records_read) / static_cast<double>(r.took.count())
                                   : 0.0);
    }
    std::sort(ms.begin(), ms.end());
    std::printf("%s first_chunk=%lld median_ms=%ld min_ms=%ld max_ms=%ld\n", scenario,
                static_cast<long long>(first_chunk), ms[ms.size() / 2], ms.front(), ms.back());
}

}  // namespace

int main(int argc, char** argv) try {
    const char* env = std::getenv("OUTBOX_TEST_BROKERS");
    const std::string brokers = argc > 1 ? argv[1] : (env ? env : "");
    if (brokers.empty()) {
        std::fprintf(stderr, "usage: tail_scan_bench [brokers] [window_records] [wide_partitions] [repetitions]\n"
                             "       (or set OUTBOX_TEST_BROKERS: eval \"$(integration/stack.sh env)\")\n");
        return 2;
    }
    const std::uint64_t window = argc > 2 ? std::stoull(argv[2]) : 100000;
    const int wide = argc > 3 ? std::stoi(argv[3]) : 200;
    const int reps = argc > 4 ? std::stoi(argv[4]) : 3;
    const std::uint64_t from_value = 0x5000000000ull;
    constexpr std::uint32_t txn_size = 10;
    constexpr std::uint64_t txn_lsn_step = 0x2000;  // bytes of WAL per transaction, roughly

    {  // replay window on 3 partitions
        const std::string topic = topic_name("replay");
        create_topic(brokers, topic, 3);
        int failed = 0;
        rk_ptr rk = make_producer(brokers, &failed);
        const std::uint64_t history = window / 10;
        const auto t0 = steady::now();
        auto produce_range = [&](std::uint64_t first_txn_lsn, std::uint64_t count, std::uint64_t n0) {
            for (std::uint64_t i = 0; i < count; ++i) {
                const lsn commit{first_txn_lsn + (i / txn_size) * txn_lsn_step};
                const std::string key = "order-" + std::to_string((n0 + i) % 5000);
                produce_one(rk.get(), topic, RD_KAFKA_PARTITION_UA, key, commit,
                            static_cast<std::uint32_t>(i % txn_size), n0 + i);
            }
        };
        const std::uint64_t history_txns = (history + txn_size - 1) / txn_size;
        produce_range(from_value - history_txns * txn_lsn_step, history, 0);
        produce_range(from_value, window, history);
        flush_or_throw(rk.get(), failed);
        std::printf("replay setup topic=%s partitions=3 history_records=%llu window_records=%llu produce_ms=%lld\n",
                    topic.c_str(), static_cast<unsigned long long>(history), static_cast<unsigned long long>(window),
                    static_cast<long long>(
                        std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0).count()));
        run_scans("replay", brokers, topic, lsn{from_value}, window, reps, 1000);
        run_scans("replay", brokers, topic, lsn{from_value}, window, reps, 65536);
    }
    {  // many partitions, a few records each
        const std::string topic = topic_name("wide");
        create_topic(brokers, topic, wide);
        int failed = 0;
        rk_ptr rk = make_producer(brokers, &failed);
        std::uint64_t n = 0;
        for (int p = 0; p < wide; ++p) {
            // Appended rather than "k" + to_string(p): GCC 12 -O3 flags that with a false -Wrestrict.
            std::string key = "k";
            key += std::to_string(p);
            for (std::uint32_t k = 0; k < 5; ++k) {
                // Two older transactions, then three at/above from: LSNs grow per partition.
                const lsn commit{k < 2 ? from_value - (2 - k) * txn_lsn_step
                                       : from_value + static_cast<std::uint64_t>(p) * 3 * txn_lsn_step +
                                             (k - 2) * txn_lsn_step};
                produce_one(rk.get(), topic, p, key, commit, 0, n++);
            }
        }
        flush_or_throw(rk.get(), failed);
        std::printf("wide setup topic=%s partitions=%d records=%llu\n", topic.c_str(), wide,
                    static_cast<unsigned long long>(n));
        run_scans("wide", brokers, topic, lsn{from_value}, static_cast<std::size_t>(wide) * 3, reps, 1000);
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "tail_scan_bench: %s\n", e.what());
    return 1;
}
