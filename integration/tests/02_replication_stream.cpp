// Scenario 02: the Postgres side on its own, against a real server.
// prepare_postgres creates what is missing and names each failure with its
// own code; replication_stream connects, streams a transaction, confirms its
// end LSN, is refused on a busy slot, and holds data back while paused while
// still answering the server.
//
// Needs OUTBOX_TEST_PG (a conninfo, e.g. from `integration/stack.sh env`);
// fails when it is missing. Every object gets a unique name, so the tests
// can run against a shared database.
#include "harness.hpp"
#include "outbox_relay/io/pg_setup.hpp"
#include "outbox_relay/io/replication_stream.hpp"

#include <boost/asio/io_context.hpp>
#include <doctest/doctest.h>
#include <libpq-fe.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using outbox::lsn;
using outbox::io::replication_stream;
using outbox::io::setup_failure;
using outbox::io::stream_error;
using outbox::io::stream_error_kind;
using outbox::io::stream_handlers;
using outbox::io::stream_options;
using outbox::it::unique_name;
using outbox::it::wait_until;  // throws on timeout, failing the test case

std::string test_conninfo() { return outbox::it::env_or_fail("OUTBOX_TEST_PG"); }

// Test-side blocking SQL session; throws on any error.
class sql_session {
public:
    explicit sql_session(const std::string& conninfo) {
        const char* keys[] = {"dbname", "application_name", nullptr};
        const char* vals[] = {conninfo.c_str(), "it02-sql", nullptr};
        c_ = PQconnectdbParams(keys, vals, 1);
        if (PQstatus(c_) != CONNECTION_OK) {
            std::string m = PQerrorMessage(c_);
            PQfinish(c_);
            throw std::runtime_error("test connection failed: " + m);
        }
    }
    ~sql_session() { PQfinish(c_); }
    sql_session(const sql_session&) = delete;
    sql_session& operator=(const sql_session&) = delete;

    // Runs `sql`; returns the rows as text (NULL -> nullopt).
    std::vector<std::vector<std::optional<std::string>>> query(const std::string& sql) {
        PGresult* r = PQexec(c_, sql.c_str());
        auto st = PQresultStatus(r);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            std::string m = PQresultErrorMessage(r);
            PQclear(r);
            throw std::runtime_error("SQL failed: " + sql + ": " + m);
        }
        std::vector<std::vector<std::optional<std::string>>> rows;
        for (int i = 0; i < PQntuples(r); ++i) {
            auto& row = rows.emplace_back();
            for (int j = 0; j < PQnfields(r); ++j)
                row.push_back(PQgetisnull(r, i, j) ? std::nullopt
                                                   : std::optional<std::string>(PQgetvalue(r, i, j)));
        }
        PQclear(r);
        return rows;
    }
    void exec(const std::string& sql) { (void)query(sql); }
    // First column of the first row; nullopt if no row or NULL.
    std::optional<std::string> scalar(const std::string& sql) {
        auto rows = query(sql);
        if (rows.empty() || rows[0].empty()) return std::nullopt;
        return rows[0][0];
    }

private:
    PGconn* c_ = nullptr;
};

lsn parse_lsn(const std::optional<std::string>& s) {
    if (!s) throw std::runtime_error("expected an LSN, got NULL");
    auto r = lsn::parse(*s);
    if (!r) throw std::runtime_error("bad LSN text " + *s);
    return *r;
}

// Runs the loop until `pred` or the deadline; returns pred().
bool run_until(boost::asio::io_context& ioc, const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    auto deadline = clock_type::now() + timeout;
    while (!pred() && clock_type::now() < deadline) {
        if (ioc.stopped()) ioc.restart();
        ioc.run_one_for(20ms);
    }
    return pred();
}

// A fresh outbox table with the default Debezium-style columns, plus the
// slot/publication names a test uses; everything is dropped afterwards.
struct outbox_fixture {
    std::string conninfo = test_conninfo();
    sql_session sql{conninfo};
    std::string table = unique_name("it02_outbox");
    std::string slot = unique_name("it02_slot");
    std::string publication = unique_name("it02_pub");

    outbox_fixture() {
        sql.exec("CREATE TABLE public." + table +
                 " (id bigserial PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text NOT NULL,"
                 " type text NOT NULL, payload jsonb)");
    }
    ~outbox_fixture() {
        try {
            // A walsender may take a moment to exit after its client closed.
            wait_until(
                [&] {
                    return sql.scalar("SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name = '" +
                                      slot + "'") == "0";
                },
                10s, "slot inactive before cleanup");
            sql.exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '" +
                     slot + "'");
            sql.exec("DROP PUBLICATION IF EXISTS " + publication);
            sql.exec("DROP TABLE IF EXISTS public." + table);
        } catch (const std::exception& e) {
            MESSAGE("cleanup failed: " << e.what());
        }
    }

    outbox::relay_config config(bool create = true) const {
        outbox::relay_config c;
        c.postgres = conninfo;
        c.slot = slot;
        c.publication = publication;
        c.routing.schema = "public";
        c.routing.table = table;
        c.create_slot = create;
        return c;
    }

    stream_options stream_opts() const {
        stream_options o;
        o.conninfo = conninfo;
        o.slot = slot;
        o.publication = publication;
        o.application_name = "it02-" + slot;
        return o;
    }

    void insert_rows(int n, const std::string& aggregate = "order") {
        sql.exec("INSERT INTO public." + table +
                 " (aggregatetype, aggregateid, type, payload) SELECT '" + aggregate +
                 "', 'agg-' || g, 'created', jsonb_build_object('n', g) FROM generate_series(1, " +
                 std::to_string(n) + ") g");
    }
};

// What a stream delivered, recorded by its handlers.
struct recorder {
    bool started = false;
    lsn slot_confirmed;
    outbox::io::stream_info info;
    std::optional<stream_error> closed;
    int xlog = 0;
    int inserts = 0;      // pgoutput 'I'
    int commits = 0;      // pgoutput 'C'
    int keepalives = 0;
    lsn last_commit_end;  // Commit.end_lsn (payload bytes 10..17)

    stream_handlers handlers() {
        stream_handlers h;
        h.on_started = [this](const outbox::io::stream_info& i) {
            started = true;
            slot_confirmed = i.slot_confirmed;
            info = i;
        };
        h.on_copy_data = [this](std::string_view frame) {
            auto m = outbox::walsender::parse_copy_data(frame);
            REQUIRE(m.has_value());
            if (std::holds_alternative<outbox::walsender::keepalive>(*m)) {
                ++keepalives;
                return;
            }
            const auto& x = std::get<outbox::walsender::xlog_data>(*m);
            ++xlog;
            if (x.payload.empty()) return;
            if (x.payload[0] == 'I') ++inserts;
            if (x.payload[0] == 'C' && x.payload.size() >= 26) {
                // Commit: Byte1 'C', Int8 flags, Int64 commit_lsn, Int64 end_lsn, Int64 ts.
                std::uint64_t v = 0;
                for (int i = 10; i < 18; ++i) v = (v << 8) | static_cast<unsigned char>(x.payload[i]);
                last_commit_end = lsn(v);
                ++commits;
            }
        };
        h.on_closed = [this](const stream_error& e) { closed = e; };
        return h;
    }
};

outbox::walsender::status_update status_at(lsn write, lsn flush) {
    outbox::walsender::status_update s;
    s.write = write;
    s.flush = flush;
    s.apply = lsn{};
    s.client_time = outbox::walsender::to_pg_time(std::chrono::system_clock::now());
    return s;
}

}  // namespace

TEST_SUITE("02_replication_stream") {

TEST_CASE("setup_creates_publication_and_slot") {
    outbox_fixture f;
    auto r = outbox::io::prepare_postgres(f.config());
    INFO(r.message);
    REQUIRE(r.failure == setup_failure::ok);
    CHECK(f.sql.scalar("SELECT count(*) FROM pg_publication_tables WHERE pubname = '" + f.publication +
                       "' AND tablename = '" + f.table + "'") == "1");
    CHECK(f.sql.scalar("SELECT pubinsert::text || pubupdate::text || pubdelete::text FROM pg_publication "
                       "WHERE pubname = '" + f.publication + "'") == "truefalsefalse");
    CHECK(f.sql.scalar("SELECT plugin FROM pg_replication_slots WHERE slot_name = '" + f.slot +
                       "' AND database = current_database()") == "pgoutput");
}

TEST_CASE("setup_second_call_is_noop") {
    outbox_fixture f;
    REQUIRE(outbox::io::prepare_postgres(f.config()).failure == setup_failure::ok);
    auto slot_before = f.sql.scalar("SELECT restart_lsn::text || ' ' || confirmed_flush_lsn::text FROM "
                                    "pg_replication_slots WHERE slot_name = '" + f.slot + "'");
    auto pub_oid = f.sql.scalar("SELECT oid FROM pg_publication WHERE pubname = '" + f.publication + "'");
    auto again = outbox::io::prepare_postgres(f.config());
    INFO(again.message);
    CHECK(again.failure == setup_failure::ok);
    // Same publication object and an untouched slot: nothing was recreated.
    CHECK(f.sql.scalar("SELECT oid FROM pg_publication WHERE pubname = '" + f.publication + "'") == pub_oid);
    CHECK(f.sql.scalar("SELECT restart_lsn::text || ' ' || confirmed_flush_lsn::text FROM pg_replication_slots "
                       "WHERE slot_name = '" + f.slot + "'") == slot_before);
}

TEST_CASE("setup_missing_table") {
    outbox_fixture f;
    auto cfg = f.config();
    cfg.routing.table = f.table + "_absent";
    auto r = outbox::io::prepare_postgres(cfg);
    CHECK(r.failure == setup_failure::table_missing);
    CHECK(r.message.find(cfg.routing.table) != std::string::npos);
    // Nothing is created when a check fails first.
    CHECK(f.sql.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + f.slot + "'") == "0");
}

TEST_CASE("setup_missing_column") {
    outbox_fixture f;
    auto cfg = f.config();
    cfg.routing.topic_template = "outbox.{tenant_absent}.{aggregatetype}";
    auto r = outbox::io::prepare_postgres(cfg);
    CHECK(r.failure == setup_failure::column_missing);
    CHECK(r.message.find("tenant_absent") != std::string::npos);

    auto cfg2 = f.config();
    cfg2.routing.columns.payload = "body_absent";
    auto r2 = outbox::io::prepare_postgres(cfg2);
    CHECK(r2.failure == setup_failure::column_missing);
    CHECK(r2.message.find("body_absent") != std::string::npos);
}

TEST_CASE("setup_missing_publication_without_create") {
    outbox_fixture f;
    auto r = outbox::io::prepare_postgres(f.config(/*create=*/false));
    CHECK(r.failure == setup_failure::publication);
    CHECK(r.message.find("CREATE PUBLICATION") != std::string::npos);
    CHECK(f.sql.scalar("SELECT count(*) FROM pg_publication WHERE pubname = '" + f.publication + "'") == "0");
}

TEST_CASE("setup_publication_without_the_table") {
    outbox_fixture f;
    f.sql.exec("CREATE TABLE public." + f.table + "_other (x int)");
    f.sql.exec("CREATE PUBLICATION " + f.publication + " FOR TABLE public." + f.table + "_other");
    auto r = outbox::io::prepare_postgres(f.config());
    CHECK(r.failure == setup_failure::publication);
    CHECK(r.message.find("ADD TABLE") != std::string::npos);
    // Not altered behind the operator's back.
    CHECK(f.sql.scalar("SELECT count(*) FROM pg_publication_tables WHERE pubname = '" + f.publication +
                       "' AND tablename = '" + f.table + "'") == "0");
    f.sql.exec("DROP PUBLICATION " + f.publication);
    f.sql.exec("DROP TABLE public." + f.table + "_other");
}

TEST_CASE("setup_missing_slot_without_create") {
    outbox_fixture f;
    f.sql.exec("CREATE PUBLICATION " + f.publication + " FOR TABLE public." + f.table +
               " WITH (publish = 'insert')");
    auto r = outbox::io::prepare_postgres(f.config(/*create=*/false));
    CHECK(r.failure == setup_failure::slot);
    CHECK(r.message.find("pg_create_logical_replication_slot") != std::string::npos);
    CHECK(f.sql.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + f.slot + "'") == "0");
}

TEST_CASE("stream_missing_slot_is_fatal") {
    outbox_fixture f;
    boost::asio::io_context ioc;
    recorder rec;
    replication_stream s(ioc, f.stream_opts(), rec.handlers());
    s.start(lsn{});
    REQUIRE(run_until(ioc, [&] { return rec.closed.has_value(); }, 15s));
    CHECK_FALSE(rec.started);
    CHECK(rec.closed->kind == stream_error_kind::fatal);
    CHECK(rec.closed->message.find("does not exist") != std::string::npos);
}

TEST_CASE("stream_commit_then_confirm_end_lsn") {
    outbox_fixture f;
    REQUIRE(outbox::io::prepare_postgres(f.config()).failure == setup_failure::ok);
    const lsn created_confirmed =
        parse_lsn(f.sql.scalar("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" + f.slot +
                               "'"));

    boost::asio::io_context ioc;
    recorder rec;
    auto s = std::make_unique<replication_stream>(ioc, f.stream_opts(), rec.handlers());
    s->start(lsn{});
    REQUIRE(run_until(ioc, [&] { return rec.started || rec.closed; }, 15s));
    REQUIRE_MESSAGE(!rec.closed, rec.closed->message);
    CHECK(s->streaming());
    CHECK(rec.slot_confirmed == created_confirmed);
    // IDENTIFY_SYSTEM: the cluster's identity, as the server itself reports it.
    CHECK(std::optional<std::string>(rec.info.system_id) == f.sql.scalar("SELECT system_identifier::text FROM pg_control_system()"));
    CHECK(std::optional<std::string>(std::to_string(rec.info.timeline)) ==
          f.sql.scalar("SELECT timeline_id::text FROM pg_control_checkpoint()"));
    CHECK(std::optional<std::string>(rec.info.database) == f.sql.scalar("SELECT current_database()"));
    CHECK(rec.info.server_version >= 150000);

    f.insert_rows(3);  // one transaction
    REQUIRE(run_until(ioc, [&] { return rec.commits >= 1 || rec.closed; }, 15s));
    REQUIRE(!rec.closed);
    CHECK(rec.inserts == 3);
    const lsn end = rec.last_commit_end;
    CHECK(end > created_confirmed);

    s->send_status(status_at(end, end));
    bool stopped = false;
    s->stop([&] { stopped = true; });
    REQUIRE(run_until(ioc, [&] { return stopped; }, 10s));
    CHECK_FALSE(rec.closed);  // a requested stop is not reported as an error
    CHECK_FALSE(s->streaming());

    wait_until(
        [&] {
            return parse_lsn(f.sql.scalar("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" +
                                          f.slot + "'")) == end;
        },
        10s, "confirmed_flush_lsn == the commit's end_lsn");

    // Restart = resume: a new stream from 0/0 begins after the confirmed
    // transaction, so only the next row arrives.
    s.reset();
    wait_until(
        [&] {
            return f.sql.scalar("SELECT active FROM pg_replication_slots WHERE slot_name = '" + f.slot + "'") == "f";
        },
        10s, "slot released after stop");
    recorder rec2;
    replication_stream s2(ioc, f.stream_opts(), rec2.handlers());
    s2.start(lsn{});
    REQUIRE(run_until(ioc, [&] { return rec2.started || rec2.closed; }, 15s));
    REQUIRE_MESSAGE(!rec2.closed, rec2.closed->message);
    CHECK(rec2.slot_confirmed == end);
    f.insert_rows(1);
    REQUIRE(run_until(ioc, [&] { return rec2.commits >= 1 || rec2.closed; }, 15s));
    CHECK(rec2.inserts == 1);
    CHECK(rec2.last_commit_end > end);
    bool stopped2 = false;
    s2.stop([&] { stopped2 = true; });
    REQUIRE(run_until(ioc, [&] { return stopped2; }, 10s));
}

TEST_CASE("second_stream_on_active_slot_is_slot_busy") {
    outbox_fixture f;
    REQUIRE(outbox::io::prepare_postgres(f.config()).failure == setup_failure::ok);
    boost::asio::io_context ioc;
    recorder first, second;
    replication_stream a(ioc, f.stream_opts(), first.handlers());
    a.start(lsn{});
    REQUIRE(run_until(ioc, [&] { return first.started || first.closed; }, 15s));
    REQUIRE_MESSAGE(!first.closed, first.closed->message);

    replication_stream b(ioc, f.stream_opts(), second.handlers());
    b.start(lsn{});
    REQUIRE(run_until(ioc, [&] { return second.closed.has_value(); }, 15s));
    CHECK_FALSE(second.started);
    CHECK(second.closed->kind == stream_error_kind::slot_busy);
    CHECK(second.closed->sqlstate == "55006");
    CHECK(a.streaming());  // the holder is unaffected
    CHECK_FALSE(first.closed);

    bool stopped = false;
    a.stop([&] { stopped = true; });
    REQUIRE(run_until(ioc, [&] { return stopped; }, 10s));
}

TEST_CASE("terminated_walsender_is_connection_lost") {
    outbox_fixture f;
    REQUIRE(outbox::io::prepare_postgres(f.config()).failure == setup_failure::ok);
    boost::asio::io_context ioc;
    recorder rec;
    replication_stream s(ioc, f.stream_opts(), rec.handlers());
    s.start(lsn{});
    REQUIRE(run_until(ioc, [&] { return rec.started || rec.closed; }, 15s));
    REQUIRE_MESSAGE(!rec.closed, rec.closed->message);

    // What an operator or a server restart does: the relay must treat it as
    // transient (reconnect), not as fatal.
    CHECK(f.sql.scalar("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '" +
                       f.slot + "'") == "t");
    REQUIRE(run_until(ioc, [&] { return rec.closed.has_value(); }, 15s));
    CHECK(rec.closed->kind == stream_error_kind::connection_lost);
    CHECK_FALSE(rec.closed->message.empty());
    CHECK_FALSE(s.streaming());
    bool stopped = false;
    s.stop([&] { stopped = true; });  // stop after close: done runs at once
    CHECK(stopped);
}

TEST_CASE("paused_stream_holds_data_but_still_replies") {
    outbox_fixture f;
    REQUIRE(outbox::io::prepare_postgres(f.config()).failure == setup_failure::ok);
    boost::asio::io_context ioc;
    recorder rec;
    stream_options opts = f.stream_opts();
    replication_stream s(ioc, opts, rec.handlers());
    s.start(lsn{});
    REQUIRE(run_until(ioc, [&] { return rec.started || rec.closed; }, 15s));
    REQUIRE_MESSAGE(!rec.closed, rec.closed->message);

    s.pause_reading();
    CHECK(s.reading_paused());
    f.insert_rows(500);
    const lsn after_insert = parse_lsn(f.sql.scalar("SELECT pg_current_wal_lsn()"));
    const std::string stat_where = " FROM pg_stat_replication WHERE application_name = '" + opts.application_name + "'";

    // The walsender has decoded and sent the whole transaction: the data sits
    // in our socket, yet no frame is handed out while paused.
    REQUIRE(run_until(
        ioc,
        [&] {
            auto sent = f.sql.scalar("SELECT sent_lsn" + stat_where);
            return sent && parse_lsn(sent) >= after_insert;
        },
        15s));
    CHECK(rec.xlog == 0);

    // The write path still works while paused: the server records our reply.
    // write = a position the server has not heard from us before.
    auto reply_before = f.sql.scalar("SELECT coalesce(reply_time::text, '')" + stat_where);
    s.send_status(status_at(after_insert, rec.slot_confirmed));
    REQUIRE(run_until(
        ioc,
        [&] {
            auto w = f.sql.scalar("SELECT write_lsn" + stat_where);
            return w && parse_lsn(w) == after_insert;
        },
        10s));
    CHECK(f.sql.scalar("SELECT coalesce(reply_time::text, '')" + stat_where) != reply_before);
    CHECK(rec.xlog == 0);
    CHECK_FALSE(rec.closed);

    s.resume_reading();
    CHECK_FALSE(s.reading_paused());
    REQUIRE(run_until(ioc, [&] { return rec.commits >= 1 || rec.closed; }, 15s));
    REQUIRE(!rec.closed);
    CHECK(rec.inserts == 500);

    bool stopped = false;
    s.stop([&] { stopped = true; });
    REQUIRE(run_until(ioc, [&] { return stopped; }, 10s));
}

TEST_CASE("stream_destroyed_inside_handler_is_safe") {
    outbox_fixture f;
    REQUIRE(outbox::io::prepare_postgres(f.config()).failure == setup_failure::ok);
    boost::asio::io_context ioc;
    recorder rec;
    std::unique_ptr<replication_stream> s;
    auto h = rec.handlers();
    auto base = h.on_copy_data;
    // Destroying the stream from its own callback must neither crash nor
    // deliver more frames (the transaction has several).
    h.on_copy_data = [&](std::string_view frame) {
        base(frame);
        if (rec.xlog > 0) s.reset();
    };
    s = std::make_unique<replication_stream>(ioc, f.stream_opts(), h);
    s->start(lsn{});
    REQUIRE(run_until(ioc, [&] { return rec.started || rec.closed; }, 15s));
    f.insert_rows(5);
    REQUIRE(run_until(ioc, [&] { return s == nullptr; }, 15s));
    // Run what the loop still holds (the aborted waits); no handler may run.
    ioc.restart();
    ioc.poll();
    CHECK(rec.xlog == 1);
    CHECK_FALSE(rec.closed);
    wait_until(
        [&] {
            return f.sql.scalar("SELECT active FROM pg_replication_slots WHERE slot_name = '" + f.slot + "'") == "f";
        },
        10s, "slot released after the stream was destroyed");
}

}  // TEST_SUITE
