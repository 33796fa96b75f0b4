// libpq logical replication connection on an Asio loop. Every libpq call is
// non-blocking; the loop waits on PQsocket readiness through a
// stream_descriptor that never owns the fd (libpq does: we release() it
// before the descriptor goes away).
//
// State machine:
//   idle -> connecting (PQconnectPoll) -> identifying (IDENTIFY_SYSTEM)
//        -> querying_slot (confirmed_flush_lsn)
//        -> starting (START_REPLICATION) -> streaming (CopyBoth)
//        -> stopping (after stop(): CopyDone, drain, PQfinish) -> closed
// Any error moves to closed and reports on_closed once; a stop the caller
// asked for, and the destructor, close without on_closed.
#include "outbox_relay/io/replication_stream.hpp"

#include "outbox_relay/io/log.hpp"
#include "outbox_relay/io/pg_params.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <libpq-fe.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <utility>
#include <variant>

namespace outbox::io {

namespace {

constexpr std::string_view mod = "pg/stream";
// How long stop() waits for the server to answer CopyDone before closing anyway.
constexpr std::chrono::seconds stop_deadline{5};
// libpq enforces connect_timeout only in its blocking calls; an async client
// must time the set-up itself (a black-holed host would hang forever).
constexpr std::chrono::seconds setup_deadline{30};

// libpq messages end with '\n' and may span lines ("FATAL: ...\nDETAIL: ...");
// logs and stream_error want one line.
std::string one_line(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) out += (c == '\n' || c == '\r') ? ' ' : c;
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

struct pg_result_deleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using result_ptr = std::unique_ptr<PGresult, pg_result_deleter>;

struct pg_mem_deleter {
    void operator()(char* p) const noexcept { PQfreemem(p); }
};
using pg_mem_ptr = std::unique_ptr<char, pg_mem_deleter>;

bool is_connection_sqlstate(std::string_view s) {
    // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
    // class 08 connection exceptions: the server or the network went away,
    // which a reconnect with backoff can cure.
    return s.empty() || s == "57P01" || s == "57P02" || s == "57P03" || s.starts_with("08");
}

}  // namespace

struct replication_stream::impl : std::enable_shared_from_this<impl> {
    enum class state { idle, connecting, identifying, querying_slot, starting, streaming, stopping, closed };

    impl(boost::asio::io_context& ioc, stream_options o, stream_handlers h)
        : ioc_(ioc), opts_(std::move(o)), handlers_(std::move(h)) {}

    ~impl() { close_connection(); }

    boost::asio::io_context& ioc_;
    stream_options opts_;
    stream_handlers handlers_;

    PGconn* conn_ = nullptr;
    state state_ = state::idle;
    lsn from_;
    stream_info info_;
    bool slot_row_seen_ = false;

    // Socket watching. `sd_gen_` changes whenever the descriptor is replaced
    // so completions of waits on the old one are ignored even when they were
    // already queued as successful.
    std::optional<boost::asio::posix::stream_descriptor> sd_;
    std::uint64_t sd_gen_ = 0;
    bool read_wait_ = false;
    bool write_wait_ = false;

    // Connect phase: what PQconnectPoll asked for last.
    PostgresPollingStatusType poll_ = PGRES_POLLING_WRITING;

    // Write path.
    bool paused_ = false;
    bool need_flush_ = false;                            // PQflush returned 1
    std::optional<walsender::status_update> pending_;    // PQputCopyData would block
    bool copy_end_pending_ = false;                      // PQputCopyEnd would block
    bool server_copy_done_ = false;                      // stopping: server's CopyDone seen

    // Deadline for connect + slot query + START_REPLICATION.
    std::optional<boost::asio::steady_timer> setup_timer_;

    // stop()
    std::optional<boost::asio::steady_timer> stop_timer_;
    std::function<void()> stop_done_;

    // ---------------------------------------------------------------- setup

    void start(lsn from) {
        if (state_ != state::idle) return;
        from_ = from;
        state_ = state::connecting;
        // Work happens on the loop, so no handler ever runs inside start().
        boost::asio::post(ioc_, [self = shared_from_this()] {
            if (self->state_ == state::connecting && !self->conn_) self->begin_connect();
        });
    }

    void begin_connect() {
        setup_timer_.emplace(ioc_);
        setup_timer_->expires_after(setup_deadline);
        std::weak_ptr<impl> weak = shared_from_this();
        setup_timer_->async_wait([weak](const boost::system::error_code& ec) {
            auto self = weak.lock();
            if (ec || !self) return;
            auto st = self->state_;
            if (st == state::connecting || st == state::identifying || st == state::querying_slot ||
                st == state::starting)
                self->fail(stream_error_kind::connection_lost,
                           fmt::format("no replication stream after {} s (phase {})", setup_deadline.count(),
                                       st == state::connecting      ? "connect"
                                       : st == state::identifying   ? "IDENTIFY_SYSTEM"
                                       : st == state::querying_slot ? "slot query"
                                                                    : "START_REPLICATION"),
                           "");
        });

        // Parse first so a typo is reported as fatal (never retried) and
        // without echoing the string, which may hold a password.
        char* perr = nullptr;
        PQconninfoOption* parsed = PQconninfoParse(opts_.conninfo.c_str(), &perr);
        if (!parsed) {
            if (perr) PQfreemem(perr);
            fail(stream_error_kind::fatal, "invalid connection string (libpq could not parse it)", "");
            return;
        }
        PQconninfoFree(parsed);

        // Keywords before dbname are defaults the user's string may override;
        // later ones override it, so replication=database always wins. TCP
        // keepalives (idle 20 s, then 3 probes 5 s apart) notice a network
        // that died silently: an idle walsender may send nothing for long.
        const std::string user_timeout = std::to_string(opts_.tcp_user_timeout_ms);
        const pg_params params(opts_.conninfo, opts_.password,
                               {{"keepalives", "1"},
                                {"keepalives_idle", "20"},
                                {"keepalives_interval", "5"},
                                {"keepalives_count", "3"},
                                {"tcp_user_timeout", user_timeout}},
                               {{"replication", "database"},
                                {"application_name", opts_.application_name},
                                {"client_encoding", "UTF8"}});
        conn_ = PQconnectStartParams(params.keys(), params.values(), /*expand_dbname=*/1);
        if (!conn_) {
            fail(stream_error_kind::fatal, "libpq could not allocate a connection", "");
            return;
        }
        if (PQstatus(conn_) == CONNECTION_BAD) {
            fail(stream_error_kind::connection_lost, one_line(PQerrorMessage(conn_)), "");
            return;
        }
        log::info(mod, "event=connecting slot={} application_name={}", log::quote(opts_.slot),
                  log::quote(opts_.application_name));
        // libpq: "If you have yet to call PQconnectPoll, i.e., just after the
        // call to PQconnectStart, behave as if it last returned PGRES_POLLING_WRITING."
        poll_ = PGRES_POLLING_WRITING;
        if (!reset_descriptor()) return;
        arm();
    }

    // Points the descriptor at PQsocket(conn_). During the connect phase libpq
    // may close its socket and open another one (next host, SSL/GSS fallback),
    // possibly with the same number, whose epoll registration is then gone:
    // re-registering after every PQconnectPoll covers both cases.
    bool reset_descriptor() {
        drop_descriptor();
        int fd = PQsocket(conn_);
        if (fd < 0) {
            fail(stream_error_kind::connection_lost, "libpq has no socket: " + one_line(PQerrorMessage(conn_)), "");
            return false;
        }
        boost::system::error_code ec;
        sd_.emplace(ioc_);
        sd_->assign(fd, ec);
        if (ec) {
            sd_.reset();
            fail(stream_error_kind::fatal, "cannot watch the libpq socket: " + ec.message(), "");
            return false;
        }
        return true;
    }

    void drop_descriptor() {
        ++sd_gen_;
        read_wait_ = write_wait_ = false;
        if (sd_) {
            // release() cancels pending waits but leaves the fd open: libpq owns it.
            (void)sd_->release();
            sd_.reset();
        }
    }

    void connect_poll() {
        poll_ = PQconnectPoll(conn_);
        switch (poll_) {
            case PGRES_POLLING_FAILED:
                fail(stream_error_kind::connection_lost, one_line(PQerrorMessage(conn_)), "");
                return;
            case PGRES_POLLING_OK:
                on_connected();
                return;
            default:  // READING / WRITING (ACTIVE is unused since 9.x)
                if (!reset_descriptor()) return;
                return;
        }
    }

    void on_connected() {
        if (!reset_descriptor()) return;
        if (PQsetnonblocking(conn_, 1) != 0) {
            fail(stream_error_kind::fatal, "PQsetnonblocking failed: " + one_line(PQerrorMessage(conn_)), "");
            return;
        }
        // Host, port, database and user are safe to log; the password is not
        // reachable from here.
        log::info(mod, "event=connected slot={} host={} port={} db={} user={} server_version={} backend_pid={}",
                  log::quote(opts_.slot), log::quote(PQhost(conn_) ? PQhost(conn_) : ""),
                  log::quote(PQport(conn_) ? PQport(conn_) : ""), log::quote(PQdb(conn_) ? PQdb(conn_) : ""),
                  log::quote(PQuser(conn_) ? PQuser(conn_) : ""), PQserverVersion(conn_), PQbackendPID(conn_));
        info_.server_version = PQserverVersion(conn_);
        // Which cluster and timeline this is: the relay's records carry it
        // (the exactly-once check only trusts records of the same source).
        state_ = state::identifying;
        send_query("IDENTIFY_SYSTEM");
    }

    void send_slot_query() {
        char* lit = PQescapeLiteral(conn_, opts_.slot.data(), opts_.slot.size());
        if (!lit) {
            fail(stream_error_kind::fatal, "cannot quote slot name: " + one_line(PQerrorMessage(conn_)), "");
            return;
        }
        std::string q = "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = ";
        q += lit;
        PQfreemem(lit);
        state_ = state::querying_slot;
        send_query(q);
    }

    void send_query(const std::string& q) {
        if (!PQsendQuery(conn_, q.c_str())) {
            fail_from_conn(nullptr);
            return;
        }
        flush();
    }

    void send_start_replication() {
        // Identifiers in START_REPLICATION are the replication grammar's IDENT
        // (double-quoted like SQL); option values are single-quoted strings and
        // publication_names is itself a list of (double-quoted) identifiers.
        char* slot_id = PQescapeIdentifier(conn_, opts_.slot.data(), opts_.slot.size());
        char* pub_id = PQescapeIdentifier(conn_, opts_.publication.data(), opts_.publication.size());
        if (!slot_id || !pub_id) {
            if (slot_id) PQfreemem(slot_id);
            if (pub_id) PQfreemem(pub_id);
            fail(stream_error_kind::fatal, "cannot quote slot/publication name: " + one_line(PQerrorMessage(conn_)),
                 "");
            return;
        }
        std::string pub_names = pub_id;
        PQfreemem(pub_id);
        char* pub_lit = PQescapeLiteral(conn_, pub_names.data(), pub_names.size());
        if (!pub_lit) {
            PQfreemem(slot_id);
            fail(stream_error_kind::fatal, "cannot quote publication name: " + one_line(PQerrorMessage(conn_)), "");
            return;
        }
        std::string q = fmt::format("START_REPLICATION SLOT {} LOGICAL {} (proto_version '{}', publication_names {}{})",
                                    slot_id, from_.to_string(), opts_.proto_version, pub_lit,
                                    opts_.messages ? ", messages 'true'" : "");
        PQfreemem(slot_id);
        PQfreemem(pub_lit);
        state_ = state::starting;
        log::debug(mod, "event=start_replication slot={} from={}", log::quote(opts_.slot), from_.to_string());
        send_query(q);
    }

    // Reads results of the current command (identifying / querying_slot /
    // starting) as far as the input buffer allows.
    void pump_results() {
        auto self = shared_from_this();
        while (state_ == state::identifying || state_ == state::querying_slot || state_ == state::starting) {
            if (PQisBusy(conn_)) return;  // wait for more input
            result_ptr res(PQgetResult(conn_));
            if (!res) {
                // Command complete.
                if (state_ == state::identifying) {
                    if (info_.system_id.empty()) {
                        fail(stream_error_kind::fatal, "IDENTIFY_SYSTEM returned no row", "");
                        return;
                    }
                    send_slot_query();
                    continue;
                }
                if (state_ == state::querying_slot) {
                    if (!slot_row_seen_) {
                        fail(stream_error_kind::fatal,
                             fmt::format("replication slot {} does not exist", opts_.slot), "");
                        return;
                    }
                    send_start_replication();
                    continue;
                }
                // START_REPLICATION finished without entering COPY: the
                // error result (if any) was handled below; reaching here
                // means the server sent nothing usable.
                fail(stream_error_kind::fatal, "START_REPLICATION ended without starting a stream", "");
                return;
            }
            ExecStatusType st = PQresultStatus(res.get());
            if (state_ == state::identifying) {
                // systemid text, timeline int4, xlogpos text, dbname text
                if (st != PGRES_TUPLES_OK) {
                    fail_from_conn(res.get());
                    return;
                }
                if (PQntuples(res.get()) >= 1 && PQnfields(res.get()) >= 4) {
                    info_.system_id = PQgetvalue(res.get(), 0, 0);
                    info_.timeline = static_cast<std::uint32_t>(std::strtoul(PQgetvalue(res.get(), 0, 1), nullptr, 10));
                    if (auto x = lsn::parse(PQgetvalue(res.get(), 0, 2))) info_.server_wal_end = *x;
                    info_.database = PQgetisnull(res.get(), 0, 3) ? "" : PQgetvalue(res.get(), 0, 3);
                }
                continue;
            }
            if (state_ == state::querying_slot) {
                if (st != PGRES_TUPLES_OK) {
                    fail_from_conn(res.get());
                    return;
                }
                if (PQntuples(res.get()) >= 1) {
                    slot_row_seen_ = true;
                    if (!PQgetisnull(res.get(), 0, 0)) {
                        auto parsed = lsn::parse(PQgetvalue(res.get(), 0, 0));
                        if (!parsed) {
                            fail(stream_error_kind::fatal,
                                 fmt::format("cannot parse confirmed_flush_lsn {}", PQgetvalue(res.get(), 0, 0)), "");
                            return;
                        }
                        info_.slot_confirmed = *parsed;
                    }
                }
                continue;
            }
            // starting
            if (st == PGRES_COPY_BOTH) {
                state_ = state::streaming;
                if (setup_timer_) {
                    setup_timer_->cancel();
                    setup_timer_.reset();
                }
                log::info(mod, "event=started slot={} start_lsn={} confirmed_lsn={} publication={} system_id={} "
                          "timeline={}",
                          log::quote(opts_.slot), from_.to_string(), info_.slot_confirmed.to_string(),
                          log::quote(opts_.publication), info_.system_id, info_.timeline);
                if (handlers_.on_started) handlers_.on_started(info_);
                if (state_ != state::streaming) return;
                // The first frames may have arrived in the same packet.
                drain_copy();
                return;
            }
            fail_from_conn(res.get());
            return;
        }
    }

    // ------------------------------------------------------------ streaming

    // Hands buffered CopyData frames to the handlers until libpq has no
    // complete frame, reading is paused, or the stream left `streaming`.
    void drain_copy() {
        auto self = shared_from_this();  // a handler may destroy the owner
        bool delivered = false;
        while (state_ == state::streaming && !paused_) {
            char* raw = nullptr;
            int n = PQgetCopyData(conn_, &raw, /*async=*/1);
            if (n == 0) {  // need more input: the caller re-arms
                if (delivered && handlers_.on_idle) handlers_.on_idle();
                return;
            }
            if (n == -1) {
                // The server ended the copy: the result says why.
                result_ptr res(PQgetResult(conn_));
                if (res && PQresultStatus(res.get()) == PGRES_FATAL_ERROR) {
                    fail_from_conn(res.get());
                } else {
                    fail(stream_error_kind::connection_lost, "server ended the replication stream", "");
                }
                return;
            }
            if (n == -2) {
                fail_from_conn(nullptr);
                return;
            }
            pg_mem_ptr buf(raw);
            // Parsing is the caller's (the relay session's): it sees every
            // byte, including a malformed frame, and says what is wrong.
            if (handlers_.on_copy_data) handlers_.on_copy_data(std::string_view(raw, static_cast<std::size_t>(n)));
            delivered = true;
            // The handler may have paused, stopped or destroyed the stream;
            // the loop condition re-checks (self keeps *this alive).
        }
    }

    // While stopping: discard frames until the server's CopyDone, then read
    // results until none is left, then close.
    void pump_stopping() {
        auto self = shared_from_this();
        while (state_ == state::stopping) {
            if (copy_end_pending_) return;  // CopyDone not even sent yet
            if (!server_copy_done_) {
                // After PQputCopyEnd in CopyBoth libpq is in COPY_OUT until
                // the server's CopyDone arrives; PQgetCopyData consumes (and
                // we discard) what the server sent before it.
                char* raw = nullptr;
                int n = PQgetCopyData(conn_, &raw, 1);
                if (n > 0) {
                    PQfreemem(raw);
                    continue;
                }
                if (n == 0) return;
                if (n == -2) {
                    log::warn(mod, "event=stop_error error={}", log::quote(one_line(PQerrorMessage(conn_))));
                    finish_stop();
                    return;
                }
                server_copy_done_ = true;  // -1: CopyDone received
            }
            // Collect the results (CommandComplete, errors) until NULL.
            while (true) {
                if (PQisBusy(conn_)) return;
                result_ptr res(PQgetResult(conn_));
                if (!res) {
                    finish_stop();
                    return;
                }
                auto st = PQresultStatus(res.get());
                if (st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {  // more copy data first
                    server_copy_done_ = false;
                    break;
                }
                if (st != PGRES_COMMAND_OK) {
                    const char* ss = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
                    log::warn(mod, "event=stop_result status={} sqlstate={} error={}", PQresStatus(st),
                              ss ? ss : "", log::quote(one_line(PQresultErrorMessage(res.get()))));
                }
            }
        }
    }

    // ---------------------------------------------------------- write path

    void send_status(const walsender::status_update& s) {
        if (state_ != state::streaming) {
            log::debug(mod, "event=status_dropped reason=not_streaming flush={}", s.flush.to_string());
            return;
        }
        if (pending_) {
            // libpq's buffer is full; keep only the newest update.
            pending_ = s;
            arm();
            return;
        }
        if (!put_status(s)) return;
        flush();
    }

    // Returns false if the stream failed.
    bool put_status(const walsender::status_update& s) {
        auto bytes = walsender::encode_status_update(s);
        int r = PQputCopyData(conn_, bytes.data(), static_cast<int>(bytes.size()));
        if (r == 1) {
            pending_.reset();
            log::debug(mod, "event=status_sent write={} flush={} apply={}", s.write.to_string(), s.flush.to_string(),
                       s.apply.to_string());
            return true;
        }
        if (r == 0) {
            pending_ = s;
            arm();
            return true;
        }
        fail_from_conn(nullptr);
        return false;
    }

    void flush() {
        int r = PQflush(conn_);
        if (r < 0) {
            fail_from_conn(nullptr);
            return;
        }
        need_flush_ = (r == 1);
        arm();
    }

    void on_writable() {
        switch (state_) {
            case state::connecting:
                connect_poll();
                break;
            case state::identifying:
            case state::querying_slot:
            case state::starting:
                flush();
                break;
            case state::streaming:
                if (pending_) {
                    auto s = *pending_;
                    if (!put_status(s)) return;
                }
                flush();
                break;
            case state::stopping:
                if (pending_) {
                    auto s = *pending_;
                    if (!put_status(s)) return;
                    if (pending_) break;
                }
                if (copy_end_pending_ && !put_copy_end()) return;
                flush();
                if (state_ == state::stopping) pump_stopping();
                break;
            default:
                break;
        }
    }

    void on_readable() {
        switch (state_) {
            case state::connecting:
                connect_poll();
                break;
            case state::identifying:
            case state::querying_slot:
            case state::starting:
                if (!PQconsumeInput(conn_)) {
                    fail_from_conn(nullptr);
                    return;
                }
                pump_results();
                break;
            case state::streaming:
                // A wait issued before pause_reading() fired: leave the data in
                // the kernel (no re-arm follows while paused).
                if (paused_ && !need_flush_) return;
                if (!PQconsumeInput(conn_)) {
                    fail_from_conn(nullptr);
                    return;
                }
                // libpq: when PQflush returned 1 and the socket turns readable,
                // consume input and flush again (the server may be blocked
                // writing to us). Frames stay buffered while paused.
                if (need_flush_) {
                    flush();
                    if (state_ != state::streaming) return;
                }
                drain_copy();
                break;
            case state::stopping:
                if (!PQconsumeInput(conn_)) {
                    log::warn(mod, "event=stop_error error={}", log::quote(one_line(PQerrorMessage(conn_))));
                    finish_stop();
                    return;
                }
                if (need_flush_) flush();
                pump_stopping();
                break;
            default:
                break;
        }
    }

    // Issues the socket waits the current state needs, if not already pending.
    void arm() {
        if (!sd_ || state_ == state::closed || state_ == state::idle) return;
        bool want_read = false, want_write = false;
        switch (state_) {
            case state::connecting:
                want_read = poll_ == PGRES_POLLING_READING;
                want_write = poll_ == PGRES_POLLING_WRITING;
                break;
            case state::identifying:
            case state::querying_slot:
            case state::starting:
                want_read = true;
                want_write = need_flush_;
                break;
            case state::streaming:
                // Paused: leave data in the kernel so TCP backpressure reaches
                // the walsender, except to unblock a pending flush.
                want_read = !paused_ || need_flush_;
                want_write = need_flush_ || pending_.has_value();
                break;
            case state::stopping:
                want_read = true;
                want_write = need_flush_ || pending_.has_value() || copy_end_pending_;
                break;
            default:
                break;
        }
        auto self = shared_from_this();
        auto gen = sd_gen_;
        if (want_read && !read_wait_) {
            read_wait_ = true;
            sd_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                            [self, gen](const boost::system::error_code& ec) {
                                if (gen != self->sd_gen_) return;  // descriptor replaced or closed
                                self->read_wait_ = false;
                                if (ec) {
                                    self->fail(stream_error_kind::connection_lost, "socket wait: " + ec.message(), "");
                                    return;
                                }
                                self->on_readable();
                                self->arm();
                            });
        }
        if (want_write && !write_wait_) {
            write_wait_ = true;
            sd_->async_wait(boost::asio::posix::stream_descriptor::wait_write,
                            [self, gen](const boost::system::error_code& ec) {
                                if (gen != self->sd_gen_) return;
                                self->write_wait_ = false;
                                if (ec) {
                                    self->fail(stream_error_kind::connection_lost, "socket wait: " + ec.message(), "");
                                    return;
                                }
                                self->on_writable();
                                self->arm();
                            });
        }
    }

    // ---------------------------------------------------------- pause/stop

    void pause_reading() { paused_ = true; }

    void resume_reading() {
        if (!paused_) return;
        paused_ = false;
        if (state_ != state::streaming) return;
        // Frames libpq already holds produce no socket readiness: hand them
        // out first. Posted so a handler calling resume does not recurse.
        boost::asio::post(ioc_, [self = shared_from_this()] {
            if (self->state_ != state::streaming || self->paused_) return;
            self->drain_copy();
            self->arm();
        });
    }

    bool put_copy_end() {
        int r = PQputCopyEnd(conn_, nullptr);
        if (r == 1) {
            copy_end_pending_ = false;
            return true;
        }
        if (r == 0) {
            copy_end_pending_ = true;
            arm();
            return true;
        }
        log::warn(mod, "event=stop_error error={}", log::quote(one_line(PQerrorMessage(conn_))));
        finish_stop();
        return false;
    }

    void stop(std::function<void()> done) {
        if (state_ == state::stopping) {
            // A second stop() chains onto the first.
            auto prev = std::move(stop_done_);
            stop_done_ = [prev = std::move(prev), done = std::move(done)] {
                if (prev) prev();
                if (done) done();
            };
            return;
        }
        if (state_ != state::streaming) {
            // Not streaming (never started, still connecting, or closed):
            // nothing to end gracefully.
            if (state_ != state::closed && state_ != state::idle)
                log::info(mod, "event=stopped slot={} phase=setup", log::quote(opts_.slot));
            close_connection();
            state_ = state::closed;
            if (done) done();
            return;
        }
        state_ = state::stopping;
        stop_done_ = std::move(done);
        log::info(mod, "event=stopping slot={}", log::quote(opts_.slot));
        stop_timer_.emplace(ioc_);
        stop_timer_->expires_after(stop_deadline);
        std::weak_ptr<impl> weak = shared_from_this();
        stop_timer_->async_wait([weak](const boost::system::error_code& ec) {
            auto self = weak.lock();
            if (ec || !self || self->state_ != state::stopping) return;
            log::warn(mod, "event=stop_timeout slot={} after_s={}", log::quote(self->opts_.slot),
                      stop_deadline.count());
            self->finish_stop();
        });
        // Queued status updates go out before CopyDone.
        if (pending_) {
            auto s = *pending_;
            if (!put_status(s)) return;
        }
        if (!pending_ && !put_copy_end()) return;
        if (pending_) copy_end_pending_ = true;
        flush();
        // Input may already be buffered (even the server's CopyDone); look at
        // it from the loop so `done` never runs inside the caller's stack.
        boost::asio::post(ioc_, [self = shared_from_this()] {
            if (self->state_ != state::stopping) return;
            self->pump_stopping();
            self->arm();
        });
    }

    void finish_stop() {
        if (state_ != state::stopping) return;
        close_connection();
        state_ = state::closed;
        log::info(mod, "event=stopped slot={}", log::quote(opts_.slot));
        auto done = std::move(stop_done_);
        stop_done_ = nullptr;
        if (done) done();
    }

    // ------------------------------------------------------------- closing

    void close_connection() {
        drop_descriptor();
        for (auto* t : {&stop_timer_, &setup_timer_}) {
            if (*t) {
                (*t)->cancel();
                t->reset();
            }
        }
        if (conn_) {
            PQfinish(conn_);
            conn_ = nullptr;
        }
    }

    // Classifies an error from a result (or, with null, from the connection).
    void fail_from_conn(PGresult* res) {
        std::string sqlstate;
        std::string message;
        if (res) {
            if (const char* s = PQresultErrorField(res, PG_DIAG_SQLSTATE)) sqlstate = s;
            if (const char* m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)) message = m;
            if (message.empty()) message = one_line(PQresultErrorMessage(res));
            if (message.empty()) message = std::string("unexpected result ") + PQresStatus(PQresultStatus(res));
        }
        if (message.empty() && conn_) message = one_line(PQerrorMessage(conn_));
        if (message.empty()) message = "connection failed";
        stream_error_kind kind;
        if (sqlstate == "55006")
            kind = stream_error_kind::slot_busy;
        else if ((conn_ && PQstatus(conn_) == CONNECTION_BAD) || is_connection_sqlstate(sqlstate))
            kind = stream_error_kind::connection_lost;
        else
            kind = stream_error_kind::fatal;
        fail(kind, std::move(message), std::move(sqlstate));
    }

    // Ends the stream with an error, reporting it once.
    void fail(stream_error_kind kind, std::string message, std::string sqlstate) {
        if (state_ == state::closed) return;
        if (state_ == state::stopping) {
            // The caller asked to stop: an error on the way out is no news.
            log::warn(mod, "event=stop_error error={}", log::quote(message));
            finish_stop();
            return;
        }
        auto self = shared_from_this();
        close_connection();
        state_ = state::closed;
        const char* kind_s = kind == stream_error_kind::connection_lost ? "connection_lost"
                             : kind == stream_error_kind::slot_busy     ? "slot_busy"
                                                                        : "fatal";
        log::error(mod, "event=closed slot={} kind={} sqlstate={} error={}", log::quote(opts_.slot), kind_s,
                   sqlstate.empty() ? "-" : sqlstate, log::quote(message));
        if (handlers_.on_closed) handlers_.on_closed(stream_error{kind, std::move(message), std::move(sqlstate)});
    }

    // Destructor path: no callbacks at all.
    void detach() {
        close_connection();
        state_ = state::closed;
        stop_done_ = nullptr;
    }
};

replication_stream::replication_stream(boost::asio::io_context& ioc, stream_options opts, stream_handlers h)
    : impl_(std::make_shared<impl>(ioc, std::move(opts), std::move(h))) {}

replication_stream::~replication_stream() {
    // Handlers stay alive inside impl until pending waits drain (one may be
    // running right now, if a handler destroys its own stream), but none is
    // called again: state is closed.
    if (impl_) impl_->detach();
}

void replication_stream::start(lsn from) { impl_->start(from); }
void replication_stream::pause_reading() { impl_->pause_reading(); }
void replication_stream::resume_reading() { impl_->resume_reading(); }
bool replication_stream::reading_paused() const noexcept { return impl_->paused_; }
void replication_stream::send_status(const walsender::status_update& s) { impl_->send_status(s); }
void replication_stream::stop(std::function<void()> done) { impl_->stop(std::move(done)); }
bool replication_stream::streaming() const noexcept { return impl_->state_ == impl::state::streaming; }

}  // namespace outbox::io
