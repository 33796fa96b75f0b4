// Idempotent librdkafka producer served on the Asio loop thread.
//
// How reports reach the loop: librdkafka writes one byte into a pipe whenever
// an op (delivery report, error) is enqueued on the previously empty main
// queue (rd_kafka_queue_io_event_enable). The loop waits on the pipe's read
// end, drains it completely, re-arms the wait and only then calls
// rd_kafka_poll(rk, 0), which serves every op queued so far. An op enqueued
// after that poll found the queue empty makes the queue non-empty again and
// therefore writes a new byte: no wake-up is lost. A byte that arrives for an
// op already served costs one empty poll.
#include "outbox_relay/io/kafka_sink.hpp"

#include "outbox_relay/io/log.hpp"
#include "outbox_relay/outbox.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <librdkafka/rdkafka.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <stdexcept>
#include <unordered_map>

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

// Values of these properties never appear in an error message or log.
bool is_secret(std::string_view name) noexcept {
    return name.find("password") != std::string_view::npos || name.find("secret") != std::string_view::npos ||
           name.find("sasl.oauthbearer.config") != std::string_view::npos ||
           name.find("ssl.key.pem") != std::string_view::npos || name == "ssl_key";
}

std::string shown_value(std::string_view name, std::string_view value) {
    return is_secret(name) ? std::string("********") : std::string(value);
}

// librdkafka's bool parser accepts true/t/1 and false/f/0.
bool is_true(std::string_view v) noexcept { return v == "true" || v == "t" || v == "1"; }

// Rejects a user setting that would weaken what the sink guarantees: order and
// no duplicates from retries (idempotence, acks=all) and no silent drop inside
// the producer (no message timeout). Transactions are a different protocol.
void check_not_weakened(const std::string& name, const std::string& value) {
    auto refuse = [&](std::string_view why) {
        throw std::runtime_error(fmt::format("kafka property {}={} is not allowed: {}", name,
                                             shown_value(name, value), why));
    };
    if (name == "enable.idempotence" && !is_true(value))
        refuse("the sink requires enable.idempotence=true (per-key order, no duplicates from retries)");
    if ((name == "acks" || name == "request.required.acks") && value != "all" && value != "-1")
        refuse("the sink requires acks=all");
    if ((name == "message.timeout.ms" || name == "delivery.timeout.ms") && value != "0")
        refuse("the sink requires message.timeout.ms=0 (records never time out inside the producer)");
    if (name == "transactional.id") refuse("the sink uses the idempotent producer, not transactions");
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

std::size_t record_bytes(const kafka_message& msg) noexcept {
    std::size_t n = msg.key.size() + msg.value.size();
    for (const auto& h : msg.headers) n += h.name.size() + h.value.size();
    return n;
}

// The same measure as record_bytes, from what librdkafka hands back.
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
    std::string topic_buf;          // NUL-terminated copy of the topic for producev
    // A handler that throws inside a librdkafka callback must not unwind
    // through C frames; it is rethrown once rd_kafka_poll has returned.
    std::exception_ptr pending_exception;
    std::unordered_map<int, warn_state> warns;

    impl(kafka_sink& s, boost::asio::io_context& io, report_handler r, fatal_handler f)
        : self(s), ioc(io), on_report(std::move(r)), on_fatal(std::move(f)), wake_read(io) {}

    static void dr_cb(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
        static_cast<impl*>(opaque)->on_delivery(const_cast<rd_kafka_message_t*>(m));
    }
    static void error_cb(rd_kafka_t*, int err, const char* reason, void* opaque) {
        static_cast<impl*>(opaque)->on_error(static_cast<rd_kafka_resp_err_t>(err), reason);
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
        if (m->err) {
            r.error = rd_kafka_err2str(m->err);
            r.permanent = is_permanent(m->err);
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
                       rd_kafka_err2name(m->err), log::quote(r.error), r.permanent);
        }
        r.partition = m->partition;
        // RD_KAFKA_OFFSET_INVALID when the broker answered DUPLICATE_SEQUENCE_NUMBER.
        r.offset = m->offset < 0 ? -1 : m->offset;
        r.topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "";
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
            log::error(mod, "event=fatal_error err={} reason={} in_flight={}", rd_kafka_err2name(fatal),
                       log::quote(buf), self.in_flight_);
            post_fatal(std::move(why));
            return;
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
    void post_fatal(std::string why) {
        if (fatal_reported) return;
        fatal_reported = true;
        boost::asio::post(ioc, [w = std::weak_ptr<int>(alive), this, why = std::move(why)] {
            if (w.expired() || discard_reports) return;
            if (on_fatal) on_fatal(why);
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
            r.error = rd_kafka_err2str(s.err);
            r.permanent = is_permanent(s.err);
            r.topic = s.topic;
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

    void serve() {
        rd_kafka_poll(rk, 0);
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
    if (!cfg.brokers.empty()) set_prop(conf.get(), "bootstrap.servers", cfg.brokers);
    set_prop(conf.get(), "client.id", cfg.client_id);
    for (const auto& [name, value] : cfg.properties) {
        check_not_weakened(name, value);
        set_prop(conf.get(), name, value);
    }
    // Forced last so nothing above can change them.
    set_prop(conf.get(), "enable.idempotence", "true");
    set_prop(conf.get(), "acks", "all");
    set_prop(conf.get(), "message.timeout.ms", "0");

    rd_kafka_conf_set_opaque(conf.get(), impl_.get());
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &impl::dr_cb);
    rd_kafka_conf_set_error_cb(conf.get(), &impl::error_cb);
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
    rd_kafka_poll(rk, 0);
    impl_->arm();
    log::info(mod, "event=producer_created brokers={} client_id={}", log::quote(cfg.brokers),
              log::quote(cfg.client_id));
}

kafka_sink::~kafka_sink() {
    auto& d = *impl_;
    d.discard_reports = true;
    // Purged records get __PURGE_QUEUE / __PURGE_INFLIGHT reports, which are
    // served below but reach nobody: nothing may be confirmed for them.
    rd_kafka_purge(d.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    std::size_t waiting = in_flight_ - std::min(in_flight_, d.synth.size());
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (in_flight_ > d.synth.size() && std::chrono::steady_clock::now() < deadline) rd_kafka_poll(d.rk, 100);
    if (in_flight_ > d.synth.size())
        log::warn(mod, "event=destroy_reports_missing left={}", in_flight_ - d.synth.size());
    log::info(mod, "event=producer_destroyed purged={} unreported_failures={}", waiting, d.synth.size());
    rd_kafka_queue_io_event_enable(d.main_q, -1, nullptr, 0);
    rd_kafka_queue_destroy(d.main_q);
    rd_kafka_destroy(d.rk);
    ::close(d.wake_write_fd);
    boost::system::error_code ignored;
    d.wake_read.close(ignored);
}

kafka_sink::produce_result kafka_sink::produce(const kafka_message& msg, std::uint64_t tag) {
    auto& d = *impl_;
    // The fatal state can be set before its error op is served.
    if (failed_ || rd_kafka_fatal_error(d.rk, nullptr, 0) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        failed_ = true;
        return produce_result::fatal;
    }
    rd_kafka_headers_t* hdrs = nullptr;
    if (!msg.headers.empty()) {
        hdrs = rd_kafka_headers_new(msg.headers.size());
        for (const auto& h : msg.headers)
            rd_kafka_header_add(hdrs, h.name.data(), static_cast<ssize_t>(h.name.size()), h.value.data(),
                                static_cast<ssize_t>(h.value.size()));
    }
    d.topic_buf.assign(msg.topic);
    // A null pointer means a null key/value to librdkafka; an empty but present
    // one needs a non-null pointer (a default string_view has none).
    static const char empty[1] = {0};
    const void* key = msg.key_null ? nullptr : (msg.key.data() ? msg.key.data() : empty);
    void* value = msg.value_null ? nullptr : const_cast<char*>(msg.value.data() ? msg.value.data() : empty);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        d.rk, RD_KAFKA_V_TOPIC(d.topic_buf.c_str()), RD_KAFKA_V_KEY(key, msg.key_null ? 0 : msg.key.size()),
        RD_KAFKA_V_VALUE(value, msg.value_null ? 0 : msg.value.size()), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::uintptr_t>(tag))), RD_KAFKA_V_END);
    std::size_t bytes = record_bytes(msg);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++in_flight_;
        bytes_in_flight_ += bytes;
        return produce_result::ok;
    }
    // On failure the headers are still ours.
    if (hdrs) rd_kafka_headers_destroy(hdrs);
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) return produce_result::queue_full;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        failed_ = true;
        return produce_result::fatal;
    }
    log::warn(mod, "event=produce_refused tag={} topic={} err={} bytes={}", tag, log::quote(msg.topic),
              rd_kafka_err2name(err), bytes);
    ++in_flight_;
    bytes_in_flight_ += bytes;
    std::string event_id;
    for (const auto& h : msg.headers)
        if (h.name == outbox::header_id) event_id = h.value;
    d.synth.push_back({tag, err, std::string(msg.topic), bytes, std::move(event_id)});
    d.post_synth();
    return produce_result::ok;
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
        rd_kafka_poll(d.rk, static_cast<int>(std::min<std::int64_t>(left.count(), 100)));
        d.rethrow_pending();
    }
}

void* kafka_sink::native_handle() const noexcept { return impl_->rk; }

bool kafka_sink::warm_topic(const std::string& topic, std::chrono::milliseconds timeout) {
    // A metadata request for one topic: its answer lands in the handle's
    // metadata cache, which the partitioner reads on the next produce().
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(impl_->rk, topic.c_str(), nullptr);
    if (rkt == nullptr) return false;
    const struct rd_kafka_metadata* md = nullptr;
    const auto err = rd_kafka_metadata(impl_->rk, 0, rkt, &md, static_cast<int>(timeout.count()));
    bool ok = err == RD_KAFKA_RESP_ERR_NO_ERROR && md != nullptr && md->topic_cnt == 1 &&
              md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR;
    if (md != nullptr) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return ok;
}

}  // namespace outbox::io
