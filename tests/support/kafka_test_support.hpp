#pragma once
// Kafka helpers shared by the tail-scanner tests (component and integration),
// the Kafka component tests, the mock-cluster fault scenario and tail_scan_bench.
// Plain librdkafka C API and no doctest: failures come back as values or as
// std::runtime_error, and each test asserts on them itself (the shared doctest
// assertions are in kafka_test_checks.hpp), so the bench can use the same code.
// Test/bench side only; every function runs on the caller's thread.
#include "outbox_relay/dedupe.hpp"
#include "outbox_relay/lsn.hpp"
#include "outbox_relay/outbox.hpp"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace outbox::test {

struct rk_destroy {
    void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
// An owned librdkafka client handle.
using rk_ptr = std::unique_ptr<rd_kafka_t, rk_destroy>;

// A mock cluster (rdkafka_mock.h) living inside a client handle of its own;
// other clients reach it over loopback through bootstraps(), like a real
// cluster. Must outlive every client using it. Throws std::runtime_error when
// the owning handle or the cluster cannot be created. `log_level` is the
// owning handle's: it warns that it has no bootstrap.servers, which is expected.
class mock_cluster {
public:
    explicit mock_cluster(int brokers, const char* log_level = "2") {
        char errstr[512];
        rd_kafka_conf_t* conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "log_level", log_level, errstr, sizeof errstr);
        owner_.reset(rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr));
        if (!owner_) {
            rd_kafka_conf_destroy(conf);  // rd_kafka_new takes conf over only on success
            throw std::runtime_error(std::string("mock cluster handle: ") + errstr);
        }
        mc_ = rd_kafka_mock_cluster_new(owner_.get(), brokers);
        if (!mc_) throw std::runtime_error("rd_kafka_mock_cluster_new failed");
        bootstraps_ = rd_kafka_mock_cluster_bootstraps(mc_);
    }
    ~mock_cluster() {
        // The cluster must go before the handle that owns it (owner_ is destroyed after this body).
        rd_kafka_mock_cluster_destroy(mc_);
    }
    mock_cluster(const mock_cluster&) = delete;
    mock_cluster& operator=(const mock_cluster&) = delete;

    // The cluster, for rd_kafka_mock_* calls; valid while *this lives.
    rd_kafka_mock_cluster_t* get() const { return mc_; }
    // Bootstrap servers ("127.0.0.1:port,...") for clients.
    const std::string& bootstraps() const { return bootstraps_; }

private:
    rk_ptr owner_;
    rd_kafka_mock_cluster_t* mc_ = nullptr;
    std::string bootstraps_;
};

// Produces one record with rd_kafka_produceva instead of the producev macros:
// those expand to a GNU statement expression that -Wpedantic (clang) flags.
// `key` may be null (no key). The value is copied. On success librdkafka owns
// `hdrs`; on failure the caller still does. Returns the produce error (e.g.
// __QUEUE_FULL), NO_ERROR when queued.
inline rd_kafka_resp_err_t produce_raw(rd_kafka_t* rk, const std::string& topic, int32_t partition,
                                       const std::string* key, const std::string& value, rd_kafka_headers_t* hdrs) {
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

// Adds the relay's two position headers (commit LSN as X/X, seq) to `hdrs`, as
// text so a test can write malformed values. The texts are copied.
inline void add_position_headers(rd_kafka_headers_t* hdrs, const std::string& lsn_text,
                                 const std::string& seq_text) {
    rd_kafka_header_add(hdrs, outbox::header_commit_lsn.data(), -1, lsn_text.data(),
                        static_cast<ssize_t>(lsn_text.size()));
    rd_kafka_header_add(hdrs, outbox::header_seq.data(), -1, seq_text.data(), static_cast<ssize_t>(seq_text.size()));
}

// One record a tail-scanner test produces: its partition and, unless
// `no_headers`, the two position headers as text (kept as text so malformed
// values can be written).
struct test_record {
    int32_t partition = 0;
    std::string lsn_text;
    std::string seq_text;
    bool no_headers = false;
};

// A well-formed record at (commit, seq).
inline test_record at(int32_t partition, std::uint64_t commit, std::uint32_t seq) {
    return {partition, lsn{commit}.to_string(), std::to_string(seq), false};
}
// A record without position headers.
inline test_record headerless(int32_t partition) { return {partition, "", "", true}; }
// A record whose position headers hold the given (bad) texts.
inline test_record malformed(int32_t partition, std::string lsn_text, std::string seq_text) {
    return {partition, std::move(lsn_text), std::move(seq_text), false};
}

// How produce_records went: `error` is empty when the producer was created and
// every record queued (else it names the first failure and nothing was
// flushed); `flush` is rd_kafka_flush's answer; ok/failed count delivery reports.
struct produce_outcome {
    std::string error;
    rd_kafka_resp_err_t flush = RD_KAFKA_RESP_ERR_NO_ERROR;
    int ok = 0;
    int failed = 0;
};

// What produce_records writes besides the position headers.
struct produce_settings {
    // Client properties besides bootstrap.servers and enable.idempotence=true.
    std::vector<std::pair<std::string, std::string>> properties;
    // The `id` header's value, the same on every record.
    std::string id_header = "event-id";
    // The record value for a test_record.
    std::string (*value_of)(const test_record&) = nullptr;
    int flush_timeout_ms = 60000;
};

// Produces `recs` in order through an idempotent producer with explicit
// partitions (per-partition order kept, like the relay's) and waits up to
// settings.flush_timeout_ms for every delivery report. Blocks the caller.
inline produce_outcome produce_records(const std::string& brokers, const std::string& topic,
                                       const std::vector<test_record>& recs, const produce_settings& settings);

namespace detail {
// produce_records' body. Delivery reports count into `out`, which therefore
// must outlive the producer: the producer is local here, `out` is the caller's.
inline void produce_records_into(produce_outcome& out, const std::string& brokers, const std::string& topic,
                                 const std::vector<test_record>& recs, const produce_settings& settings) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    std::vector<std::pair<std::string, std::string>> props = {{"bootstrap.servers", brokers},
                                                              {"enable.idempotence", "true"}};
    props.insert(props.end(), settings.properties.begin(), settings.properties.end());
    for (const auto& kv : props) {
        if (rd_kafka_conf_set(conf, kv.first.c_str(), kv.second.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            out.error = kv.first + ": " + err;
            return;
        }
    }
    rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
        auto* o = static_cast<produce_outcome*>(opaque);
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
            ++o->ok;
        else
            ++o->failed;
    });
    rd_kafka_conf_set_opaque(conf, &out);
    rk_ptr rk{rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err)};
    if (!rk) {
        rd_kafka_conf_destroy(conf);  // rd_kafka_new takes conf over only on success
        out.error = err;
        return;
    }
    for (std::size_t i = 0; i < recs.size(); ++i) {
        const test_record& r = recs[i];
        const std::string value = settings.value_of ? settings.value_of(r) : std::string();
        rd_kafka_headers_t* hdrs = rd_kafka_headers_new(3);
        rd_kafka_header_add(hdrs, "id", -1, settings.id_header.data(), static_cast<ssize_t>(settings.id_header.size()));
        if (!r.no_headers) add_position_headers(hdrs, r.lsn_text, r.seq_text);
        const auto e = produce_raw(rk.get(), topic, r.partition, nullptr, value, hdrs);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_headers_destroy(hdrs);  // not taken over on failure
            out.error = "record " + std::to_string(i) + ": " + rd_kafka_err2str(e);
            return;
        }
    }
    out.flush = rd_kafka_flush(rk.get(), settings.flush_timeout_ms);
}
}  // namespace detail

inline produce_outcome produce_records(const std::string& brokers, const std::string& topic,
                                       const std::vector<test_record>& recs, const produce_settings& settings) {
    produce_outcome out;
    detail::produce_records_into(out, brokers, topic, recs, settings);
    return out;
}

// Positions >= from among `recs` that carry well-formed headers.
inline std::vector<record_position> expected_positions(const std::vector<test_record>& recs, lsn from) {
    std::vector<record_position> out;
    for (const auto& r : recs) {
        if (r.no_headers) continue;
        auto p = outbox::parse_position(r.lsn_text, r.seq_text);
        if (p && p->commit_lsn >= from) out.push_back(*p);
    }
    return out;
}

// How many of `recs` carry no (or no well-formed) position.
inline std::size_t count_without_position(const std::vector<test_record>& recs) {
    std::size_t n = 0;
    for (const auto& r : recs)
        if (r.no_headers || !outbox::parse_position(r.lsn_text, r.seq_text)) ++n;
    return n;
}

}  // namespace outbox::test
