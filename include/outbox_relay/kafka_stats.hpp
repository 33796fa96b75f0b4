#pragma once
// A summary of librdkafka's statistics JSON (statistics.interval.ms; the
// fields are documented in librdkafka's STATISTICS.md), parsed on the loop
// thread for the relay's metrics and readiness. Pure: the text comes in, the
// summary goes out.
#include "outbox_relay/errc.hpp"

#include <cstdint>
#include <string_view>

namespace outbox {

struct kafka_stats {
    std::int64_t msg_cnt = 0;      // messages in the producer's queues (queued + in flight)
    std::int64_t msg_size = 0;     // their bytes
    // Brokers the client knows from its configuration or from metadata
    // (source "configured" or "learned"; the "logical" coordinator handles
    // and "internal" ones are left out), and those in state UP.
    int brokers_known = 0;
    int brokers_up = 0;
    double rtt_avg_max_s = 0;      // the largest rtt.avg among UP brokers, seconds (0: no sample)
    std::int64_t txretries = 0;    // request retries, summed over brokers (since the producer was made)
    std::int64_t txerrs = 0;       // transmission errors, summed over brokers
};

// Parses one statistics document. errc::bad_value (with a message) when it
// is not JSON or not an object; missing fields count as 0.
result<kafka_stats> parse_kafka_stats(std::string_view json);

}  // namespace outbox
