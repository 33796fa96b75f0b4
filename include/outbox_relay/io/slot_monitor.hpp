#pragma once
// Reads the replication slot's WAL figures (retained WAL, wal_status,
// safe_wal_size, active PID) every `interval` over an ordinary (not
// replication) libpq connection, on its own thread, and posts each result to
// the loop: the loop never waits on it. A failed read (Postgres down, slot
// gone) is reported too (slot_status::ok false) and retried next interval on
// a new connection.
#include "outbox_relay/relay_session.hpp"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace outbox::io {

struct slot_monitor_options {
    std::string conninfo;
    std::string password;  // --postgres-password-file's content, or empty
    std::string slot;
    std::chrono::milliseconds interval{5000};
};

// One read, blocking (bounded by connect_timeout 5 s unless the conninfo
// says otherwise, a 5 s statement_timeout and tcp_user_timeout). Also used
// by `outbox-relay status`. `conn` is an opaque connection kept between
// calls (null at first); close it with close_slot_connection.
slot_status read_slot_status(const slot_monitor_options& o, void** conn);
void close_slot_connection(void** conn) noexcept;

class slot_monitor {
public:
    using handler = std::function<void(const slot_status&)>;
    // Starts the thread; `on_status` runs on `ioc`'s thread. `ioc` must
    // outlive the monitor. Loop thread only.
    slot_monitor(boost::asio::io_context& ioc, slot_monitor_options o, handler on_status);
    // No handler runs after this returns. A read in progress is not waited
    // for (a dead network could hold it for seconds): its thread finishes on
    // its own and posts nothing.
    ~slot_monitor();
    slot_monitor(const slot_monitor&) = delete;
    slot_monitor& operator=(const slot_monitor&) = delete;

private:
    struct shared;
    std::shared_ptr<shared> shared_;
    std::thread thread_;
};

}  // namespace outbox::io
