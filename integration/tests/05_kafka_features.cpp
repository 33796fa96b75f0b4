// Test 05: Debian 12's librdkafka 2.0.2 keeps every producer feature the relay relies
// on against the stack's Kafka (CI: 3.9.1 and 4.x).
//
// librdkafka enables a feature only if the broker's ApiVersions overlap the exact old
// versions the feature is keyed on (librdkafka #4948). Kafka 4.0 removed many old
// versions (KIP-896): against 4.x, 2.0.2 disables MsgVer1 and ThrottleTime (Fetch
// v0-v3 are gone), and against 4.0.0 also BrokerBalancedConsumer (JoinGroup v0-v1,
// served again from 4.0.1/4.1.0, KAFKA-19444). The relay needs the idempotent producer
// (IdempotentProducer: InitProducerId v0), MsgVer2 (record headers) and lz4 (its
// default compression.type; without the LZ4 feature 2.0.2 silently sends
// uncompressed batches). This test starts a producer configured like the relay's with
// debug=feature,protocol,eos, produces through it, and asserts on what librdkafka
// logged, then reads the records back with the assign()-only consumer.
#include <doctest/doctest.h>
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace std::chrono_literals;
using outbox::it::consume_all;
using outbox::it::env_or_fail;
using outbox::it::unique_name;

namespace {

struct captured_log {
    std::mutex m;
    std::vector<std::string> lines;

    bool any(const std::string& needle) {
        std::lock_guard lk(m);
        return std::any_of(lines.begin(), lines.end(),
                           [&](const std::string& l) { return l.find(needle) != std::string::npos; });
    }
    std::vector<std::string> matching(const std::string& needle) {
        std::lock_guard lk(m);
        std::vector<std::string> out;
        for (const auto& l : lines)
            if (l.find(needle) != std::string::npos) out.push_back(l);
        return out;
    }
};

// librdkafka calls this from its own threads.
void on_log(const rd_kafka_t* rk, int level, const char* fac, const char* buf) {
    auto* log = static_cast<captured_log*>(rd_kafka_opaque(rk));
    std::lock_guard lk(log->m);
    log->lines.push_back(std::to_string(level) + " " + fac + " " + buf);
}

struct reports {
    std::mutex m;
    int ok = 0;
    std::vector<std::string> errors;
};

// The third argument is the handle's opaque (the log); each message carries its own.
void on_delivery(rd_kafka_t*, const rd_kafka_message_t* msg, void*) {
    auto* r = static_cast<reports*>(msg->_private);
    std::lock_guard lk(r->m);
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        ++r->ok;
    else
        r->errors.emplace_back(rd_kafka_err2str(msg->err));
}

}  // namespace

TEST_CASE("05_relay_producer_features_survive_the_brokers_api_versions") {
    const std::string brokers = env_or_fail("OUTBOX_TEST_BROKERS");
    const std::string kafka_version = env_or_fail("OUTBOX_TEST_KAFKA_VERSION");
    const std::string topic = unique_name("features");
    constexpr int n = 200;
    INFO("kafka " << kafka_version << " brokers " << brokers);

    captured_log log;
    reports dr;
    char err[512] = "";
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](const char* k, const char* v) {
        INFO(k << "=" << v << ": " << err);
        REQUIRE(rd_kafka_conf_set(conf, k, v, err, sizeof err) == RD_KAFKA_CONF_OK);
    };
    set("bootstrap.servers", brokers.c_str());
    // What the relay forces and defaults to (src/io/kafka_sink.cpp).
    set("enable.idempotence", "true");
    set("acks", "all");
    set("compression.type", "lz4");
    set("linger.ms", "5");
    // Bounded here, so a broken broker fails the test instead of hanging it.
    set("message.timeout.ms", "30000");
    set("debug", "feature,protocol,eos");
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_opaque(conf, &log);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    std::unique_ptr<rd_kafka_t, decltype(&rd_kafka_destroy)> rk{
        rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err), &rd_kafka_destroy};
    REQUIRE_MESSAGE(rk, err);
    for (int i = 0; i < n; ++i) {
        const std::string key = "agg-" + std::to_string(i % 17);
        const std::string value = R"({"i":)" + std::to_string(i) + R"(,"pad":"lz4 compresses this lz4 compresses this"})";
        const auto e = rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
                                         RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                                         RD_KAFKA_V_HEADER("id", key.data(), static_cast<ssize_t>(key.size())),
                                         RD_KAFKA_V_OPAQUE(&dr), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                         RD_KAFKA_V_END);
        REQUIRE_MESSAGE(e == RD_KAFKA_RESP_ERR_NO_ERROR, rd_kafka_err2str(e));
    }
    CHECK(rd_kafka_flush(rk.get(), 60000) == RD_KAFKA_RESP_ERR_NO_ERROR);
    {
        std::lock_guard lk(dr.m);
        INFO("first delivery errors: " << (dr.errors.empty() ? std::string("none") : dr.errors.front()));
        CHECK(dr.errors.empty());
        CHECK(dr.ok == n);
    }
    char fatal[512] = "";
    CHECK_MESSAGE(rd_kafka_fatal_error(rk.get(), fatal, sizeof fatal) == RD_KAFKA_RESP_ERR_NO_ERROR, fatal);

    const auto disabled = log.matching("Disabling feature");
    std::string disabled_text;
    for (const auto& l : disabled) disabled_text += l.substr(l.find("Disabling feature")) + "; ";
    MESSAGE("kafka " << kafka_version << ": librdkafka " << std::string(rd_kafka_version_str()) << " "
                     << (disabled.empty() ? std::string("disabled nothing") : disabled_text));

    // The log was captured and the feature check ran (otherwise the rest proves nothing).
    REQUIRE(log.any("Enabling feature IdempotentProducer"));
    CHECK_FALSE(log.any("Disabling feature IdempotentProducer"));
    CHECK_FALSE(log.any("Disabling feature MsgVer2"));
    CHECK_FALSE(log.any("Disabling feature LZ4"));
    // The idempotent producer really got a producer id from the cluster.
    CHECK(log.any("Acquired PID{"));
    // 2.0.2 falls back to uncompressed batches when the broker lacks the LZ4 feature.
    CHECK_FALSE(log.any("not compressing batch"));

    // Proof of which protocol generation the broker speaks: Kafka 4 no longer serves
    // Fetch v0-v3, so MsgVer1 (keyed on Fetch v2) is off; on 3.x it is on.
    if (kafka_version.rfind("4.", 0) == 0) {
        CHECK(log.any("Disabling feature MsgVer1"));
    } else {
        CHECK(log.any("Enabling feature MsgVer1"));
    }

    rk.reset();
    const auto records = consume_all(brokers, topic, n, 60s);
    CHECK(records.size() == static_cast<std::size_t>(n));
}
