// The outbox cleaner: one thread, one ordinary libpq connection, a tick
// timer. Every tick it takes a mark (the snapshot's xmin and the WAL insert
// position after it), asks the plan which mark is usable with the relay's
// confirmed position, and deletes the rows below that mark's xmin in batches.
// libpq runs non-blocking and every wait is a poll() on its socket plus an
// eventfd, so a stop request ends any wait at once.
#include "outbox_relay/io/outbox_cleanup.hpp"

#include "outbox_relay/cleanup_plan.hpp"
#include "outbox_relay/config.hpp"
#include "outbox_relay/io/log.hpp"
#include "outbox_relay/io/pg_params.hpp"

#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <thread>

namespace outbox::io {
namespace {

constexpr std::string_view mod = "cleanup";
constexpr const char* application_name = "outbox-relay-cleanup";
using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// One line, as the server said it.
std::string one_line(std::string_view s) {
    std::string out;
    for (char c : s) out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

// Quoted as PQescapeIdentifier does (double the quotes), without needing a
// connection.
std::string quote_ident(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"') out += '"';
        out += c;
    }
    return out + "\"";
}

bool is_connection_sqlstate(std::string_view s) {
    // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
    // class 08 connection exceptions: a new connection can cure these.
    return s == "57P01" || s == "57P02" || s == "57P03" || s.starts_with("08");
}

struct result_deleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

struct table_ref {
    std::string text;       // schema.table, for logs
    std::string qualified;  // "schema"."table", for SQL
    std::string delete_sql;
};

// Why a statement (or connection) failed.
struct failure {
    std::string sqlstate;  // empty when libpq or the client decided
    std::string message;
    bool lost = false;     // the connection is gone or untrustworthy: drop it
    bool stopped = false;  // a stop request cut the wait short
};

bool parse_u64(std::string_view s, std::uint64_t* out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return !s.empty() && ec == std::errc{} && p == s.data() + s.size();
}

}  // namespace

cleanup_options cleanup_options_of(const relay_config& cfg) {
    cleanup_options o;
    o.conninfo = cfg.postgres;
    o.password = cfg.postgres_password;
    for (const auto& r : table_routes(cfg)) o.tables.emplace_back(r.schema, r.table);
    o.retention = cfg.cleanup_after;
    o.batch = cfg.cleanup_batch;
    o.reconnect_backoff_max = cfg.reconnect_backoff_max;
    return o;
}

void apply_cleanup_report(relay_metrics& m, const cleanup_report& r) {
    m.cleanup_deleted_rows.inc(r.deleted);
    m.cleanup_runs.inc(r.runs);
    m.cleanup_errors.inc(r.errors);
    if (r.mark_lag_seconds) m.cleanup_mark_lag.set(*r.mark_lag_seconds);
}

// ---------------------------------------------------------------------------
// Start-up check (blocking, before the loop)
// ---------------------------------------------------------------------------

cleanup_check check_cleanup_tables(const cleanup_options& o) {
    const pg_params params(o.conninfo, o.password, {{"connect_timeout", "10"}},
                           {{"application_name", application_name}, {"client_encoding", "UTF8"}});
    std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdbParams(params.keys(), params.values(), 1),
                                                      &PQfinish);
    if (!conn || PQstatus(conn.get()) != CONNECTION_OK)
        return {exit_code::pg_connect,
                "cleanup-after: cannot connect to Postgres: " +
                    (conn ? one_line(PQerrorMessage(conn.get())) : std::string("out of memory"))};
    // TID range scans (each batch resumes where the last one stopped) and
    // pg_current_snapshot() need PostgreSQL 14.
    if (PQserverVersion(conn.get()) < 140000)
        return {exit_code::usage, "cleanup-after needs PostgreSQL 14 or later (the server is " +
                                      std::to_string(PQserverVersion(conn.get())) + "); unset cleanup-after"};
    for (const auto& [schema, table] : o.tables) {
        const std::string text = schema + "." + table;
        const std::string qualified = quote_ident(schema) + "." + quote_ident(table);
        const char* p1[] = {qualified.c_str()};
        result_ptr r(PQexecParams(conn.get(),
                                  "SELECT c.relkind::text, has_table_privilege(c.oid, 'DELETE'), current_user::text "
                                  "FROM pg_class c WHERE c.oid = to_regclass($1)",
                                  1, nullptr, p1, nullptr, nullptr, 0));
        if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK)
            return {exit_code::pg_connect, "cleanup-after: cannot look up table " + text + ": " +
                                               one_line(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn.get()))};
        if (PQntuples(r.get()) != 1) continue;  // pg_setup says what to do about it
        const std::string_view relkind = PQgetvalue(r.get(), 0, 0);
        const std::string role = PQgetvalue(r.get(), 0, 2);
        // ctid names a row only within one relation; a partitioned outbox
        // is better cleaned up by dropping whole partitions anyway (no
        // DELETE, no dead rows, no vacuum).
        if (relkind == "p")
            return {exit_code::usage,
                    "cleanup-after: table " + text +
                        " is partitioned; the cleanup deletes rows of plain tables only. Drop old partitions "
                        "instead (ALTER TABLE " + qualified + " DETACH PARTITION <old>; DROP TABLE <old>, once "
                        "the relay's confirmed position is past their rows) and unset cleanup-after"};
        if (relkind != "r")
            return {exit_code::usage, "cleanup-after: " + text + " is not a plain table (relkind " +
                                          std::string(relkind) + "); unset cleanup-after"};
        if (std::string_view(PQgetvalue(r.get(), 0, 1)) != "t")
            return {exit_code::privileges, "cleanup-after: role " + role + " cannot delete from " + text +
                                               ": run GRANT DELETE ON " + qualified + " TO " + quote_ident(role) +
                                               ", or unset cleanup-after"};
        // The relay's own publication publishes inserts only (pg_setup), so
        // the DELETEs never reach its stream. Any other publication of the
        // table that publishes deletes sends them to its subscribers.
        const char* p2[] = {schema.c_str(), table.c_str()};
        result_ptr pubs(PQexecParams(conn.get(),
                                     "SELECT string_agg(DISTINCT p.pubname, ',' ORDER BY p.pubname) FROM pg_publication p "
                                     "JOIN pg_publication_tables t ON t.pubname = p.pubname "
                                     "WHERE p.pubdelete AND t.schemaname = $1 AND t.tablename = $2",
                                     2, nullptr, p2, nullptr, nullptr, 0));
        if (pubs && PQresultStatus(pubs.get()) == PGRES_TUPLES_OK && PQntuples(pubs.get()) == 1 &&
            !PQgetisnull(pubs.get(), 0, 0))
            log::warn(mod,
                      "event=cleanup_deletes_published table={} publications={} note={}", text,
                      log::quote(PQgetvalue(pubs.get(), 0, 0)),
                      log::quote("these publications publish deletes: the cleanup's DELETEs reach their subscribers "
                                 "(the relay itself ignores and counts them)"));
    }
    return {};
}

// ---------------------------------------------------------------------------
// The cleaner
// ---------------------------------------------------------------------------

struct outbox_cleanup::impl {
    impl(cleanup_options o, report_fn report) : opts_(std::move(o)), report_(std::move(report)), plan_(opts_.retention) {
        wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        for (const auto& [schema, table] : opts_.tables) {
            table_ref t;
            t.text = schema + "." + table;
            t.qualified = quote_ident(schema) + "." + quote_ident(table);
            // One statement is one transaction: its locks are short, and a
            // cut-off batch either happened or not. The row set is chosen by
            // ctid inside the same statement (same snapshot), so the TID scan
            // of the DELETE finds exactly the rows chosen; a row updated
            // meanwhile has a new ctid (and a new xmin) and fails the recheck.
            // Each batch resumes after the highest ctid the previous one chose
            // ($3, a TID range scan): rows before it that qualify were all
            // chosen already (they were committed before the mark, so every
            // batch sees them), and rescanning the pruned front of the heap
            // for every batch would make a large backlog quadratic. The
            // chosen count, not the deleted one, ends the pass, so rows
            // someone else deleted meanwhile cannot end it early.
            t.delete_sql = "WITH c AS (SELECT ctid FROM " + t.qualified +
                           " WHERE ctid > $3::tid AND age(xmin) > age($1::xid) LIMIT $2),"
                           " d AS (DELETE FROM " + t.qualified +
                           " WHERE ctid = ANY(ARRAY(SELECT ctid FROM c)) RETURNING 1)"
                           " SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM d), (SELECT max(ctid) FROM c)::text";
            tables_.push_back(std::move(t));
            if (!tables_text_.empty()) tables_text_ += ',';
            tables_text_ += tables_.back().text;
        }
        thread_ = std::thread([this] { run(); });
    }

    ~impl() {
        request_stop();
        if (thread_.joinable()) thread_.join();
        if (conn_) PQfinish(conn_);
        if (wake_fd_ >= 0) ::close(wake_fd_);
    }

    void request_stop() noexcept {
        stop_.store(true);
        if (wake_fd_ >= 0) {
            const std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
        }
    }

    void set_confirmed(lsn c) noexcept {
        std::uint64_t cur = confirmed_.load();
        while (c.value() > cur && !confirmed_.compare_exchange_weak(cur, c.value())) {
        }
    }

    // ---- waiting ---------------------------------------------------------

    // Waits until `fd` is ready for `events`, `deadline` passes (0) or a stop
    // is requested (-1); else returns the ready events. fd < 0: just sleeps.
    int wait(int fd, short events, clock::time_point deadline) {
        for (;;) {
            if (stop_.load()) return -1;
            const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now());
            if (left.count() <= 0) return 0;
            pollfd p[2] = {{wake_fd_, POLLIN, 0}, {fd, events, 0}};
            const int n = ::poll(p, fd >= 0 ? 2 : 1, static_cast<int>(std::min<long long>(left.count() + 1, 60'000)));
            if (n < 0 && errno != EINTR) return 0;
            if (stop_.load()) return -1;
            if (n > 0 && fd >= 0 && p[1].revents != 0) return p[1].revents;
        }
    }

    // False when a stop was requested meanwhile.
    bool sleep_until(clock::time_point t) { return wait(-1, 0, t) != -1; }

    // ---- libpq -----------------------------------------------------------

    bool connect(failure& f) {
        // Keywords before dbname are defaults the user's conninfo may
        // override; application_name after it names this connection in
        // pg_stat_activity.
        const pg_params params(opts_.conninfo, opts_.password,
                               {{"connect_timeout", "10"},
                                {"keepalives", "1"},
                                {"keepalives_idle", "20"},
                                {"keepalives_interval", "5"},
                                {"keepalives_count", "3"}},
                               {{"application_name", application_name}, {"client_encoding", "UTF8"}});
        PGconn* c = PQconnectStartParams(params.keys(), params.values(), /*expand_dbname=*/1);
        if (!c) {
            f.message = "libpq could not allocate a connection";
            return false;
        }
        const auto deadline = clock::now() + std::chrono::seconds(30);
        PostgresPollingStatusType st = PGRES_POLLING_WRITING;
        while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
            const int w = wait(PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
            if (w <= 0) {
                f.stopped = w < 0;
                f.message = w < 0 ? "stopping" : "connecting timed out after 30 s";
                PQfinish(c);
                return false;
            }
            st = PQconnectPoll(c);
        }
        if (PQstatus(c) != CONNECTION_OK || PQsetnonblocking(c, 1) != 0) {
            f.message = one_line(PQerrorMessage(c));
            PQfinish(c);
            return false;
        }
        conn_ = c;
        const std::string set = "SET statement_timeout = " + std::to_string(opts_.statement_timeout.count()) +
                                "; SET lock_timeout = " + std::to_string(opts_.lock_timeout.count());
        if (!query(set, {}, f, /*several=*/true)) {
            drop_connection();
            return false;
        }
        log::info(mod, "event=connected host={} port={} db={} user={} backend_pid={}", log::quote(PQhost(c) ? PQhost(c) : ""),
                  log::quote(PQport(c) ? PQport(c) : ""), log::quote(PQdb(c) ? PQdb(c) : ""),
                  log::quote(PQuser(c) ? PQuser(c) : ""), PQbackendPID(c));
        return true;
    }

    void drop_connection() {
        if (conn_) PQfinish(conn_);
        conn_ = nullptr;
    }

    // Runs one statement with `params` (the extended protocol), or with
    // `several` the simple protocol (several statements, no parameters).
    // Returns its last result, or null with `f` set.
    result_ptr query(const std::string& sql, const std::vector<std::string>& params, failure& f,
                     bool several = false) {
        PGconn* c = conn_;
        std::vector<const char*> values;
        for (const auto& p : params) values.push_back(p.c_str());
        const int sent = several ? PQsendQuery(c, sql.c_str())
                                        : PQsendQueryParams(c, sql.c_str(), static_cast<int>(values.size()), nullptr,
                                                            values.data(), nullptr, nullptr, 0);
        auto lost = [&](std::string why) {
            f.lost = true;
            f.message = std::move(why);
            return result_ptr{};
        };
        if (!sent) return lost(one_line(PQerrorMessage(c)));
        // The server gives up at statement_timeout; the client a little
        // later, for a path that went dead (nothing would ever arrive).
        const auto deadline = clock::now() + opts_.statement_timeout + std::chrono::seconds(10);
        auto await = [&](short events) -> int {
            const int w = wait(PQsocket(c), events, deadline);
            if (w < 0) f.stopped = true;
            return w;
        };
        for (;;) {
            const int r = PQflush(c);
            if (r == 0) break;
            if (r < 0) return lost(one_line(PQerrorMessage(c)));
            const int w = await(POLLIN | POLLOUT);
            if (w <= 0) return lost(w < 0 ? "stopping" : "no answer from Postgres (client deadline)");
            if ((w & POLLIN) && !PQconsumeInput(c)) return lost(one_line(PQerrorMessage(c)));
        }
        result_ptr last, err;
        for (;;) {
            while (PQisBusy(c)) {
                const int w = await(POLLIN);
                if (w <= 0) return lost(w < 0 ? "stopping" : "no answer from Postgres (client deadline)");
                if (!PQconsumeInput(c)) return lost(one_line(PQerrorMessage(c)));
            }
            result_ptr r(PQgetResult(c));
            if (!r) break;
            const auto st = PQresultStatus(r.get());
            if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
                if (!err) err = std::move(r);
            } else {
                last = std::move(r);
            }
        }
        if (err) {
            const char* ss = PQresultErrorField(err.get(), PG_DIAG_SQLSTATE);
            f.sqlstate = ss ? ss : "";
            f.message = one_line(PQresultErrorMessage(err.get()));
            f.lost = PQstatus(c) == CONNECTION_BAD || is_connection_sqlstate(f.sqlstate);
            return {};
        }
        if (PQstatus(c) == CONNECTION_BAD) return lost(one_line(PQerrorMessage(c)));
        if (!last) return lost("no result");
        return last;
    }

    // ---- one tick --------------------------------------------------------

    void report(cleanup_report r) {
        if (report_) report_(r);
    }

    void log_failure(std::string_view step, std::string_view table, const failure& f) {
        const std::string ss = f.sqlstate.empty() ? "-" : f.sqlstate;
        if (f.lost)
            log::warn(mod, "event=cleanup_failed step={} table={} sqlstate={} error={} action=reconnect", step, table,
                      ss, log::quote(f.message));
        else
            log::error(mod, "event=cleanup_failed step={} table={} sqlstate={} error={}", step, table, ss,
                       log::quote(f.message));
    }

    // The mark: one statement, so the snapshot (taken at its start) comes
    // before the LSN (read while it runs). xmax is the next xid, for the
    // wraparound guard.
    bool take_mark(cleanup_mark& m, std::uint64_t& next_xid, failure& f) {
        auto r = query("SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text, pg_current_wal_insert_lsn()::text "
                       "FROM pg_current_snapshot() s",
                       {}, f);
        if (!r) return false;
        if (PQntuples(r.get()) != 1 || !parse_u64(PQgetvalue(r.get(), 0, 0), &m.xmin) ||
            !parse_u64(PQgetvalue(r.get(), 0, 1), &next_xid)) {
            f.message = "unexpected mark result";
            return false;
        }
        auto at = lsn::parse(PQgetvalue(r.get(), 0, 2));
        if (!at) {
            f.message = "unexpected mark LSN";
            return false;
        }
        m.at = *at;
        m.taken = clock::now();
        return true;
    }

    enum class outcome { ok, failed, stopped };

    outcome tick() {
        failure f;
        cleanup_mark m;
        std::uint64_t next_xid = 0;
        if (!take_mark(m, next_xid, f)) {
            if (f.stopped) return outcome::stopped;
            log_failure("mark", tables_text_, f);
            if (f.lost) drop_connection();
            report({0, 0, 1, std::nullopt});
            return outcome::failed;
        }
        switch (plan_.add(m)) {
            case cleanup_plan::add_result::added: break;
            case cleanup_plan::add_result::refused_full:
                log::debug(mod, "event=mark_refused reason=queue_full marks={}", plan_.size());
                break;
            case cleanup_plan::add_result::reset:
                log::warn(mod, "event=marks_reset reason={} xmin={} lsn={}",
                          log::quote("the server's xid or WAL position went back (another server or a restore)"),
                          m.xmin, m.at.to_string());
                break;
        }
        const lsn confirmed(confirmed_.load());
        const auto now = clock::now();
        const auto usable = plan_.usable(confirmed, now);
        cleanup_report rep;
        if (auto o = plan_.oldest()) rep.mark_lag_seconds = std::chrono::duration<double>(now - o->taken).count();
        if (!usable || !plan_.pass_needed(*usable)) {
            log::debug(mod, "event=tick usable={} marks={} confirmed={}", usable ? "same" : "none", plan_.size(),
                       confirmed.to_string());
            rep.runs = 1;
            report(rep);
            return outcome::ok;
        }
        if (!mark_xid_age_ok(usable->xmin, next_xid)) {
            // age() would wrap: comparing with this mark could delete rows it
            // does not cover. Start afresh; new marks are young.
            log::error(mod, "event=mark_refused reason=xid_age mark_xmin={} next_xid={} note={}", usable->xmin,
                       next_xid, log::quote("more than ~2^31 transactions within the retention: shorten cleanup-after"));
            plan_.clear();
            rep.errors = 1;
            report(rep);
            return outcome::failed;
        }
        const std::string xid = std::to_string(usable->xid32());
        const std::string limit = std::to_string(opts_.batch);
        for (const table_ref& t : tables_) {
            const auto t0 = clock::now();
            std::uint64_t deleted = 0, batches = 0;
            std::string after = "(0,0)";
            for (;;) {
                const auto b0 = clock::now();
                auto r = query(t.delete_sql, {xid, limit, after}, f);
                if (!r) {
                    if (f.stopped) return outcome::stopped;
                    log_failure("delete", t.text, f);
                    if (f.lost) drop_connection();
                    report({0, 0, 1, rep.mark_lag_seconds});
                    return outcome::failed;
                }
                std::uint64_t chosen = 0, n = 0;
                if (PQntuples(r.get()) == 1) {
                    parse_u64(PQgetvalue(r.get(), 0, 0), &chosen);
                    parse_u64(PQgetvalue(r.get(), 0, 1), &n);
                    after = PQgetvalue(r.get(), 0, 2);
                }
                deleted += n;
                ++batches;
                if (n > 0) report({n, 0, 0, std::nullopt});
                if (chosen < opts_.batch || after.empty()) break;
                // Between batches the connection rests about half as long as
                // the batch took: the cleaner never keeps a backend busy.
                const auto pause = std::clamp(std::chrono::duration_cast<milliseconds>(clock::now() - b0) / 2,
                                              milliseconds{10}, milliseconds{1000});
                if (!sleep_until(clock::now() + pause)) return outcome::stopped;
            }
            const auto took = std::chrono::duration_cast<milliseconds>(clock::now() - t0).count();
            if (deleted > 0)
                log::info(mod, "event=cleanup_pass table={} deleted={} batches={} took_ms={} mark_xmin={} mark_lsn={} "
                          "confirmed={}",
                          t.text, deleted, batches, took, usable->xmin, usable->at.to_string(), confirmed.to_string());
            else
                log::debug(mod, "event=cleanup_pass table={} deleted=0 took_ms={} mark_xmin={}", t.text, took,
                           usable->xmin);
        }
        plan_.pass_completed(*usable);
        rep.runs = 1;
        report(rep);
        return outcome::ok;
    }

    // ---- the thread ------------------------------------------------------

    void run() {
        log::info(mod, "event=cleanup_started tables={} retention={} tick_ms={} batch={} marks_max={} postgres={}",
                  tables_text_, format_cleanup_after(opts_.retention), plan_.tick().count(), opts_.batch,
                  plan_.capacity(), log::quote(redact_conninfo(opts_.conninfo)));
        milliseconds backoff{200};
        while (!stop_.load()) {
            if (!conn_) {
                failure f;
                if (!connect(f)) {
                    if (f.stopped) break;
                    log::warn(mod, "event=connect_failed postgres={} error={} retry_in_ms={}",
                              log::quote(redact_conninfo(opts_.conninfo)), log::quote(f.message), backoff.count());
                    report({0, 0, 1, std::nullopt});
                    if (!sleep_until(clock::now() + backoff)) break;
                    backoff = std::min(backoff * 2, std::max(opts_.reconnect_backoff_max, milliseconds{200}));
                    continue;
                }
                backoff = milliseconds{200};
            }
            const auto started = clock::now();
            if (tick() == outcome::stopped) break;
            if (!sleep_until(started + plan_.tick())) break;
        }
        drop_connection();
        log::info(mod, "event=cleanup_stopped");
    }

    cleanup_options opts_;
    report_fn report_;
    cleanup_plan plan_;
    std::vector<table_ref> tables_;
    std::string tables_text_;
    std::atomic<std::uint64_t> confirmed_{0};
    std::atomic<bool> stop_{false};
    int wake_fd_ = -1;
    PGconn* conn_ = nullptr;  // the cleaner thread's only
    std::thread thread_;
};

outbox_cleanup::outbox_cleanup(cleanup_options o, report_fn report)
    : impl_(std::make_unique<impl>(std::move(o), std::move(report))) {}
outbox_cleanup::~outbox_cleanup() = default;
void outbox_cleanup::set_confirmed(lsn confirmed) noexcept { impl_->set_confirmed(confirmed); }
void outbox_cleanup::request_stop() noexcept { impl_->request_stop(); }

}  // namespace outbox::io
