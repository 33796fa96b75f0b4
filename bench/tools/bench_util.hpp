#pragma once
// Helpers shared by the bench_tool subcommands: the wall clock every figure
// is taken on, librdkafka handles and admin calls, /proc sampling and
// percentiles. Benchmark support only: everything throws std::runtime_error
// with a message naming what it was doing; nothing here is used by the relay.
#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace outbox::bench {

// Microseconds since the Unix epoch on CLOCK_REALTIME: the clock Postgres'
// clock_timestamp() and Kafka's LogAppendTime use on this machine, so times
// taken by different processes compare directly.
std::int64_t now_us() noexcept;

// Sleeps until the CLOCK_REALTIME time `t_us` (returns at once if past).
void sleep_until_us(std::int64_t t_us) noexcept;

struct rk_deleter {
    void operator()(rd_kafka_t* rk) const noexcept { rd_kafka_destroy(rk); }
};
using rk_ptr = std::unique_ptr<rd_kafka_t, rk_deleter>;

// Creates a librdkafka handle of `type` with bootstrap.servers=`brokers` and
// `props` applied in order. `setup` (optional) may add callbacks to the conf.
rk_ptr make_handle(rd_kafka_type_t type, const std::string& brokers,
                   const std::vector<std::pair<std::string, std::string>>& props,
                   void (*setup)(rd_kafka_conf_t*, void*) = nullptr, void* setup_arg = nullptr);

// Creates `topics` (replication factor 1), each with `partitions` partitions
// and the topic configs `configs` (e.g. message.timestamp.type=LogAppendTime),
// and waits until the metadata lists a leader for every partition.
// TOPIC_ALREADY_EXISTS is an error: every figure wants a fresh topic.
void create_topics(const std::string& brokers, const std::vector<std::string>& topics, int partitions,
                   const std::map<std::string, std::string>& configs);

// Deletes every topic whose name starts with `prefix` (must be non-empty);
// returns how many.
int delete_topics_with_prefix(const std::string& brokers, const std::string& prefix);

// Partition count of `topic` (which must exist) from a metadata request on `rk`.
int partition_count(rd_kafka_t* rk, const std::string& topic);

// Low and high watermark of one partition; retries transient errors (a new
// partition's leader settling) for up to 15 s, then throws.
void watermarks(rd_kafka_t* rk, const std::string& topic, int partition, std::int64_t* lo, std::int64_t* hi);

// Sum of the high watermarks of every partition of `topics` (counts in `parts`).
std::int64_t sum_high_watermarks(rd_kafka_t* rk, const std::vector<std::string>& topics,
                                 const std::vector<int>& parts);

// One sample of a process from /proc: resident set now and peak (VmRSS,
// VmHWM, KiB) and CPU seconds used so far (utime+stime). nullopt once the
// process is gone.
struct proc_sample {
    std::int64_t rss_kib = 0;
    std::int64_t hwm_kib = 0;
    double cpu_s = 0;
};
std::optional<proc_sample> sample_process(int pid);

// Nearest-rank percentile (p in [0,100]) of `sorted`, which must be sorted
// ascending and non-empty.
double percentile(const std::vector<double>& sorted, double p);

// Text COPY format (psql \copy ... TO) field unescaping: \\ \t \n \r \b \f \v
// and \N (returned as nullopt).
std::optional<std::string> copy_unescape(const std::string& field);

}  // namespace outbox::bench
