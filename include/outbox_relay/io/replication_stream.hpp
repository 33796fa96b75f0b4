#pragma once
// libpq logical replication connection (replication=database) driven by an
// Asio io_context: every libpq call is non-blocking and the loop waits on
// PQsocket readiness. One stream = one connection attempt; the relay makes a
// new stream to reconnect.
#include "outbox_relay/lsn.hpp"
#include "outbox_relay/walsender.hpp"

#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace outbox::io {

struct stream_options {
    std::string conninfo;       // user's conninfo; replication=database is added
    std::string password;       // --postgres-password-file's content (empty: none); never logged
    std::string slot;
    std::string publication;
    int proto_version = 1;
    bool messages = true;
    std::string application_name = "outbox-relay";
    // libpq tcp_user_timeout (ms; 0 = the kernel's default): how long sent data
    // may stay unacknowledged before the kernel drops the connection. This
    // is what notices a dead path while reading is paused (a status update
    // is then always outstanding, so keepalive probes never fire).
    int tcp_user_timeout_ms = 0;
};

enum class stream_error_kind {
    connection_lost,  // socket closed, server restarted, network: retry with backoff
    slot_busy,        // "replication slot ... is active for PID n" (55006): retry (standby)
    fatal,            // anything else: slot missing/invalidated, permissions, protocol
};

struct stream_error {
    stream_error_kind kind;
    std::string message;  // one line, server's primary message when there is one
    std::string sqlstate;
};

// What the server said while the stream was set up.
struct stream_info {
    lsn slot_confirmed;          // the slot's confirmed_flush_lsn, read just before starting
    std::string system_id;       // IDENTIFY_SYSTEM systemid (the cluster's, shared by its physical standbys)
    std::uint32_t timeline = 0;  // IDENTIFY_SYSTEM timeline
    std::string database;        // IDENTIFY_SYSTEM dbname
    lsn server_wal_end;          // IDENTIFY_SYSTEM xlogpos
    int server_version = 0;      // PQserverVersion, e.g. 150018
};

struct stream_handlers {
    // The stream is live: START_REPLICATION succeeded.
    std::function<void(const stream_info& info)> on_started;
    // One CopyData message from the server ('w' XLogData or 'k' keepalive,
    // see walsender.hpp), unparsed; `frame` is valid only during the call.
    std::function<void(std::string_view frame)> on_copy_data;
    // Every complete frame the socket had has been handed over (called after
    // a read that delivered at least one): a quiet moment, e.g. to commit.
    std::function<void()> on_idle;
    // The stream ended (error or server closed). Called once; no other handler
    // runs afterwards.
    std::function<void(const stream_error& e)> on_closed;
};

class replication_stream {
public:
    // `ioc` must outlive the stream; handlers run on the thread running `ioc`.
    replication_stream(boost::asio::io_context& ioc, stream_options opts, stream_handlers h);
    ~replication_stream();  // closes the connection without further callbacks
    replication_stream(const replication_stream&) = delete;
    replication_stream& operator=(const replication_stream&) = delete;

    // Connects (PQconnectStart/PQconnectPoll), reads the slot's confirmed
    // position, sends START_REPLICATION ... LOGICAL `from` with pgoutput options.
    void start(lsn from);

    // Backpressure: stop / resume reading CopyData. While paused the stream
    // still writes status updates (invariant 5).
    void pause_reading();
    void resume_reading();
    bool reading_paused() const noexcept;

    // Queues a standby status update ('r') and flushes it without blocking.
    void send_status(const walsender::status_update& s);

    // Ends the copy (PQputCopyEnd) after flushing queued status updates, then
    // closes. on_closed is not called for a stop the caller asked for. `done`
    // runs when the connection is closed (or at once if it already was).
    void stop(std::function<void()> done);

    bool streaming() const noexcept;

private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

}  // namespace outbox::io
