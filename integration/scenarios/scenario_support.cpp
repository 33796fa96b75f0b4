#include "scenario_support.hpp"

#include "harness.hpp"

#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <sstream>
#include <stdexcept>

namespace outbox::it::scn {

namespace {

PGconn* as_conn(void* p) { return static_cast<PGconn*>(p); }

std::string sql_literal(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out.push_back('\'');
        out.push_back(c);
    }
    return out + "'";
}
}  // namespace

const stack_env& env() {
    static const stack_env e{env_or_fail("OUTBOX_TEST_PG"), env_or_fail("OUTBOX_TEST_BROKERS"),
                             env_or_fail("OUTBOX_STACK_SH")};
    return e;
}

void stack(const std::string& verb) {
    std::vector<std::string> args;
    std::istringstream words(verb);
    for (std::string w; words >> w;) args.push_back(w);
    outbox::it::stack(args);
}

restart_guard::~restart_guard() {
    if (!down) return;
    try {
        stack(start_verb);
    } catch (...) {
    }
}

bool wait_until(clock::time_point deadline, const std::function<bool()>& pred, std::chrono::milliseconds poll) {
    for (;;) {
        try {
            if (pred()) return true;
        } catch (const std::exception&) {
            // e.g. Postgres restarting: keep polling until the deadline
        }
        if (clock::now() >= deadline) return false;
        std::this_thread::sleep_for(poll);
    }
}

// ---- pg

pg::pg(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(as_conn(conn_)) != CONNECTION_OK) {
        std::string msg = PQerrorMessage(as_conn(conn_));
        PQfinish(as_conn(conn_));
        throw std::runtime_error("pg connect failed: " + msg);
    }
}

pg::~pg() { PQfinish(as_conn(conn_)); }

std::vector<std::vector<std::optional<std::string>>> pg::query(const std::string& sql) {
    PGconn* c = as_conn(conn_);
    if (PQstatus(c) != CONNECTION_OK) {
        // After a Postgres restart the old socket is dead; one reset is enough.
        PQreset(c);
        if (PQstatus(c) != CONNECTION_OK) throw std::runtime_error(std::string("pg reconnect failed: ") + PQerrorMessage(c));
    }
    PGresult* r = PQexec(c, sql.c_str());
    auto st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        std::string msg = PQresultErrorMessage(r);
        PQclear(r);
        if (msg.empty()) msg = PQerrorMessage(c);
        throw std::runtime_error("pg query failed: " + msg + " sql=" + sql.substr(0, 200));
    }
    std::vector<std::vector<std::optional<std::string>>> rows;
    for (int i = 0; i < PQntuples(r); ++i) {
        std::vector<std::optional<std::string>> row;
        for (int j = 0; j < PQnfields(r); ++j) {
            if (PQgetisnull(r, i, j))
                row.emplace_back();
            else
                row.emplace_back(std::string(PQgetvalue(r, i, j), static_cast<std::size_t>(PQgetlength(r, i, j))));
        }
        rows.push_back(std::move(row));
    }
    PQclear(r);
    return rows;
}

std::optional<std::string> pg::scalar(const std::string& sql) {
    auto rows = query(sql);
    if (rows.empty() || rows[0].empty()) return std::nullopt;
    return rows[0][0];
}

// ---- lsn text

std::uint64_t parse_lsn(const std::string& text) {
    unsigned hi = 0, lo = 0;
    char tail = 0;
    if (std::sscanf(text.c_str(), "%X/%X%c", &hi, &lo, &tail) != 2) throw std::runtime_error("bad lsn text: " + text);
    return (static_cast<std::uint64_t>(hi) << 32) | lo;
}

std::string format_lsn(std::uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(v >> 32), static_cast<unsigned>(v & 0xffffffffu));
    return buf;
}

// ---- scenario

scenario::scenario(const std::string& tag) : tag_(tag), admin_(env().pg) {
    // Lower-case letters, digits and '_' only: slot names allow nothing else.
    static int counter = 0;  // several scenarios can start within one second
    std::string num = tag.substr(0, tag.find('_'));
    prefix_ = "it" + num + "_" + std::to_string(std::time(nullptr)) + "_" + std::to_string(::getpid()) + "_" +
              std::to_string(counter++);
    admin_.exec("SET client_min_messages = warning");
    table_ = "public." + prefix_;
    slot_ = prefix_ + "_slot";
    publication_ = prefix_ + "_pub";
    admin_.exec("CREATE TABLE " + table_ +
                " (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text NOT NULL,"
                " aggregateid text NOT NULL, type text NOT NULL, payload jsonb, seq bigint NOT NULL)");
}

scenario::~scenario() {
    relays_.clear();  // SIGKILL + reap whatever still runs
    if (const char* keep = std::getenv("OUTBOX_IT_KEEP"); keep && std::string(keep) == "1") return;
    try {
        // A killed relay's walsender can hold the slot for a moment; drop
        // must not race it.
        wait_until(clock::now() + 30s, [&] {
            admin_.exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = " +
                        sql_literal(slot_) + " AND active_pid IS NOT NULL");
            return !slot_info().active_pid;
        });
        admin_.exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = " +
                    sql_literal(slot_));
        admin_.exec("DROP PUBLICATION IF EXISTS " + publication_);
        admin_.exec("DROP TABLE IF EXISTS " + table_);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "scenario %s: cleanup failed: %s\n", tag_.c_str(), e.what());
    }
}

std::vector<std::string> scenario::relay_args(const std::vector<std::string>& extra) const {
    std::vector<std::string> a{"run",           "--postgres",    env().pg,     "--brokers", env().brokers,
                               "--slot",        slot_,           "--publication", publication_,
                               "--table",       table_,          "--topic",    topic_template()};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
}

relay_process& scenario::start_relay(const std::string& name, const std::vector<std::string>& extra) {
    relay_options o;
    o.args = relay_args(extra);
    o.log_path = relay_log_path(tag_ + "-" + name);
    relays_.push_back(std::make_unique<relay_process>(std::move(o)));
    return *relays_.back();
}

relay_process& scenario::start_relay_with(const std::string& name, std::vector<std::string> args) {
    relay_options o;
    o.args = std::move(args);
    o.log_path = relay_log_path(tag_ + "-" + name);
    relays_.push_back(std::make_unique<relay_process>(std::move(o)));
    return *relays_.back();
}

relay_process& scenario::start_relay_via(const std::string& conninfo, const std::string& name,
                                         const std::vector<std::string>& extra) {
    relay_options o;
    o.args = relay_args(extra);
    for (std::size_t i = 0; i + 1 < o.args.size(); ++i)
        if (o.args[i] == "--postgres") o.args[i + 1] = conninfo;
    o.log_path = relay_log_path(tag_ + "-" + name);
    relays_.push_back(std::make_unique<relay_process>(std::move(o)));
    return *relays_.back();
}

void scenario::wait_streaming(relay_process& r, std::chrono::seconds timeout) {
    // Held by a walsender, not just active: while the relay's setup connection runs
    // pg_create_logical_replication_slot, that ordinary backend holds the slot for a
    // moment, and a test that took its pid for the relay's walsender failed
    // (08_standby_takeover, seen once under load).
    const std::string held = "SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid"
                             " WHERE s.slot_name = " + sql_literal(slot_) + " AND a.backend_type = 'walsender'";
    bool ok = wait_until(clock::now() + timeout, [&] {
        if (!r.running()) return true;  // reported below
        return admin_.scalar(held) == std::optional<std::string>("1");
    });
    if (!r.running()) {
        auto st = r.wait_exit(clock::now());
        throw std::runtime_error("relay exited before streaming (" + (st ? st->describe() : std::string("?")) +
                                 "), log " + r.log_path().string() + ":\n" + r.log_text(4000));
    }
    if (!ok)
        throw std::runtime_error("slot " + slot_ + " not active after " + std::to_string(timeout.count()) +
                                 " s, log " + r.log_path().string() + ":\n" + r.log_text(4000));
}

slot_state scenario::slot_info() {
    auto rows = admin_.query(
        "SELECT active_pid::text, pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint::text"
        " FROM pg_replication_slots WHERE slot_name = " + sql_literal(slot_));
    slot_state s;
    if (rows.empty()) return s;
    s.exists = true;
    if (rows[0][0]) s.active_pid = std::stoi(*rows[0][0]);
    if (rows[0][1]) s.confirmed_flush = std::stoull(*rows[0][1]);
    return s;
}

std::uint64_t scenario::current_wal() {
    return std::stoull(*admin_.scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint::text"));
}

check::check_report scenario::check(std::chrono::seconds wait, bool allow_duplicates, std::optional<std::size_t> expect,
                                    bool lsn_headers, std::vector<std::string> capture_ids) {
    check::check_options o;
    o.postgres = env().pg;
    o.brokers = env().brokers;
    o.table = table_;
    o.topic_template = topic_template();
    o.order_column = "seq";
    o.allow_duplicates = allow_duplicates;
    o.check_lsn_headers = lsn_headers;
    o.wait = wait;
    o.expect = expect;
    o.capture_ids = std::move(capture_ids);
    return check::run_check(o);
}

// ---- writer

outbox_writer::outbox_writer(const std::string& conninfo, std::string table, std::string agg_prefix, int aggregates,
                             int types)
    : conn_(std::make_unique<pg>(conninfo)), conninfo_(conninfo), table_(std::move(table)),
      agg_prefix_(std::move(agg_prefix)),
      aggregates_(aggregates), types_(types), next_seq_(static_cast<std::size_t>(aggregates), 0) {}

outbox_writer::~outbox_writer() { stop(); }

std::vector<std::string> outbox_writer::write_txn(std::size_t n) {
    // One multi-row INSERT per transaction: rows enter the WAL in VALUES
    // order, so seq increases per aggregate in commit order. The seq values
    // are only taken once the transaction committed.
    std::vector<std::int64_t> seq = next_seq_;
    std::size_t agg = next_agg_;
    std::ostringstream sql;
    sql << "INSERT INTO " << table_ << " (aggregatetype, aggregateid, type, payload, seq) VALUES ";
    for (std::size_t i = 0; i < n; ++i) {
        std::size_t a = agg;
        agg = (agg + 1) % static_cast<std::size_t>(aggregates_);
        std::int64_t s = seq[a]++;
        std::string aid = agg_prefix_ + "-" + std::to_string(a);
        // Payload exercises what jsonb normalises: key order, spacing,
        // numeric scale, escapes and non-ASCII text.
        std::string payload = "{\"seq\": " + std::to_string(s) + ", \"agg\": \"" + aid +
                              "\", \"amount\": 12.50, \"note\": \"caf\u00e9 \\\"q\\\" \\u00e9\", \"tags\": [1, null, true],"
                              " \"a\": {\"z\": 1, \"b\": 2}}";
        sql << (i ? "," : "") << "('type" << (a % static_cast<std::size_t>(types_)) << "', " << sql_literal(aid) << ", "
            << (s % 2 ? "'OrderUpdated'" : "'OrderCreated'") << ", " << sql_literal(payload) << "::jsonb, " << s << ")";
    }
    sql << " RETURNING id::text";
    auto rows = conn_->query(sql.str());
    next_seq_ = std::move(seq);
    next_agg_ = agg;
    rows_ += n;
    ++txns_;
    std::vector<std::string> ids;
    ids.reserve(rows.size());
    for (auto& r : rows) ids.push_back(*r[0]);
    return ids;
}

void outbox_writer::resync() {
    conn_ = std::make_unique<pg>(conninfo_);
    // Only this writer's aggregates: '<prefix>-<n>'.
    auto rows = conn_->query("SELECT split_part(aggregateid, '-', 2)::int, max(seq), count(*) FROM " + table_ +
                             " WHERE aggregateid LIKE " + sql_literal(agg_prefix_ + "-%") + " GROUP BY 1");
    std::size_t total = 0;
    std::fill(next_seq_.begin(), next_seq_.end(), 0);
    for (auto& r : rows) {
        next_seq_.at(std::stoul(*r[0])) = std::stoll(*r[1]) + 1;
        total += std::stoull(*r[2]);
    }
    rows_ = total;
}

void outbox_writer::start(std::vector<std::size_t> sizes, std::chrono::milliseconds pause, std::size_t max_rows,
                          bool ride_out_restarts) {
    stop_ = false;
    done_ = false;
    thread_ = std::thread([this, sizes = std::move(sizes), pause, max_rows, ride_out_restarts] {
        try {
            for (std::size_t i = 0; !stop_ && rows_ < max_rows; ++i) {
                try {
                    write_txn(std::min(sizes[i % sizes.size()], max_rows - rows_));
                } catch (const std::exception&) {
                    if (!ride_out_restarts) throw;
                    ++reconnects_;
                    if (!wait_until(clock::now() + 60s, [&] { resync(); return true; }, 200ms))
                        throw std::runtime_error("writer: Postgres did not come back within 60 s");
                }
                if (pause.count() > 0) std::this_thread::sleep_for(pause);
            }
        } catch (const std::exception& e) {
            error_ = e.what();
        }
        done_ = true;
    });
}

std::string outbox_writer::stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return error_;
}

}  // namespace outbox::it::scn
