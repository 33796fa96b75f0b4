#include "outbox_relay/metrics.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace outbox {
namespace {

enum metric_type : int { type_counter, type_gauge, type_histogram };

// Misuse of the registry is a programming error found at start-up; pure code
// cannot log, so say why on stderr and stop.
[[noreturn]] void die(std::string_view what, std::string_view name) noexcept {
    std::fprintf(stderr, "metrics: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
                 static_cast<int>(name.size()), name.data());
    std::fflush(stderr);
    std::abort();
}

bool valid_metric_name(std::string_view s) {
    if (s.empty()) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                        (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

bool valid_label_name(std::string_view s) {
    if (s.empty() || s.starts_with("__")) return false;  // "__" is reserved for Prometheus
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

// Exposition format: in HELP, '\' and newline are escaped; in label values
// also '"'.
void append_escaped(std::string& out, std::string_view s, bool quote) {
    for (char c : s) {
        switch (c) {
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '"':
                if (quote) {
                    out += "\\\"";
                    break;
                }
                [[fallthrough]];
            default: out += c;
        }
    }
}

void append_double(std::string& out, double v) {
    if (std::isnan(v)) {
        out += "NaN";
    } else if (std::isinf(v)) {
        out += v > 0 ? "+Inf" : "-Inf";
    } else {
        // Shortest text that reads back as the same double. Plain decimals
        // ("0.0005", "10") in the usual range, as other exporters print le
        // bounds; scientific only for extreme magnitudes.
        char buf[64];
        const double a = std::fabs(v);
        const bool plain = a == 0 || (a >= 1e-6 && a < 1e15);
        auto [p, ec] = plain ? std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed)
                             : std::to_chars(buf, buf + sizeof buf, v);
        out.append(buf, ec == std::errc{} ? p : buf);
    }
}

void append_uint(std::string& out, std::uint64_t v) {
    char buf[24];
    auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, ec == std::errc{} ? p : buf);
}

// name{a="x",b="y"} or name{a="x",le="0.5"}; nothing when there is no label.
void append_series_name(std::string& out, std::string_view name, std::string_view suffix,
                        const metric_labels& labels, std::string_view le = {}) {
    out += name;
    out += suffix;
    if (labels.empty() && le.empty()) return;
    out += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
        if (!first) out += ',';
        first = false;
        out += k;
        out += "=\"";
        append_escaped(out, v, true);
        out += '"';
    }
    if (!le.empty()) {
        if (!first) out += ',';
        out += "le=\"";
        out += le;
        out += '"';
    }
    out += '}';
}

}  // namespace

// ---------------------------------------------------------------------------

histogram::histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void histogram::observe(double v) noexcept {
    if (std::isnan(v)) return;
    std::size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) ++i;
    ++counts_[i];
    ++count_;
    sum_ += v;
}

struct metrics_registry::family {
    struct series {
        metric_labels labels;
        std::unique_ptr<counter> c;
        std::unique_ptr<gauge> g;
        std::unique_ptr<histogram> h;
    };
    std::string name;
    std::string help;
    int type;
    std::vector<series> members;

    series* find(const metric_labels& labels) {
        for (auto& s : members)
            if (s.labels == labels) return &s;
        return nullptr;
    }
};

metrics_registry::metrics_registry(metrics_registry&&) noexcept = default;
metrics_registry& metrics_registry::operator=(metrics_registry&&) noexcept = default;
metrics_registry::metrics_registry() = default;
metrics_registry::~metrics_registry() = default;

metrics_registry::family& metrics_registry::family_for(std::string_view name, std::string_view help, int type) {
    if (!valid_metric_name(name)) die("invalid metric name", name);
    for (auto& f : families_) {
        if (f->name == name) {
            if (f->type != type) die("metric registered again with another type", name);
            return *f;
        }
    }
    families_.push_back(std::make_unique<family>(family{std::string(name), std::string(help), type, {}}));
    return *families_.back();
}

namespace {
void check_labels(std::string_view metric, const metric_labels& labels, bool histogram) {
    for (const auto& [k, v] : labels) {
        if (!valid_label_name(k) || (histogram && k == "le")) die("invalid label name", metric);
    }
}
}  // namespace

counter& metrics_registry::add_counter(std::string_view name, std::string_view help, metric_labels labels) {
    check_labels(name, labels, false);
    family& f = family_for(name, help, type_counter);
    if (auto* s = f.find(labels)) return *s->c;
    f.members.push_back({std::move(labels), std::make_unique<counter>(), nullptr, nullptr});
    return *f.members.back().c;
}

gauge& metrics_registry::add_gauge(std::string_view name, std::string_view help, metric_labels labels) {
    check_labels(name, labels, false);
    family& f = family_for(name, help, type_gauge);
    if (auto* s = f.find(labels)) return *s->g;
    f.members.push_back({std::move(labels), nullptr, std::make_unique<gauge>(), nullptr});
    return *f.members.back().g;
}

histogram& metrics_registry::add_histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                                           metric_labels labels) {
    check_labels(name, labels, true);
    for (std::size_t i = 0; i < bounds.size(); ++i) {
        if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
            die("histogram bounds must be finite and strictly increasing", name);
    }
    family& f = family_for(name, help, type_histogram);
    if (auto* s = f.find(labels)) return *s->h;
    f.members.push_back({std::move(labels), nullptr, nullptr, std::make_unique<histogram>(std::move(bounds))});
    return *f.members.back().h;
}

void metrics_registry::render(std::string& out) const {
    for (const auto& fp : families_) {
        const family& f = *fp;
        out += "# HELP ";
        out += f.name;
        out += ' ';
        append_escaped(out, f.help, false);
        out += "\n# TYPE ";
        out += f.name;
        out += f.type == type_counter ? " counter\n" : f.type == type_gauge ? " gauge\n" : " histogram\n";
        for (const auto& s : f.members) {
            if (f.type == type_counter) {
                append_series_name(out, f.name, "", s.labels);
                out += ' ';
                append_uint(out, s.c->value());
                out += '\n';
            } else if (f.type == type_gauge) {
                append_series_name(out, f.name, "", s.labels);
                out += ' ';
                append_double(out, s.g->value());
                out += '\n';
            } else {
                // Buckets are cumulative in the exposition format.
                const histogram& h = *s.h;
                std::uint64_t cumulative = 0;
                std::string le;
                for (std::size_t i = 0; i <= h.bounds().size(); ++i) {
                    cumulative += h.bucket_counts()[i];
                    le.clear();
                    if (i < h.bounds().size())
                        append_double(le, h.bounds()[i]);
                    else
                        le = "+Inf";
                    append_series_name(out, f.name, "_bucket", s.labels, le);
                    out += ' ';
                    append_uint(out, cumulative);
                    out += '\n';
                }
                append_series_name(out, f.name, "_sum", s.labels);
                out += ' ';
                append_double(out, h.sum());
                out += '\n';
                append_series_name(out, f.name, "_count", s.labels);
                out += ' ';
                append_uint(out, h.count());
                out += '\n';
            }
        }
    }
}

std::string metrics_registry::render() const {
    std::string out;
    render(out);
    return out;
}

double seconds_since_pg_commit(std::int64_t commit_ts_pg_us, std::int64_t now_unix_us) noexcept {
    // Postgres timestamps count from 2000-01-01; Unix time from 1970-01-01.
    constexpr std::int64_t pg_epoch_unix_us = 946'684'800'000'000;
    const std::int64_t commit_unix_us = commit_ts_pg_us + pg_epoch_unix_us;
    if (now_unix_us <= commit_unix_us) return 0;
    return static_cast<double>(now_unix_us - commit_unix_us) / 1e6;
}

// ---------------------------------------------------------------------------

namespace {
counter& ignored(metrics_registry& r, const char* kind) {
    return r.add_counter("outbox_relay_changes_ignored_total",
                         "Replicated changes not turned into records, by kind (update, delete, truncate, "
                         "message, other_table).",
                         {{"kind", kind}});
}
}  // namespace

relay_metrics::relay_metrics()
    : records_produced(registry.add_counter("outbox_relay_records_produced_total",
                                            "Records handed to the Kafka producer.")),
      records_acked(registry.add_counter("outbox_relay_records_acked_total",
                                         "Records Kafka acknowledged as persisted.")),
      records_failed(registry.add_counter("outbox_relay_records_failed_total",
                                          "Records whose delivery failed (retried or fatal).")),
      duplicates_skipped(registry.add_counter(
          "outbox_relay_duplicates_skipped_total",
          "Replayed records recognised as already in Kafka after a restart and not produced again.")),
      ignored_update(ignored(registry, "update")),
      ignored_delete(ignored(registry, "delete")),
      ignored_truncate(ignored(registry, "truncate")),
      ignored_message(ignored(registry, "message")),
      ignored_other_table(ignored(registry, "other_table")),
      transactions(registry.add_counter("outbox_relay_transactions_total",
                                        "Committed transactions received from Postgres.")),
      confirmed_lsn(registry.add_gauge("outbox_relay_confirmed_lsn",
                                       "WAL position (bytes) confirmed to Postgres as flushed.")),
      received_lsn(registry.add_gauge("outbox_relay_received_lsn",
                                      "Highest WAL position (bytes) received from Postgres.")),
      inflight_records(registry.add_gauge(
          "outbox_relay_inflight_records",
          "Records produced and not yet acknowledged by Kafka, plus records parked until their topic's scan is done.")),
      inflight_bytes(registry.add_gauge("outbox_relay_inflight_bytes",
                                        "Bytes of the records counted by outbox_relay_inflight_records.")),
      parked_records(registry.add_gauge(
          "outbox_relay_parked_records",
          "Records waiting for their topic's exactly-once tail scan before they are produced.")),
      pending_txns(registry.add_gauge("outbox_relay_pending_transactions",
                                      "Transactions with records not yet confirmable (checkpoint entries).")),
      backpressure_active(registry.add_gauge(
          "outbox_relay_backpressure_active",
          "1 while reading from Postgres is paused because in-flight limits are reached, else 0.")),
      pg_reconnects(registry.add_counter("outbox_relay_pg_reconnects_total",
                                         "Replication connections lost (each is followed by a reconnect with backoff).")),
      pg_silence_timeouts(registry.add_counter(
          "outbox_relay_pg_silence_timeouts_total",
          "Replication connections given up because nothing was heard for pg-silence-timeout-ms.")),
      scan_failures(registry.add_counter("outbox_relay_scan_failures_total",
                                         "Exactly-once tail scans that failed (retried after a backoff).")),
      slot_gaps(registry.add_counter(
          "outbox_relay_slot_gaps_total",
          "Starts on a newly created slot while Kafka already held events of this source (a possible gap).")),
      batch_shrinks(registry.add_counter(
          "outbox_relay_batch_shrinks_total",
          "Producer restarts with smaller batches after a broker refused a batch as too large for a topic.")),
      kafka_txn_commits(registry.add_counter("outbox_relay_kafka_transactions_committed_total",
                                             "Kafka transactions committed (exactly-once with kafka-transactions).")),
      kafka_txn_records(registry.add_histogram("outbox_relay_kafka_transaction_records",
                                               "Records per committed Kafka transaction.",
                                               {1, 10, 100, 1000, 10000, 100000, 1000000})),
      kafka_txn_commit(registry.add_histogram(
          "outbox_relay_kafka_transaction_commit_seconds",
          "Seconds from asking for a Kafka commit (its records flushed first) until it is done.",
          std::vector<double>(std::begin(commit_to_ack_buckets), std::end(commit_to_ack_buckets)))),
      producer_recreated(registry.add_counter("outbox_relay_producer_recreated_total",
                                              "Kafka producers recreated after a fatal producer error.")),
      status_updates_sent(registry.add_counter("outbox_relay_status_updates_sent_total",
                                               "Standby status updates sent to Postgres.")),
      commit_to_ack(registry.add_histogram(
          "outbox_relay_commit_to_ack_seconds",
          "Seconds from a transaction's Postgres commit timestamp until every record of it is acked and confirmable.",
          std::vector<double>(std::begin(commit_to_ack_buckets), std::end(commit_to_ack_buckets)))),
      cleanup_deleted_rows(registry.add_counter("outbox_relay_cleanup_deleted_rows_total",
                                                "Outbox rows deleted by the cleanup (cleanup-after).")),
      cleanup_runs(registry.add_counter(
          "outbox_relay_cleanup_runs_total",
          "Cleanup ticks completed: a mark taken and, when one was usable, its delete pass finished.")),
      cleanup_errors(registry.add_counter("outbox_relay_cleanup_errors_total",
                                          "Cleanup ticks or connections that failed (retried; relaying goes on).")),
      cleanup_mark_lag(registry.add_gauge(
          "outbox_relay_cleanup_mark_lag_seconds",
          "Age of the oldest cleanup mark kept: the usable one when there is one. About cleanup-after plus a tick "
          "when all is well; grows while confirmed stands still.")),
      outbox_messages(registry.add_counter(
          "outbox_relay_outbox_messages_total",
          "pg_logical_emit_message messages with the outbox prefix (relayed or dead-lettered).")),
      trace_context_dropped(registry.add_counter(
          "outbox_relay_trace_context_dropped_total",
          "Records sent without their traceparent (and tracestate) because it was not a valid W3C traceparent.")),
      build_info(registry.add_gauge("outbox_relay_build_info", "Always 1; the labels say which build runs.",
                                    {{"version", std::string(build_version())}, {"commit", std::string(build_commit())}})),
      lag_bytes(registry.add_gauge(
          "outbox_relay_replication_lag_bytes",
          "WAL received from Postgres but not yet confirmed (server WAL end seen by the relay minus confirmed), bytes.")),
      lag_seconds(registry.add_gauge(
          "outbox_relay_replication_lag_seconds",
          "Seconds since the commit of the oldest transaction whose records are not yet confirmed; 0 when none is.")),
      slot_retained_wal(registry.add_gauge("outbox_relay_slot_retained_wal_bytes",
                                           "WAL the slot holds on the server: pg_current_wal_lsn() - restart_lsn, bytes.")),
      slot_safe_wal_size(registry.add_gauge(
          "outbox_relay_slot_safe_wal_size_bytes",
          "WAL that can still be written before the slot is in danger of losing what it needs (-1: no limit).")),
      slot_active_pid(registry.add_gauge("outbox_relay_slot_active_pid",
                                         "PID of the walsender holding the slot (0: nobody).")),
      slot_status_up(registry.add_gauge("outbox_relay_slot_status_up",
                                        "1 when the last read of pg_replication_slots succeeded, else 0.")),
      kafka_brokers_up(registry.add_gauge("outbox_relay_kafka_brokers_up",
                                          "Kafka brokers the producer is connected to (state UP).")),
      kafka_brokers_known(registry.add_gauge("outbox_relay_kafka_brokers_known",
                                             "Kafka brokers the producer knows (configured or learned).")),
      kafka_queue_messages(registry.add_gauge("outbox_relay_kafka_queue_messages",
                                              "Messages in the producer's queues, queued or in flight (msg_cnt).")),
      kafka_queue_bytes(registry.add_gauge("outbox_relay_kafka_queue_bytes",
                                           "Bytes of the messages in the producer's queues (msg_size).")),
      kafka_rtt_avg(registry.add_gauge("outbox_relay_kafka_broker_rtt_avg_seconds",
                                       "Average broker request round trip of the slowest connected broker, seconds.")),
      kafka_retries(registry.add_counter("outbox_relay_kafka_request_retries_total",
                                         "Requests librdkafka sent again (txretries, all producers of this process).")),
      kafka_tx_errors(registry.add_counter("outbox_relay_kafka_transmission_errors_total",
                                           "Request transmission errors (txerrs, all producers of this process).")),
      kafka_stats_received(registry.add_counter("outbox_relay_kafka_stats_total",
                                                "librdkafka statistics reports received.")) {
    build_info.set(1);
    for (const char* st : {"reserved", "extended", "unreserved", "lost"})
        wal_status_.emplace_back(st, &registry.add_gauge("outbox_relay_slot_wal_status",
                                                         "1 for the slot's wal_status, 0 for the others.",
                                                         {{"status", st}}));
}

void relay_metrics::set_wal_status(std::string_view status) {
    for (auto& [name, g] : wal_status_) g->set(name == status ? 1 : 0);
}

relay_metrics::topic_series relay_metrics::topic(std::string_view name) {
    // Acks come in runs of one topic: the last one is kept at hand.
    if (last_.records != nullptr && name == last_topic_) return last_;
    auto it = topics_.find(std::string(name));
    if (it == topics_.end()) {
        std::string label = topics_.size() < topic_series_cap ? std::string(name) : std::string("_other");
        auto known = topics_.find(label);
        if (known != topics_.end() && label == "_other") {
            last_topic_.assign(name);
            last_ = known->second;
            return last_;
        }
        topic_series s{&registry.add_counter("outbox_relay_topic_records_total",
                                             "Records Kafka acknowledged, per topic (at most 100 topics, the rest "
                                             "as topic=\"_other\").",
                                             {{"topic", label}}),
                       &registry.add_counter("outbox_relay_topic_bytes_total",
                                             "Bytes (key + value + headers) of the records Kafka acknowledged, per "
                                             "topic (at most 100 topics, the rest as topic=\"_other\").",
                                             {{"topic", label}})};
        it = topics_.emplace(label, s).first;
    }
    last_topic_.assign(name);
    last_ = it->second;
    return last_;
}

#ifndef OUTBOX_RELAY_COMMIT
#define OUTBOX_RELAY_COMMIT "unknown"
#endif
std::string_view build_version() noexcept { return OUTBOX_RELAY_VERSION; }
std::string_view build_commit() noexcept { return OUTBOX_RELAY_COMMIT; }

counter& relay_metrics::dead_letter(std::string_view reason) {
    return registry.add_counter("outbox_relay_dead_letters_total",
                                "Records sent to the dead-letter topic instead of their own, by reason.",
                                {{"reason", std::string(reason)}});
}

}  // namespace outbox
