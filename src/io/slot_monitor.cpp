// The slot's WAL figures, read off the loop (slot_monitor.hpp).
#include "outbox_relay/io/slot_monitor.hpp"

#include "outbox_relay/io/pg_params.hpp"

#include <boost/asio/post.hpp>
#include <libpq-fe.h>

#include <condition_variable>
#include <mutex>

namespace outbox::io {

namespace {

std::string one_line(std::string_view s) {
    std::string out;
    for (char c : s) out += (c == '\n' || c == '\r') ? ' ' : c;
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

// On a standby pg_current_wal_lsn() fails; there the received position is
// what the slot's WAL is measured against.
constexpr const char* slot_query =
    "SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() "
    "ELSE pg_current_wal_lsn() END, restart_lsn)::bigint, coalesce(wal_status, ''), safe_wal_size, active_pid "
    "FROM pg_replication_slots WHERE slot_name = $1";

}  // namespace

void close_slot_connection(void** conn) noexcept {
    if (*conn) PQfinish(static_cast<PGconn*>(*conn));
    *conn = nullptr;
}

slot_status read_slot_status(const slot_monitor_options& o, void** conn_io) {
    slot_status st;
    auto* conn = static_cast<PGconn*>(*conn_io);
    if (conn && PQstatus(conn) != CONNECTION_OK) {
        close_slot_connection(conn_io);
        conn = nullptr;
    }
    if (!conn) {
        const pg_params params(o.conninfo, o.password, {{"connect_timeout", "5"}, {"tcp_user_timeout", "10000"}},
                               {{"application_name", "outbox-relay-slot-status"}});
        conn = PQconnectdbParams(params.keys(), params.values(), /*expand_dbname=*/1);
        *conn_io = conn;
        if (!conn || PQstatus(conn) != CONNECTION_OK) {
            st.error = "cannot connect: " + (conn ? one_line(PQerrorMessage(conn)) : std::string("out of memory"));
            close_slot_connection(conn_io);
            return st;
        }
        PGresult* r = PQexec(conn, "SET statement_timeout = 5000");
        PQclear(r);
    }
    const char* vals[] = {o.slot.c_str()};
    PGresult* r = PQexecParams(conn, slot_query, 1, nullptr, vals, nullptr, nullptr, 0);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        st.error = "cannot read pg_replication_slots: " +
                   (r ? one_line(PQresultErrorMessage(r)) : one_line(PQerrorMessage(conn)));
        PQclear(r);
        close_slot_connection(conn_io);
        return st;
    }
    if (PQntuples(r) != 1) {
        st.error = "replication slot " + o.slot + " does not exist";
        PQclear(r);
        return st;
    }
    st.ok = true;
    if (!PQgetisnull(r, 0, 0)) st.retained_wal = std::stoll(PQgetvalue(r, 0, 0));
    st.wal_status = PQgetvalue(r, 0, 1);
    if (!PQgetisnull(r, 0, 2)) st.safe_wal_size = std::stoll(PQgetvalue(r, 0, 2));
    if (!PQgetisnull(r, 0, 3)) st.active_pid = std::stoi(PQgetvalue(r, 0, 3));
    PQclear(r);
    return st;
}

struct slot_monitor::shared {
    std::mutex mu;
    std::condition_variable cv;
    bool stopped = false;
};

slot_monitor::slot_monitor(boost::asio::io_context& ioc, slot_monitor_options o, handler on_status)
    : shared_(std::make_shared<shared>()) {
    thread_ = std::thread([sh = shared_, &ioc, o = std::move(o), on_status = std::move(on_status)] {
        void* conn = nullptr;
        for (;;) {
            slot_status st = read_slot_status(o, &conn);
            std::unique_lock<std::mutex> lock(sh->mu);
            if (sh->stopped) break;
            // Posted under the lock: once the destructor has set `stopped`
            // (under the same lock), nothing more reaches the loop.
            boost::asio::post(ioc, [sh, on_status, st = std::move(st)] {
                {
                    std::lock_guard<std::mutex> g(sh->mu);
                    if (sh->stopped) return;
                }
                on_status(st);
            });
            sh->cv.wait_for(lock, o.interval, [&] { return sh->stopped; });
            if (sh->stopped) break;
        }
        close_slot_connection(&conn);
    });
}

slot_monitor::~slot_monitor() {
    {
        std::lock_guard<std::mutex> g(shared_->mu);
        shared_->stopped = true;
    }
    shared_->cv.notify_all();
    // Waiting: joined at once. Inside a read: left to finish by itself.
    thread_.detach();
}

}  // namespace outbox::io
