#pragma once
// The relay: wires the replication stream, the pgoutput decoder, the outbox
// mapping, the Kafka sink and the checkpoint tracker on one io_context, and
// supervises them (reconnects, producer recreation, graceful drain).
#include "outbox_relay/config.hpp"

#include <boost/asio/io_context.hpp>

#include <memory>
#include <string>

namespace outbox::io {

// Process exit codes besides the set-up ones of pg_setup.hpp (10-16).
enum class relay_exit : int {
    ok = 0,
    runtime = 1,            // unexpected failure (message logged)
    usage = 2,              // bad command line / configuration
    kafka_config = 20,      // librdkafka rejected the producer configuration
    record_rejected = 21,   // Kafka refused a record for good (event id logged); nothing past it confirmed
    protocol = 22,          // undecodable replication data or unexpected message (LSN logged)
    outbox_schema = 23,     // the outbox relation lost a mapped column mid-stream
    slot = 24,              // slot missing/invalidated while streaming
};

class relay {
public:
    // `ioc` must outlive the relay; everything runs on the thread running `ioc`.
    relay(boost::asio::io_context& ioc, relay_config cfg);
    ~relay();
    relay(const relay&) = delete;
    relay& operator=(const relay&) = delete;

    // Creates the producer and starts streaming. Throws std::runtime_error on a
    // producer configuration librdkafka rejects.
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
