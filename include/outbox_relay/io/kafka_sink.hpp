#pragma once
// Idempotent librdkafka producer whose delivery reports and errors are served
// on the Asio loop thread: the producer's main queue is bridged to a pipe with
// rd_kafka_queue_io_event_enable, and the loop waits on the pipe's read end
// and calls rd_kafka_poll(rk, 0) when it becomes readable. librdkafka's own
// threads never run relay code.
//
// Settings forced by the sink (config.hpp's refused_kafka_property() keeps a
// user from setting them; the sink sets them last anyway):
// enable.idempotence=true, acks=all, message.timeout.ms=0 (records never time
// out inside the producer), and librdkafka's queue limits from sink_config.
#include "outbox_relay/record.hpp"
#include "outbox_relay/relay_session.hpp"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace outbox::io {

// One delivery report, delivered on the loop thread.
struct delivery_report {
    std::uint64_t tag = 0;       // the tag given to produce()
    int err = 0;                 // rd_kafka_resp_err_t; 0 = persisted
    std::string error;           // rd_kafka_err2str, empty on success
    outbox::delivery_status status = outbox::delivery_status::ok;
    std::size_t bytes = 0;       // record::bytes() of the record
    std::int32_t partition = -1;
    std::int64_t offset = -1;    // -1 when the broker answered DUPLICATE_SEQUENCE (still success)
    std::string_view topic;
    std::string event_id;        // value of the record's "id" header; filled on failures only
    outbox::refusal why = outbox::refusal::other;  // permanent failures: which kind
    bool local = false;          // refused by librdkafka at produce time (never reached a broker)
    outbox::record rec;          // failures: the record as produced; valid during the report only

    bool permanent() const noexcept { return status == outbox::delivery_status::permanent; }
};

struct sink_config {
    std::string brokers;
    std::map<std::string, std::string> properties;  // user -X settings
    std::string client_id = "outbox-relay";
    // librdkafka's own queue limits (queue.buffering.max.messages / .kbytes);
    // 0 keeps librdkafka's default. The relay sizes them above its in-flight
    // limits so that librdkafka never refuses a record first.
    std::size_t queue_max_messages = 0;
    std::size_t queue_max_kbytes = 0;
    // Non-empty: a transactional producer with this transactional.id (the
    // transaction methods below); empty: the idempotent producer only.
    std::string transactional_id;
    // Set: statistics.interval.ms defaults to 5000 (-X may change it) and
    // every statistics JSON document is handed over, on the loop thread,
    // valid during the call.
    std::function<void(std::string_view json)> on_stats;
    // librdkafka's __ALL_BROKERS_DOWN error (every one of them, not rate
    // limited), on the loop thread.
    std::function<void(std::string_view reason)> on_all_brokers_down;
};

// The outcome of a transaction call, on the loop thread.
struct txn_result {
    enum class kind {
        ok,
        retriable,  // timed out or not yet possible: call again later (commit resumes)
        abortable,  // the transaction must be aborted (a record failed in it)
        fatal,      // the producer is done (fenced, authorisation, ...)
    } status = kind::ok;
    bool fenced = false;  // another producer with the same transactional.id took over
    std::string message;
};

class kafka_sink {
public:
    // Exactly one call per record given to produce(), also for failures
    // produce() saw at once (a full queue, an unknown topic, a record too
    // large), which are delivered from a later loop turn. Runs inside
    // rd_kafka_poll: it may call produce(), but must not destroy the sink.
    // `topic` is valid during the call only. Permanent errors (status
    // permanent): MSG_SIZE_TOO_LARGE, RECORD_LIST_TOO_LARGE, INVALID_RECORD,
    // TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PART, __UNKNOWN_TOPIC,
    // __UNKNOWN_PARTITION, TOPIC_EXCEPTION, POLICY_VIOLATION,
    // INVALID_TIMESTAMP, UNSUPPORTED_FOR_MESSAGE_FORMAT, __INVALID_ARG; every
    // other failure is transient.
    using report_handler = std::function<void(const delivery_report&)>;
    // Called on the loop for a fatal producer error (rd_kafka_fatal_error) and
    // at most once per sink; the sink fails every later record. Runs from its
    // own loop turn, not inside rd_kafka_poll, so it may destroy the sink.
    // `fault` says whether a new producer can heal it (see classify_fatal).
    using fatal_handler = std::function<void(outbox::producer_fault fault, const std::string& reason)>;

    // Creates the producer. Throws std::runtime_error naming the property on
    // a configuration librdkafka rejects or that tries to set a property the
    // relay forces. `ioc` must outlive the sink. Handlers run on the thread
    // running `ioc`.
    kafka_sink(boost::asio::io_context& ioc, const sink_config& cfg, report_handler on_report,
               fatal_handler on_fatal);
    // Purges what is queued and in flight (their reports are discarded) and
    // destroys the producer. Never confirm anything for purged records.
    ~kafka_sink();
    kafka_sink(const kafka_sink&) = delete;
    kafka_sink& operator=(const kafka_sink&) = delete;

    // Produces one record (copies topic, key, value and headers); exactly one
    // report follows. Loop thread only. The first record to a topic creates
    // the topic's handle, which asks the brokers for its metadata at once
    // (asynchronously) rather than at librdkafka's next periodic refresh.
    void produce(const outbox::record& rec, std::uint64_t tag);

    // Creates the topic's handle now (see produce), so that its metadata is
    // there before its first record. Loop thread only; never blocks.
    void prepare_topic(std::string_view topic);

    // Serves pending reports now (rd_kafka_poll(rk, 0)); the loop also does it
    // by itself whenever the queue wakes it.
    void poll();

    // Blocks the calling (loop) thread up to `timeout` until everything produced
    // has a report, serving reports meanwhile. Returns true when nothing is left.
    bool flush(std::chrono::milliseconds timeout);

    std::size_t in_flight() const noexcept { return in_flight_; }
    std::size_t bytes_in_flight() const noexcept { return bytes_in_flight_; }
    bool failed() const noexcept { return failed_; }

    // Transactions (transactional_id set). init/commit/abort run on the
    // sink's own worker thread (they block on the brokers) and `done` runs on
    // the loop afterwards, never after the sink is destroyed. One at a time;
    // no produce() while a commit or abort runs. begin_transaction is local
    // and returns at once (empty string: ok, else why not).
    using txn_done = std::function<void(txn_result)>;
    void init_transactions(txn_done done);
    std::string begin_transaction();
    void commit_transaction(txn_done done);
    void abort_transaction(txn_done done);
    bool transactional() const noexcept;

    // The librdkafka handle, for tests.
    void* native_handle() const noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
    std::size_t in_flight_ = 0;
    std::size_t bytes_in_flight_ = 0;
    bool failed_ = false;
    friend struct impl;
};

// Whether a fatal producer error (rd_kafka_fatal_error's code, an
// rd_kafka_resp_err_t) can be healed by a new producer. Authorisation,
// unsupported features and configuration errors cannot; a fenced producer
// (another one took over its transactional.id) is producer_fault::fenced.
outbox::producer_fault classify_fatal(int rd_kafka_err) noexcept;

}  // namespace outbox::io
