#pragma once
// The relay shell: feeds I/O events (replication frames, delivery reports,
// tail-scan results, timer ticks, signals) into the pure relay_session and
// executes the commands it returns, on one io_context. It decides nothing;
// every rule is the session's (relay_session.hpp).
#include "outbox_relay/config.hpp"
#include "outbox_relay/exit_code.hpp"

#include <boost/asio/io_context.hpp>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

namespace outbox::io {

// A start-up failure with the exit code it maps to (kafka_config when
// librdkafka rejects the producer configuration, metrics_listen when the
// HTTP endpoint cannot listen).
struct start_error : std::runtime_error {
    start_error(exit_code c, const std::string& what) : std::runtime_error(what), code(c) {}
    exit_code code;
};

// Runs `body` (main's whole life: set-up and the loop) and returns its exit
// code. An exception escaping it, e.g. from a loop handler (descriptors or
// memory exhausted), is logged as one line and becomes exit_code::runtime
// (1) instead of std::terminate.
int run_guarded(const std::function<int()>& body) noexcept;

class relay {
public:
    // `ioc` must outlive the relay; everything runs on the thread running `ioc`.
    relay(boost::asio::io_context& ioc, relay_config cfg);
    ~relay();
    relay(const relay&) = delete;
    relay& operator=(const relay&) = delete;

    // Before start(): pg_setup created the slot at this start (see
    // relay_session::set_slot_created).
    void set_slot_created(bool created);

    // Before start(): the transactional.id of this source's producer (used
    // with kafka-transactions in exactly-once mode): one per cluster,
    // database and slot, so a standby of the same slot fences a paused
    // predecessor.
    void set_transactional_id(std::string id);

    // Creates the producer and the metrics endpoint and starts streaming.
    // Throws start_error.
    void start();

    // Graceful stop (SIGTERM/SIGINT): finish the transaction being received,
    // stop reading, wait up to drain_timeout for acks, send the final status
    // update, close. The io_context runs out of work afterwards.
    void shutdown();

    // True once the relay has closed everything after shutdown() or a fatal
    // error; the caller may then stop running the io_context.
    bool stopped() const noexcept;

    // Exit code once stopped.
    int exit_code() const noexcept;

    // Prometheus text of the relay's metrics (loop thread).
    std::string metrics_text() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace outbox::io
