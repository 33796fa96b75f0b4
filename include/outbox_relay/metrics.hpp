#pragma once
// Metrics for the relay: counters, gauges and fixed-bucket histograms, and
// their rendering in the Prometheus text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/).
//
// Single-threaded by design: every metric is updated and rendered on the
// relay's loop thread, so there are no atomics and no locks. References
// returned by the registry stay valid for the registry's lifetime (metrics
// live in stable heap nodes).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace outbox {

// Content-Type of render()'s output for an HTTP /metrics answer.
inline constexpr std::string_view prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";

using metric_labels = std::vector<std::pair<std::string, std::string>>;

// Monotonic count. Loop thread only.
class counter {
public:
    void inc(std::uint64_t n = 1) noexcept { value_ += n; }
    std::uint64_t value() const noexcept { return value_; }

private:
    std::uint64_t value_ = 0;
};

// Value that goes up and down. Loop thread only.
class gauge {
public:
    void set(double v) noexcept { value_ = v; }
    void inc(double d = 1) noexcept { value_ += d; }
    void dec(double d = 1) noexcept { value_ -= d; }
    double value() const noexcept { return value_; }

private:
    double value_ = 0;
};

// Distribution over fixed upper bounds (Prometheus "le" buckets; +Inf is
// implicit). Loop thread only.
class histogram {
public:
    // `bounds` must be strictly increasing and finite (checked by the
    // registry, which aborts on a violation: it is a programming error).
    explicit histogram(std::vector<double> bounds);

    // Records one observation: O(number of buckets), no allocation. NaN is
    // ignored (it would poison the sum forever).
    void observe(double v) noexcept;

    const std::vector<double>& bounds() const noexcept { return bounds_; }
    // Non-cumulative count per bound; the last element counts v > every bound.
    const std::vector<std::uint64_t>& bucket_counts() const noexcept { return counts_; }
    std::uint64_t count() const noexcept { return count_; }
    double sum() const noexcept { return sum_; }

private:
    std::vector<double> bounds_;
    std::vector<std::uint64_t> counts_;
    std::uint64_t count_ = 0;
    double sum_ = 0;
};

// A set of metric families rendered together. Registration happens at
// start-up; families render in registration order, series of one family in
// the order they were added. A name registered again with the same type
// adds a series (new label values) to the existing family; registering the
// same name and labels twice returns the existing metric. Names and label
// names must be valid Prometheus names; a misuse (bad name, type clash)
// aborts, since it can only be a programming error. Loop thread only.
class metrics_registry {
public:
    metrics_registry();
    metrics_registry(const metrics_registry&) = delete;
    metrics_registry& operator=(const metrics_registry&) = delete;
    metrics_registry(metrics_registry&&) noexcept;
    metrics_registry& operator=(metrics_registry&&) noexcept;
    ~metrics_registry();

    counter& add_counter(std::string_view name, std::string_view help, metric_labels labels = {});
    gauge& add_gauge(std::string_view name, std::string_view help, metric_labels labels = {});
    histogram& add_histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                             metric_labels labels = {});

    // Appends the exposition text of every family to `out`.
    void render(std::string& out) const;
    std::string render() const;

private:
    struct family;
    family& family_for(std::string_view name, std::string_view help, int type);
    std::vector<std::unique_ptr<family>> families_;
};

// Commit -> ack latency buckets in seconds: 0.5 ms to 10 s.
inline constexpr double commit_to_ack_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};

// Seconds from a Postgres commit timestamp (µs since 2000-01-01 UTC, as in
// Begin/Commit) to `now_unix_us` (µs since 1970-01-01 UTC). Clock skew
// between the hosts can make it negative; it is clamped to 0.
double seconds_since_pg_commit(std::int64_t commit_ts_pg_us, std::int64_t now_unix_us) noexcept;

// The relay's metrics, registered once with their help text. Construct in
// place (not copyable or movable: the members refer into `registry`).
struct relay_metrics {
    relay_metrics();
    relay_metrics(const relay_metrics&) = delete;
    relay_metrics& operator=(const relay_metrics&) = delete;

    metrics_registry registry;

    counter& records_produced;     // outbox_relay_records_produced_total
    counter& records_acked;        // outbox_relay_records_acked_total
    counter& records_failed;       // outbox_relay_records_failed_total
    counter& duplicates_skipped;   // outbox_relay_duplicates_skipped_total
    // outbox_relay_changes_ignored_total{kind=...}
    counter& ignored_update;
    counter& ignored_delete;
    counter& ignored_truncate;
    counter& ignored_message;
    counter& ignored_other_table;
    counter& transactions;         // outbox_relay_transactions_total
    gauge& confirmed_lsn;          // outbox_relay_confirmed_lsn (bytes)
    gauge& received_lsn;           // outbox_relay_received_lsn (bytes)
    gauge& inflight_records;       // outbox_relay_inflight_records
    gauge& inflight_bytes;         // outbox_relay_inflight_bytes
    gauge& parked_records;         // outbox_relay_parked_records
    gauge& pending_txns;           // outbox_relay_pending_transactions
    gauge& backpressure_active;    // outbox_relay_backpressure_active (0/1)
    counter& pg_reconnects;        // outbox_relay_pg_reconnects_total
    counter& pg_silence_timeouts;  // outbox_relay_pg_silence_timeouts_total
    counter& scan_failures;        // outbox_relay_scan_failures_total
    counter& slot_gaps;            // outbox_relay_slot_gaps_total
    counter& batch_shrinks;        // outbox_relay_batch_shrinks_total
    counter& kafka_txn_commits;    // outbox_relay_kafka_transactions_committed_total
    histogram& kafka_txn_records;  // outbox_relay_kafka_transaction_records
    histogram& kafka_txn_commit;   // outbox_relay_kafka_transaction_commit_seconds
    // outbox_relay_dead_letters_total{reason=...}; one series per reason word,
    // made on first use.
    counter& dead_letter(std::string_view reason);
    counter& producer_recreated;   // outbox_relay_producer_recreated_total
    counter& status_updates_sent;  // outbox_relay_status_updates_sent_total
    histogram& commit_to_ack;      // outbox_relay_commit_to_ack_seconds
    // Opt-in outbox cleanup (io/outbox_cleanup.hpp); updated on the loop
    // thread from the cleaner's reports.
    counter& cleanup_deleted_rows;  // outbox_relay_cleanup_deleted_rows_total
    counter& cleanup_runs;          // outbox_relay_cleanup_runs_total
    counter& cleanup_errors;        // outbox_relay_cleanup_errors_total
    gauge& cleanup_mark_lag;        // outbox_relay_cleanup_mark_lag_seconds
    counter& outbox_messages;      // outbox_relay_outbox_messages_total
    counter& trace_context_dropped;  // outbox_relay_trace_context_dropped_total

    // ---- operability (issue 11)
    gauge& build_info;             // outbox_relay_build_info{version,commit} 1
    gauge& lag_bytes;              // outbox_relay_replication_lag_bytes: received - confirmed
    gauge& lag_seconds;            // outbox_relay_replication_lag_seconds: age of the oldest unconfirmed commit
    gauge& slot_retained_wal;      // outbox_relay_slot_retained_wal_bytes: pg_current_wal_lsn() - restart_lsn
    gauge& slot_safe_wal_size;     // outbox_relay_slot_safe_wal_size_bytes (-1: no limit)
    gauge& slot_active_pid;        // outbox_relay_slot_active_pid (0: no walsender holds it)
    gauge& slot_status_up;         // outbox_relay_slot_status_up: 1 when the last slot read succeeded
    gauge& kafka_brokers_up;       // outbox_relay_kafka_brokers_up
    gauge& kafka_brokers_known;    // outbox_relay_kafka_brokers_known
    gauge& kafka_queue_messages;   // outbox_relay_kafka_queue_messages (librdkafka msg_cnt)
    gauge& kafka_queue_bytes;      // outbox_relay_kafka_queue_bytes (msg_size)
    gauge& kafka_rtt_avg;          // outbox_relay_kafka_broker_rtt_avg_seconds (the slowest UP broker)
    counter& kafka_retries;        // outbox_relay_kafka_request_retries_total (txretries)
    counter& kafka_tx_errors;      // outbox_relay_kafka_transmission_errors_total (txerrs)
    counter& kafka_stats_received; // outbox_relay_kafka_stats_total

    // outbox_relay_slot_wal_status{status=reserved|extended|unreserved|lost}:
    // 1 for the slot's current wal_status, 0 for the others (all 0: unknown).
    void set_wal_status(std::string_view status);

    // outbox_relay_topic_records_total{topic} / outbox_relay_topic_bytes_total{topic}:
    // records Kafka acknowledged, per topic. At most topic_series_cap topics
    // get their own series; every later topic is counted under
    // topic="_other", so a routing template with unbounded values cannot
    // grow the scrape without bound.
    static constexpr std::size_t topic_series_cap = 100;
    struct topic_series {
        counter* records;
        counter* bytes;
    };
    topic_series topic(std::string_view name);

private:
    std::unordered_map<std::string, topic_series> topics_;
    std::string last_topic_;
    topic_series last_{nullptr, nullptr};
    std::vector<std::pair<std::string, gauge*>> wal_status_;
};

// Version and commit the binary was built from (CMake: project version and
// `git rev-parse --short HEAD` at configure time, "unknown" outside git).
std::string_view build_version() noexcept;
std::string_view build_commit() noexcept;

}  // namespace outbox
