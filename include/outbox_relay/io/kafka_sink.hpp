#pragma once
// Idempotent librdkafka producer whose delivery reports and errors are served
// on the Asio loop thread: the producer's main queue is bridged to a pipe with
// rd_kafka_queue_io_event_enable, and the loop waits on the pipe's read end
// and calls rd_kafka_poll(rk, 0) when it becomes readable. librdkafka's own
// threads never run relay code.
//
// Settings forced by the sink (a user -X cannot weaken them; rejected with a
// clear error instead): enable.idempotence=true, acks=all,
// message.timeout.ms=0 (records never time out inside the producer).
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace outbox::io {

struct kafka_header {
    std::string_view name;
    std::string_view value;
};

struct kafka_message {
    std::string_view topic;
    std::string_view key;
    bool key_null = false;
    std::string_view value;
    bool value_null = false;
    std::span<const kafka_header> headers;
};

// One delivery report, delivered on the loop thread.
struct delivery_report {
    std::uint64_t tag = 0;       // the tag given to produce()
    int err = 0;                 // rd_kafka_resp_err_t; 0 = persisted
    std::string error;           // rd_kafka_err2str, empty on success
    bool permanent = false;      // err != 0 and not retriable by re-producing (e.g. MSG_SIZE_TOO_LARGE)
    std::int32_t partition = -1;
    std::int64_t offset = -1;    // -1 when the broker answered DUPLICATE_SEQUENCE (still success)
    std::string_view topic;
    std::string event_id;        // value of the record's "id" header; filled on failures only
};

struct sink_config {
    std::string brokers;
    std::map<std::string, std::string> properties;  // user -X settings
    std::string client_id = "outbox-relay";
};

class kafka_sink {
public:
    enum class produce_result {
        ok,          // queued; exactly one delivery report will follow
        queue_full,  // librdkafka's queue is full: stop reading, retry later
        fatal,       // the producer hit a fatal error: recreate it
    };

    // Exactly one call per record produce() accepted (ok), also for failures
    // produce() saw at once. Runs inside rd_kafka_poll: it may call produce(),
    // but must not destroy the sink. `topic` is valid during the call only.
    // Permanent errors: MSG_SIZE_TOO_LARGE, RECORD_LIST_TOO_LARGE,
    // INVALID_RECORD, TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PART,
    // __UNKNOWN_TOPIC, __UNKNOWN_PARTITION, TOPIC_EXCEPTION, POLICY_VIOLATION,
    // INVALID_TIMESTAMP, UNSUPPORTED_FOR_MESSAGE_FORMAT, __INVALID_ARG.
    using report_handler = std::function<void(const delivery_report&)>;
    // Called on the loop for a fatal producer error (rd_kafka_fatal_error) and
    // at most once per sink; the sink accepts no more records afterwards.
    // Runs from its own loop turn, not inside rd_kafka_poll, so it may
    // destroy the sink.
    using fatal_handler = std::function<void(const std::string& reason)>;

    // Creates the producer. Throws std::runtime_error naming the property on
    // a configuration librdkafka rejects or that would weaken a forced setting.
    // `ioc` must outlive the sink. Handlers run on the thread running `ioc`.
    kafka_sink(boost::asio::io_context& ioc, const sink_config& cfg, report_handler on_report,
               fatal_handler on_fatal);
    // Purges what is queued and in flight (their reports are discarded) and
    // destroys the producer. Never confirm anything for purged records.
    ~kafka_sink();
    kafka_sink(const kafka_sink&) = delete;
    kafka_sink& operator=(const kafka_sink&) = delete;

    // Produces one record (copies key, value and headers). Loop thread only.
    produce_result produce(const kafka_message& msg, std::uint64_t tag);

    // Serves pending reports now (rd_kafka_poll(rk, 0)); the loop also does it
    // by itself whenever the queue wakes it.
    void poll();

    // Blocks the calling (loop) thread up to `timeout` until everything produced
    // has a report, serving reports meanwhile. Returns true when nothing is left.
    bool flush(std::chrono::milliseconds timeout);

    std::size_t in_flight() const noexcept { return in_flight_; }
    std::size_t bytes_in_flight() const noexcept { return bytes_in_flight_; }
    bool failed() const noexcept { return failed_; }

    // Fetches `topic`'s metadata into the producer's cache now (blocking, up
    // to `timeout`), so the first record to a topic not seen yet does not wait
    // for librdkafka's 1 s metadata refresh timer. Loop thread. Returns false
    // on timeout or error (harmless: produce() still works, just later).
    bool warm_topic(const std::string& topic, std::chrono::milliseconds timeout);

    // The librdkafka handle, for the dedupe reader and for tests.
    void* native_handle() const noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
    std::size_t in_flight_ = 0;
    std::size_t bytes_in_flight_ = 0;
    bool failed_ = false;
    friend struct impl;
};

}  // namespace outbox::io
