// Idempotent librdkafka producer served on the Asio loop thread.
//
// How reports reach the loop: delivery reports and errors are events
// (rd_kafka_conf_set_events) on the main queue. librdkafka writes one byte
// into a pipe whenever an event is enqueued on the previously empty main
// queue (rd_kafka_queue_io_event_enable). The loop waits on the pipe's read
// end, drains it completely, re-arms the wait and only then polls the queue
// until it is empty. An event enqueued after that finds the queue empty and
// therefore writes a new byte: no wake-up is lost. A byte that arrives for an
// event already served costs one empty poll.
//
// Events rather than callbacks because of transactions: the commit runs on a
// worker thread and flushes; in event mode the flush only waits for the
// loop to serve the reports, instead of serving them (on the wrong thread).
#include "outbox_relay/io/kafka_sink.hpp"

#include "outbox_relay/config.hpp"
#include "outbox_relay/io/log.hpp"
#include "outbox_relay/outbox.hpp"
#include "outbox_relay/secrets.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <librdkafka/rdkafka.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <stdexcept>
#include <optional>
#include <unordered_map>
#include <vector>

namespace outbox::io {

namespace {

constexpr std::string_view mod = "kafka/sink";

// The tag travels through librdkafka as the message opaque (a void*).
static_assert(sizeof(void*) >= sizeof(std::uint64_t), "the tag is carried in a pointer-sized opaque");

// Errors after which the same record will never be accepted as it is, so
// producing it again (even with a new producer) cannot help. The caller routes
// such a record to a dead-letter topic or stops without confirming it.
//   MSG_SIZE_TOO_LARGE / RECORD_LIST_TOO_LARGE  larger than message.max.bytes (client or broker)
//   INVALID_RECORD, CORRUPT_MESSAGE excluded (CRC errors are retried by librdkafka)
//   TOPIC_AUTHORIZATION_FAILED                  needs an ACL change first
//   UNKNOWN_TOPIC_OR_PART, __UNKNOWN_TOPIC,     librdkafka reports these only after the
//   __UNKNOWN_PARTITION                         topic metadata wait (topic.metadata.propagation.max.ms)
//   TOPIC_EXCEPTION                             invalid topic name
//   POLICY_VIOLATION, INVALID_TIMESTAMP,        broker-side validation of the record itself
//   UNSUPPORTED_FOR_MESSAGE_FORMAT
//   __INVALID_ARG                               produce() argument librdkafka refuses
// Everything else (timeouts, purges, fatal producer errors, transport errors)
// is not permanent: the record may succeed when produced again.
bool is_permanent(rd_kafka_resp_err_t err) noexcept {
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
    case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return true;
    default:
        return false;
    }
}

outbox::refusal refusal_of(rd_kafka_resp_err_t err) noexcept {
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        return outbox::refusal::too_large;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
        return outbox::refusal::topic_authorization;
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        return outbox::refusal::unknown_topic;
    // Only an explicit partition (a partition placement) can be unknown:
    // the partitioner picks among those that exist.
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        return outbox::refusal::unknown_partition;
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return outbox::refusal::invalid_topic;
    default:
        return outbox::refusal::other;
    }
}

// Values of secret properties (outbox/secrets.hpp, the one list) never
// appear in an error message or log.
std::string shown_value(std::string_view name, std::string_view value) {
    return outbox::shown_kafka_value(name, value);
}

// The relay forces these (config.hpp keeps the list); a caller that sets one
// gets an error naming it instead of a silently weaker producer.
void check_not_refused(const std::string& name, const std::string& value) {
    if (auto why = outbox::refused_kafka_property(name); !why.empty())
        throw std::runtime_error(
            fmt::format("kafka property {}={} is not allowed: {}", name, shown_value(name, value), why));
}

struct conf_deleter {
    void operator()(rd_kafka_conf_t* c) const noexcept { rd_kafka_conf_destroy(c); }
};
using conf_ptr = std::unique_ptr<rd_kafka_conf_t, conf_deleter>;

void set_prop(rd_kafka_conf_t* conf, const std::string& name, const std::string& value) {
    char errstr[512];
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        throw std::runtime_error(
            fmt::format("kafka property {}={}: {}", name, shown_value(name, value), errstr));
}

// librdkafka logs from its own threads; spdlog's logger is thread-safe.
void log_cb(const rd_kafka_t*, int level, const char* fac, const char* buf) {
    // syslog levels: 0-3 error, 4 warning, 5-6 notice/info, 7 debug
    if (level <= 3)
        log::error("kafka/rdkafka", "event=rdkafka_log fac={} msg={}", fac, log::quote(buf));
    else if (level == 4)
        log::warn("kafka/rdkafka", "event=rdkafka_log fac={} msg={}", fac, log::quote(buf));
    else if (level <= 6)
        log::info("kafka/rdkafka", "event=rdkafka_log fac={} msg={}", fac, log::quote(buf));
    else
        log::debug("kafka/rdkafka", "event=rdkafka_log fac={} msg={}", fac, log::quote(buf));
}

// The same measure as record::bytes(), from what librdkafka hands back.
std::size_t record_bytes(rd_kafka_message_t* m) noexcept {
    std::size_t n = m->len + m->key_len;
    rd_kafka_headers_t* hdrs = nullptr;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
        const char* name = nullptr;
        const void* val = nullptr;
        std::size_t size = 0;
        for (std::size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
             ++i)
            n += std::strlen(name) + size;
    }
    return n;
}

}  // namespace

struct kafka_sink::impl {
    // A failure produce() saw immediately, delivered later on the loop so the
    // caller has one code path for every failure.
    struct synthesized {
        std::uint64_t tag;
        rd_kafka_resp_err_t err;
        std::string topic;
        std::size_t bytes;
        std::string event_id;
        std::optional<outbox::owned_record> rec;  // for a dead letter of it
    };
    struct warn_state {
        std::chrono::steady_clock::time_point last{};
        std::size_t suppressed = 0;
    };

    kafka_sink& self;
    boost::asio::io_context& ioc;
    report_handler on_report;
    fatal_handler on_fatal;
    rd_kafka_t* rk = nullptr;
    rd_kafka_queue_t* main_q = nullptr;
    int wake_write_fd = -1;
    boost::asio::posix::stream_descriptor wake_read;
    // Posted handlers hold a weak reference: once the sink is gone they do nothing.
    std::shared_ptr<int> alive = std::make_shared<int>(0);
    bool discard_reports = false;   // set by the destructor: purged reports go nowhere
    bool fatal_reported = false;
    bool synth_posted = false;
    std::deque<synthesized> synth;
    // Topic handles by name: producing through a handle skips librdkafka's
    // by-name lookup, and creating one (rd_kafka_topic_new) asks for the
    // topic's metadata at once. The last one used is kept at hand.
    std::unordered_map<std::string, rd_kafka_topic_t*> topics;
    std::string last_topic_name;
    rd_kafka_topic_t* last_topic = nullptr;
    // A handler that throws inside a librdkafka callback must not unwind
    // through C frames; it is rethrown once rd_kafka_poll has returned.
    std::exception_ptr pending_exception;
    std::unordered_map<int, warn_state> warns;
    std::function<void(std::string_view)> stats_handler;
    std::function<void(std::string_view)> brokers_down_handler;

    // Transactions: calls that block on the brokers run on this thread, one
    // at a time; their outcome is posted to the loop.
    bool transactional = false;
    std::thread txn_thread;
    std::mutex txn_mu;
    std::condition_variable txn_cv;
    std::deque<std::function<void()>> txn_jobs;
    bool txn_stop = false;
    std::atomic<bool> txn_idle{true};

    void txn_work() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock<std::mutex> lock(txn_mu);
                txn_cv.wait(lock, [&] { return txn_stop || !txn_jobs.empty(); });
                if (txn_jobs.empty()) return;  // stopping, nothing left
                job = std::move(txn_jobs.front());
                txn_jobs.pop_front();
                txn_idle = false;
            }
            job();
            txn_idle = true;
        }
    }

    // Runs `call` (returning a librdkafka error object or null) on the
    // worker and posts its outcome to the loop.
    void txn_job(std::function<rd_kafka_error_t*()> call, txn_done done, const char* what) {
        if (!transactional) {
            // A programming error, made loud rather than a silent stall.
            boost::asio::post(ioc, [w = std::weak_ptr<int>(alive), done, what] {
                if (w.expired()) return;
                txn_result r;
                r.status = txn_result::kind::fatal;
                r.message = fmt::format("{}: the producer has no transactional.id", what);
                done(std::move(r));
            });
            return;
        }
        std::lock_guard<std::mutex> lock(txn_mu);
        if (txn_stop) return;
        txn_jobs.push_back([this, call = std::move(call), done = std::move(done), what] {
            rd_kafka_error_t* e = call();
            txn_result r;
            if (e) {
                r.message = fmt::format("{}: {}: {}", what, rd_kafka_error_name(e), rd_kafka_error_string(e));
                const auto code = rd_kafka_error_code(e);
                r.fenced = code == RD_KAFKA_RESP_ERR__FENCED || code == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
                           code == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH;
                r.status = rd_kafka_error_is_fatal(e)              ? txn_result::kind::fatal
                           : rd_kafka_error_txn_requires_abort(e) ? txn_result::kind::abortable
                           : rd_kafka_error_is_retriable(e)        ? txn_result::kind::retriable
                                                                   : txn_result::kind::fatal;
                if (r.fenced) r.status = txn_result::kind::fatal;
                rd_kafka_error_destroy(e);
            }
            boost::asio::post(ioc, [w = std::weak_ptr<int>(alive), this, done, r = std::move(r)]() mutable {
                if (w.expired() || discard_reports) return;
                done(std::move(r));
            });
        });
        txn_cv.notify_one();
    }

    impl(kafka_sink& s, boost::asio::io_context& io, report_handler r, fatal_handler f)
        : self(s), ioc(io), on_report(std::move(r)), on_fatal(std::move(f)), wake_read(io) {}

    // Serves one event of the main queue (loop thread).
    void on_event(rd_kafka_event_t* ev) {
        switch (rd_kafka_event_type(ev)) {
        case RD_KAFKA_EVENT_DR: {
            while (const rd_kafka_message_t* m = rd_kafka_event_message_next(ev))
                on_delivery(const_cast<rd_kafka_message_t*>(m));
            break;
        }
        case RD_KAFKA_EVENT_STATS:
            // statistics.interval.ms: parsed by the relay on this (the loop) thread.
            if (stats_handler) {
                try {
                    stats_handler(std::string_view(rd_kafka_event_stats(ev)));
                } catch (...) {
                    pending_exception = std::current_exception();
                }
            }
            break;
        case RD_KAFKA_EVENT_ERROR:
            // As an event, a fatal error carries its own code and the fatal
            // flag (as a callback it would be __FATAL).
            on_error(rd_kafka_event_error_is_fatal(ev) ? RD_KAFKA_RESP_ERR__FATAL : rd_kafka_event_error(ev),
                     rd_kafka_event_error_string(ev));
            break;
        default:
            break;
        }
    }

    // Polls the main queue until it is empty; `wait_ms` for the first event.
    void poll_events(int wait_ms) {
        while (rd_kafka_event_t* ev = rd_kafka_queue_poll(main_q, wait_ms)) {
            on_event(ev);
            rd_kafka_event_destroy(ev);
            wait_ms = 0;
        }
    }

    void on_delivery(rd_kafka_message_t* m) {
        std::size_t bytes = record_bytes(m);
        self.in_flight_ -= std::min<std::size_t>(self.in_flight_, 1);
        self.bytes_in_flight_ -= std::min(self.bytes_in_flight_, bytes);
        if (discard_reports || pending_exception) {
            // After a handler threw, later reports of the same poll are lost
            // to the caller; the exception ends the loop anyway.
            return;
        }
        delivery_report r;
        r.tag = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(m->_private));
        r.err = m->err;
        r.bytes = bytes;
        std::vector<outbox::header> failed_headers;
        if (m->err) {
            r.error = rd_kafka_err2str(m->err);
            r.status = is_permanent(m->err) ? outbox::delivery_status::permanent : outbox::delivery_status::transient;
            r.why = refusal_of(m->err);
            // What a dead letter of it needs: the record as produced.
            rd_kafka_headers_t* all = nullptr;
            if (rd_kafka_message_headers(m, &all) == RD_KAFKA_RESP_ERR_NO_ERROR && all) {
                const char* name = nullptr;
                const void* val = nullptr;
                std::size_t size = 0;
                for (std::size_t i = 0;
                     rd_kafka_header_get_all(all, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
                    failed_headers.push_back(
                        {name, std::string_view(val ? static_cast<const char*>(val) : "", size), val == nullptr});
            }
            r.rec.key_null = m->key == nullptr;
            r.rec.key = m->key ? std::string_view(static_cast<const char*>(m->key), m->key_len) : std::string_view();
            r.rec.value_null = m->payload == nullptr;
            r.rec.value =
                m->payload ? std::string_view(static_cast<const char*>(m->payload), m->len) : std::string_view();
            r.rec.headers = std::span<const outbox::header>(failed_headers.data(), failed_headers.size());
            // A dead letter keeps the event's time, not the partition (that
            // belonged to the topic it was meant for).
            rd_kafka_timestamp_type_t tstype = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            const std::int64_t ts = rd_kafka_message_timestamp(m, &tstype);
            r.rec.timestamp_ms = tstype == RD_KAFKA_TIMESTAMP_CREATE_TIME && ts > 0 ? ts : 0;
            // The failure path (dead-letter routing, the exit message) names the event.
            rd_kafka_headers_t* hdrs = nullptr;
            const void* id = nullptr;
            std::size_t id_size = 0;
            if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs &&
                rd_kafka_header_get_last(hdrs, std::string(outbox::header_id).c_str(), &id, &id_size) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR &&
                id)
                r.event_id.assign(static_cast<const char*>(id), id_size);
            log::debug(mod, "event=delivery_failed tag={} err={} error={} permanent={}", r.tag,
                       rd_kafka_err2name(m->err), log::quote(r.error), r.permanent());
        }
        r.partition = m->partition;
        // RD_KAFKA_OFFSET_INVALID when the broker answered DUPLICATE_SEQUENCE_NUMBER.
        r.offset = m->offset < 0 ? -1 : m->offset;
        r.topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "";
        r.rec.topic = r.topic;
        try {
            on_report(r);
        } catch (...) {
            pending_exception = std::current_exception();
        }
    }

    void on_error(rd_kafka_resp_err_t err, const char* reason) {
        if (err == RD_KAFKA_RESP_ERR__FATAL) {
            char buf[512] = {0};
            rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(rk, buf, sizeof buf);
            self.failed_ = true;
            std::string why = fmt::format("{}: {}", rd_kafka_err2name(fatal), buf);
            const outbox::producer_fault fault = classify_fatal(fatal);
            log::error(mod, "event=fatal_error err={} reason={} in_flight={} healable={}", rd_kafka_err2name(fatal),
                       log::quote(buf), self.in_flight_, fault == outbox::producer_fault::healable);
            post_fatal(fault, std::move(why));
            return;
        }
        if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && brokers_down_handler) {
            try {
                brokers_down_handler(reason ? reason : "all brokers are down");
            } catch (...) {
                pending_exception = std::current_exception();
            }
        }
        // Broker-down and similar errors repeat every reconnect attempt:
        // at most one line per error code per 10 s, with the count skipped.
        auto now = std::chrono::steady_clock::now();
        auto& w = warns[err];
        if (w.last != std::chrono::steady_clock::time_point{} && now - w.last < std::chrono::seconds(10)) {
            ++w.suppressed;
            return;
        }
        log::warn(mod, "event=kafka_error err={} reason={} suppressed={}", rd_kafka_err2name(err),
                  log::quote(reason ? reason : ""), w.suppressed);
        w.last = now;
        w.suppressed = 0;
    }

    // The fatal handler runs from its own loop turn, not from inside
    // rd_kafka_poll, so it may tear the sink down.
    void post_fatal(outbox::producer_fault fault, std::string why) {
        if (fatal_reported) return;
        fatal_reported = true;
        boost::asio::post(ioc, [w = std::weak_ptr<int>(alive), this, fault, why = std::move(why)] {
            if (w.expired() || discard_reports) return;
            if (on_fatal) on_fatal(fault, why);
        });
    }

    void post_synth() {
        if (synth_posted) return;
        synth_posted = true;
        boost::asio::post(ioc, [w = std::weak_ptr<int>(alive), this] {
            if (w.expired()) return;
            synth_posted = false;
            deliver_synth();
        });
    }

    void deliver_synth() {
        while (!synth.empty() && !discard_reports) {
            synthesized s = std::move(synth.front());
            synth.pop_front();
            self.in_flight_ -= std::min<std::size_t>(self.in_flight_, 1);
            self.bytes_in_flight_ -= std::min(self.bytes_in_flight_, s.bytes);
            delivery_report r;
            r.tag = s.tag;
            r.err = s.err;
            r.bytes = s.bytes;
            r.error = rd_kafka_err2str(s.err);
            r.status = is_permanent(s.err) ? outbox::delivery_status::permanent : outbox::delivery_status::transient;
            r.why = refusal_of(s.err);
            r.local = true;
            r.topic = s.topic;
            if (s.rec) r.rec = s.rec->get();
            r.event_id = std::move(s.event_id);
            try {
                on_report(r);
            } catch (...) {
                // The rest stays queued for the next loop turn.
                if (!synth.empty()) post_synth();
                throw;
            }
        }
    }

    // The handle of `topic`, created on first use (which also triggers
    // librdkafka's asynchronous metadata query for it; producev by name does
    // not, and would wait for the periodic refresh). Null when librdkafka
    // refuses the name.
    rd_kafka_topic_t* topic_handle(std::string_view topic) {
        if (last_topic != nullptr && topic == last_topic_name) return last_topic;
        auto it = topics.find(std::string(topic));
        if (it == topics.end()) {
            rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, std::string(topic).c_str(), nullptr);
            if (rkt == nullptr) return nullptr;
            it = topics.emplace(std::string(topic), rkt).first;
        }
        last_topic_name.assign(topic);
        last_topic = it->second;
        return last_topic;
    }

    void serve() {
        poll_events(0);
        deliver_synth();
        rethrow_pending();
    }

    void rethrow_pending() {
        if (pending_exception) std::rethrow_exception(std::exchange(pending_exception, nullptr));
    }

    void drain_pipe() {
        char buf[256];
        while (::read(wake_read.native_handle(), buf, sizeof buf) > 0) {
        }
    }

    void arm() {
        wake_read.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                             [w = std::weak_ptr<int>(alive), this](const boost::system::error_code& ec) {
                                 if (w.expired() || ec == boost::asio::error::operation_aborted) return;
                                 if (ec) {
                                     // Without the wake-up no report would ever arrive: make it loud.
                                     log::error(mod, "event=wake_wait_failed error={}", log::quote(ec.message()));
                                     throw boost::system::system_error(ec, "kafka/sink wake-up descriptor");
                                 }
                                 // Drain before polling, re-arm before serving (serving may throw).
                                 drain_pipe();
                                 arm();
                                 serve();
                             });
    }
};

kafka_sink::kafka_sink(boost::asio::io_context& ioc, const sink_config& cfg, report_handler on_report,
                       fatal_handler on_fatal)
    : impl_(std::make_unique<impl>(*this, ioc, std::move(on_report), std::move(on_fatal))) {
    conf_ptr conf(rd_kafka_conf_new());
    // Defaults the user may override.
    set_prop(conf.get(), "linger.ms", "5");
    set_prop(conf.get(), "compression.type", "lz4");
    // The Java producer's partitioner (murmur2 of the key bytes, positive,
    // modulo the partition count; a null key: random): a key lands on the
    // partition Debezium or any Java producer put it on, so per-key order
    // holds across a switch. librdkafka's own default (consistent_random,
    // CRC32) would move keys.
    set_prop(conf.get(), "partitioner", "murmur2_random");
    if (!cfg.brokers.empty()) set_prop(conf.get(), "bootstrap.servers", cfg.brokers);
    set_prop(conf.get(), "client.id", cfg.client_id);
    // Statistics for the metrics and /readyz (broker state); -X may change the interval.
    if (cfg.on_stats) set_prop(conf.get(), "statistics.interval.ms", "5000");
    for (const auto& [name, value] : cfg.properties) {
        check_not_refused(name, value);
        set_prop(conf.get(), name, value);
    }
    // Forced last so nothing above can change them.
    set_prop(conf.get(), "enable.idempotence", "true");
    set_prop(conf.get(), "acks", "all");
    set_prop(conf.get(), "message.timeout.ms", "0");
    if (cfg.queue_max_messages > 0)
        set_prop(conf.get(), "queue.buffering.max.messages", std::to_string(cfg.queue_max_messages));
    if (cfg.queue_max_kbytes > 0)
        set_prop(conf.get(), "queue.buffering.max.kbytes", std::to_string(cfg.queue_max_kbytes));
    if (!cfg.transactional_id.empty()) {
        set_prop(conf.get(), "transactional.id", cfg.transactional_id);
        // A commit waits for every record of the transaction; a large
        // Postgres transaction (a million rows) must fit, and a relay paused
        // while a standby takes over is fenced well before this anyway.
        if (!cfg.properties.contains("transaction.timeout.ms"))
            set_prop(conf.get(), "transaction.timeout.ms", "300000");
        // The coordinator answers CONCURRENT_TRANSACTIONS while the previous
        // commit's markers are still being written. librdkafka 2.0.2 retries
        // an EndTxn (and any other request) after retry.backoff.ms (default
        // 100); its AddPartitionsToTxn retry is fixed at 20 ms
        // (rdkafka_txnmgr.c), which is what the Java producer uses for both.
        if (!cfg.properties.contains("retry.backoff.ms")) set_prop(conf.get(), "retry.backoff.ms", "20");
        impl_->transactional = true;
    }

    rd_kafka_conf_set_opaque(conf.get(), impl_.get());
    impl_->stats_handler = cfg.on_stats;
    impl_->brokers_down_handler = cfg.on_all_brokers_down;
    rd_kafka_conf_set_events(conf.get(), RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_ERROR |
                                             (cfg.on_stats ? RD_KAFKA_EVENT_STATS : 0));
    rd_kafka_conf_set_log_cb(conf.get(), &log_cb);

    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        throw std::runtime_error(fmt::format("kafka/sink: pipe2: {}", std::strerror(errno)));
    impl_->wake_read.assign(fds[0]);
    impl_->wake_write_fd = fds[1];

    char errstr[512];
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), errstr, sizeof errstr);
    if (!rk) {
        ::close(impl_->wake_write_fd);
        throw std::runtime_error(fmt::format("kafka: cannot create producer: {}", errstr));
    }
    conf.release();  // owned by rk now
    impl_->rk = rk;
    impl_->main_q = rd_kafka_queue_get_main(rk);
    rd_kafka_queue_io_event_enable(impl_->main_q, impl_->wake_write_fd, "1", 1);
    // Anything enqueued before the io event was enabled wrote no byte: serve it now.
    impl_->poll_events(0);
    impl_->arm();
    if (impl_->transactional) impl_->txn_thread = std::thread([d = impl_.get()] { d->txn_work(); });
    log::info(mod, "event=producer_created brokers={} client_id={} transactional_id={}", log::quote(cfg.brokers),
              log::quote(cfg.client_id), log::quote(cfg.transactional_id));
}

kafka_sink::~kafka_sink() {
    auto& d = *impl_;
    d.discard_reports = true;
    if (d.txn_thread.joinable()) {
        {
            std::lock_guard<std::mutex> lock(d.txn_mu);
            d.txn_stop = true;
            d.txn_jobs.clear();
        }
        d.txn_cv.notify_all();
        // A commit in progress flushes: it waits for the loop (us) to serve
        // the delivery reports. Serve them until it returns (bounded by the
        // 5 s per call below), then join.
        rd_kafka_purge(d.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        while (!d.txn_idle.load()) d.poll_events(20);
        d.txn_thread.join();
    }
    // Purged records get __PURGE_QUEUE / __PURGE_INFLIGHT reports, which are
    // served below but reach nobody: nothing may be confirmed for them.
    rd_kafka_purge(d.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    std::size_t waiting = in_flight_ - std::min(in_flight_, d.synth.size());
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (in_flight_ > d.synth.size() && std::chrono::steady_clock::now() < deadline) d.poll_events(100);
    if (in_flight_ > d.synth.size())
        log::warn(mod, "event=destroy_reports_missing left={}", in_flight_ - d.synth.size());
    log::info(mod, "event=producer_destroyed purged={} unreported_failures={}", waiting, d.synth.size());
    rd_kafka_queue_io_event_enable(d.main_q, -1, nullptr, 0);
    rd_kafka_queue_destroy(d.main_q);
    for (auto& [name, rkt] : d.topics) rd_kafka_topic_destroy(rkt);
    d.topics.clear();
    rd_kafka_destroy(d.rk);
    ::close(d.wake_write_fd);
    boost::system::error_code ignored;
    d.wake_read.close(ignored);
}

void kafka_sink::prepare_topic(std::string_view topic) { (void)impl_->topic_handle(topic); }

void kafka_sink::produce(const outbox::record& rec, std::uint64_t tag) {
    auto& d = *impl_;
    const std::size_t bytes = rec.bytes();
    // Every outcome is a report, so the caller has one path for all of them:
    // here, from a later loop turn, with the record's counts already added.
    auto refuse = [&](rd_kafka_resp_err_t err) {
        ++in_flight_;
        bytes_in_flight_ += bytes;
        const outbox::header* id = rec.find(outbox::header_id);
        std::string event_id = id ? std::string(id->value) : std::string();
        std::optional<outbox::owned_record> copy;
        if (is_permanent(err)) copy.emplace(rec);
        d.synth.push_back({tag, err, std::string(rec.topic), bytes, std::move(event_id), std::move(copy)});
        d.post_synth();
    };
    // The fatal state can be set before its error op is served.
    if (failed_ || rd_kafka_fatal_error(d.rk, nullptr, 0) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        failed_ = true;
        refuse(RD_KAFKA_RESP_ERR__FATAL);
        return;
    }
    rd_kafka_topic_t* rkt = d.topic_handle(rec.topic);
    if (rkt == nullptr) {
        refuse(RD_KAFKA_RESP_ERR__INVALID_ARG);
        return;
    }
    rd_kafka_headers_t* hdrs = nullptr;
    if (!rec.headers.empty()) {
        hdrs = rd_kafka_headers_new(rec.headers.size());
        for (const auto& h : rec.headers)
            // A null value pointer is a null header value to librdkafka.
            rd_kafka_header_add(hdrs, h.name.data(), static_cast<ssize_t>(h.name.size()),
                                h.value_null ? nullptr : (h.value.data() ? h.value.data() : ""),
                                h.value_null ? 0 : static_cast<ssize_t>(h.value.size()));
    }
    // A null pointer means a null key/value to librdkafka; an empty but present
    // one needs a non-null pointer (a default string_view has none).
    static const char empty[1] = {0};
    const void* key = rec.key_null ? nullptr : (rec.key.data() ? rec.key.data() : empty);
    void* value = rec.value_null ? nullptr : const_cast<char*>(rec.value.data() ? rec.value.data() : empty);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        d.rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(key, rec.key_null ? 0 : rec.key.size()),
        RD_KAFKA_V_VALUE(value, rec.value_null ? 0 : rec.value.size()), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_PARTITION(rec.partition), RD_KAFKA_V_TIMESTAMP(rec.timestamp_ms),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::uintptr_t>(tag))), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++in_flight_;
        bytes_in_flight_ += bytes;
        return;
    }
    // On failure the headers are still ours.
    if (hdrs) rd_kafka_headers_destroy(hdrs);
    if (err == RD_KAFKA_RESP_ERR__FATAL) failed_ = true;
    log::warn(mod, "event=produce_refused tag={} topic={} err={} bytes={}", tag, log::quote(rec.topic),
              rd_kafka_err2name(err), bytes);
    refuse(err);
}

void kafka_sink::poll() { impl_->serve(); }

bool kafka_sink::flush(std::chrono::milliseconds timeout) {
    auto& d = *impl_;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        d.deliver_synth();
        if (in_flight_ == 0) return true;
        // Rounded up, so the loop never gives up while part of a millisecond is left.
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        d.poll_events(static_cast<int>(std::min<std::int64_t>(left.count(), 100)));
        d.rethrow_pending();
    }
}

void* kafka_sink::native_handle() const noexcept { return impl_->rk; }

bool kafka_sink::transactional() const noexcept { return impl_->transactional; }

// Each call blocks at most this long on the worker; a retriable timeout is
// resumed by calling again (librdkafka keeps the operation going).
constexpr int txn_call_ms = 5000;

void kafka_sink::init_transactions(txn_done done) {
    rd_kafka_t* rk = impl_->rk;
    impl_->txn_job([rk] { return rd_kafka_init_transactions(rk, txn_call_ms); }, std::move(done), "init_transactions");
}

std::string kafka_sink::begin_transaction() {
    rd_kafka_error_t* e = rd_kafka_begin_transaction(impl_->rk);
    if (!e) return {};
    std::string why = fmt::format("begin_transaction: {}: {}", rd_kafka_error_name(e), rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
    return why;
}

void kafka_sink::commit_transaction(txn_done done) {
    rd_kafka_t* rk = impl_->rk;
    impl_->txn_job([rk] { return rd_kafka_commit_transaction(rk, txn_call_ms); }, std::move(done),
                   "commit_transaction");
}

void kafka_sink::abort_transaction(txn_done done) {
    rd_kafka_t* rk = impl_->rk;
    impl_->txn_job([rk] { return rd_kafka_abort_transaction(rk, txn_call_ms); }, std::move(done),
                   "abort_transaction");
}

outbox::producer_fault classify_fatal(int rd_kafka_err) noexcept {
    switch (static_cast<rd_kafka_resp_err_t>(rd_kafka_err)) {
    // Another producer initialised our transactional.id: it took over.
    case RD_KAFKA_RESP_ERR__FENCED:
    case RD_KAFKA_RESP_ERR_PRODUCER_FENCED:
    case RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH:
        return outbox::producer_fault::fenced;
    // Authorisation and features: a new producer asks the same cluster the
    // same question and gets the same answer.
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION:
    case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_INVALID_TRANSACTION_TIMEOUT:
        return outbox::producer_fault::permanent;
    default:
        // Sequence desynchronisation, an unknown producer id, a fenced epoch
        // of the idempotent producer: a new producer (new id) starts clean.
        return outbox::producer_fault::healable;
    }
}

}  // namespace outbox::io
