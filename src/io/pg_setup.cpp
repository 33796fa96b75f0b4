// Start-up checks over an ordinary blocking libpq connection. Runs once,
// before the loop streams, so blocking calls are fine here. Each check fails
// with one line saying what is wrong and what to run, and its own exit code.
#include "outbox_relay/io/pg_setup.hpp"

#include "outbox_relay/io/log.hpp"

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace outbox::io {

namespace {

constexpr std::string_view mod = "pg/setup";

std::string one_line(std::string_view s) {
    std::string out;
    for (char c : s) out += (c == '\n' || c == '\r') ? ' ' : c;
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

struct conn_deleter {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
struct result_deleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using conn_ptr = std::unique_ptr<PGconn, conn_deleter>;
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

setup_result failed(exit_code f, std::string msg) {
    log::error(mod, "event=setup_failed code={} error={}", static_cast<int>(f), log::quote(msg));
    return {f, std::move(msg)};
}

// The mapped columns plus the {column} placeholders of the topic template,
// each with the config key that asked for it (for the error message).
std::vector<std::pair<std::string, std::string>> required_columns(const routing_config& r) {
    std::vector<std::pair<std::string, std::string>> out;
    auto add = [&](const std::string& col, std::string why) {
        if (col.empty()) return;
        for (auto& [c, _] : out)
            if (c == col) return;
        out.emplace_back(col, std::move(why));
    };
    add(r.columns.id, "routing column id");
    add(r.columns.aggregatetype, "routing column aggregatetype");
    add(r.columns.aggregateid, "routing column aggregateid");
    add(r.columns.type, "routing column type");
    add(r.columns.payload, "routing column payload");
    const std::string& t = r.topic_template;
    for (std::size_t i = 0; i < t.size();) {
        auto open = t.find('{', i);
        if (open == std::string::npos) break;
        auto close = t.find('}', open + 1);
        if (close == std::string::npos) break;  // config validation reports it
        add(t.substr(open + 1, close - open - 1), "topic template");
        i = close + 1;
    }
    return out;
}

// Small helper around a blocking connection: quoting and single-value queries.
class session {
public:
    explicit session(PGconn* c) : c_(c) {}

    std::string ident(std::string_view s) const {
        char* q = PQescapeIdentifier(c_, s.data(), s.size());
        if (!q) return {};
        std::string out = q;
        PQfreemem(q);
        return out;
    }
    std::string literal(std::string_view s) const {
        char* q = PQescapeLiteral(c_, s.data(), s.size());
        if (!q) return {};
        std::string out = q;
        PQfreemem(q);
        return out;
    }

    // Runs `sql`; on failure returns null and leaves the message in error().
    result_ptr exec(const std::string& sql, ExecStatusType want = PGRES_TUPLES_OK) {
        result_ptr r(PQexec(c_, sql.c_str()));
        if (!r || PQresultStatus(r.get()) != want) {
            error_ = r ? one_line(PQresultErrorMessage(r.get())) : one_line(PQerrorMessage(c_));
            if (error_.empty()) error_ = "unexpected result";
            return nullptr;
        }
        return r;
    }
    const std::string& error() const { return error_; }

private:
    PGconn* c_;
    std::string error_;
};

}  // namespace

setup_result prepare_postgres(const relay_config& cfg) {
    const auto& rt = cfg.routing;
    const std::string table_text = rt.schema + "." + rt.table;

    // --- connect (the conninfo may hold a password: never echo it)
    const char* keys[] = {"dbname", "application_name", "client_encoding", nullptr};
    const char* vals[] = {cfg.postgres.c_str(), "outbox-relay-setup", "UTF8", nullptr};
    conn_ptr conn(PQconnectdbParams(keys, vals, /*expand_dbname=*/1));
    if (!conn) return failed(exit_code::pg_connect, "cannot connect to Postgres: out of memory");
    if (PQstatus(conn.get()) != CONNECTION_OK)
        return failed(exit_code::pg_connect,
                      "cannot connect to Postgres: " + one_line(PQerrorMessage(conn.get())) +
                          " (check --postgres host, port, user, password and pg_hba.conf)");
    session db(conn.get());
    const std::string slot_lit = db.literal(cfg.slot);
    const std::string pub_lit = db.literal(cfg.publication);
    const std::string pub_id = db.ident(cfg.publication);
    const std::string schema_lit = db.literal(rt.schema);
    const std::string table_lit = db.literal(rt.table);
    const std::string qualified = db.ident(rt.schema) + "." + db.ident(rt.table);
    if (slot_lit.empty() || pub_lit.empty() || pub_id.empty() || schema_lit.empty() || table_lit.empty())
        return failed(exit_code::pg_connect, "cannot quote names: " + one_line(PQerrorMessage(conn.get())));

    // --- wal_level
    {
        auto r = db.exec("SHOW wal_level");
        if (!r) return failed(exit_code::wal_level, "cannot read wal_level: " + db.error());
        std::string level = PQgetvalue(r.get(), 0, 0);
        if (level != "logical")
            return failed(exit_code::wal_level,
                          "wal_level is " + level + ": set wal_level = logical in postgresql.conf and restart");
    }

    // --- role may replicate
    std::string role;
    {
        auto r = db.exec("SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user");
        if (!r || PQntuples(r.get()) != 1)
            return failed(exit_code::privileges, "cannot read the role's attributes: " + db.error());
        role = PQgetvalue(r.get(), 0, 0);
        if (std::string_view(PQgetvalue(r.get(), 0, 1)) != "t")
            return failed(exit_code::privileges,
                          "role " + role + " lacks REPLICATION: run ALTER ROLE " + db.ident(role) + " REPLICATION");
    }

    // --- table exists, readable, has the mapped columns
    std::string relid;
    {
        auto r = db.exec("SELECT to_regclass(" + db.literal(qualified) + ")::oid");
        if (!r) return failed(exit_code::table_missing, "cannot look up table " + table_text + ": " + db.error());
        if (PQgetisnull(r.get(), 0, 0))
            return failed(exit_code::table_missing,
                          "table " + table_text + " does not exist: create the outbox table or fix --table");
        relid = PQgetvalue(r.get(), 0, 0);
    }
    {
        auto r = db.exec("SELECT has_table_privilege(" + relid + "::oid, 'SELECT')");
        if (!r) return failed(exit_code::privileges, "cannot check privileges: " + db.error());
        if (std::string_view(PQgetvalue(r.get(), 0, 0)) != "t")
            return failed(exit_code::privileges, "role " + role + " cannot read " + table_text +
                                                         ": run GRANT SELECT ON " + qualified + " TO " +
                                                         db.ident(role));
    }
    const auto needed = required_columns(rt);
    {
        auto r = db.exec("SELECT attname FROM pg_attribute WHERE attrelid = " + relid +
                         "::oid AND attnum > 0 AND NOT attisdropped");
        if (!r) return failed(exit_code::column_missing, "cannot list columns: " + db.error());
        std::set<std::string> have;
        for (int i = 0; i < PQntuples(r.get()); ++i) have.insert(PQgetvalue(r.get(), i, 0));
        for (const auto& [col, why] : needed)
            if (!have.count(col))
                return failed(exit_code::column_missing, "table " + table_text + " has no column \"" + col +
                                                                 "\" (needed by " + why +
                                                                 "): add it or change the routing config");
    }

    // A partitioned outbox (the usual way to clean one up: drop old
    // partitions) must be published through its root: otherwise pgoutput
    // names the leaf partitions, which are not the configured table, and
    // every row would be ignored.
    bool partitioned = false;
    {
        auto r = db.exec("SELECT relkind = 'p' FROM pg_class WHERE oid = " + relid + "::oid");
        if (!r || PQntuples(r.get()) != 1)
            return failed(exit_code::table_missing, "cannot read pg_class for " + table_text + ": " + db.error());
        partitioned = std::string_view(PQgetvalue(r.get(), 0, 0)) == "t";
    }

    // --- publication (before the slot: PG15 looks the publication up at
    // the decoded WAL position, so one created after the slot breaks decoding).
    // publish_via_partition_root changes nothing for a plain table and makes
    // a partitioned one (and partitions attached later) arrive as the root.
    const std::string create_pub = "CREATE PUBLICATION " + pub_id + " FOR TABLE " + qualified +
                                   " WITH (publish = 'insert', publish_via_partition_root = true)";
    {
        auto r = db.exec("SELECT pubinsert, pubviaroot FROM pg_publication WHERE pubname = " + pub_lit);
        if (!r) return failed(exit_code::publication, "cannot read pg_publication: " + db.error());
        if (PQntuples(r.get()) == 0) {
            if (!cfg.create_slot)
                return failed(exit_code::publication,
                              "publication " + cfg.publication + " does not exist: run " + create_pub);
            if (!db.exec(create_pub, PGRES_COMMAND_OK))
                return failed(exit_code::publication,
                              "cannot create publication " + cfg.publication + ": " + db.error());
            log::info(mod, "event=publication_created publication={} table={}", log::quote(cfg.publication),
                      log::quote(table_text));
        } else {
            if (std::string_view(PQgetvalue(r.get(), 0, 0)) != "t")
                return failed(exit_code::publication,
                              "publication " + cfg.publication + " does not publish inserts: run ALTER PUBLICATION " +
                                  pub_id + " SET (publish = 'insert')");
            if (partitioned && std::string_view(PQgetvalue(r.get(), 0, 1)) != "t")
                return failed(exit_code::publication,
                              "publication " + cfg.publication + " does not publish via the partition root, so rows of the "
                                  "partitioned table " + table_text + " would arrive under the partitions' names and be "
                                  "missed: run ALTER PUBLICATION " + pub_id + " SET (publish_via_partition_root = true)");
            auto t = db.exec("SELECT 1 FROM pg_publication_tables WHERE pubname = " + pub_lit +
                             " AND schemaname = " + schema_lit + " AND tablename = " + table_lit);
            if (!t) return failed(exit_code::publication, "cannot read pg_publication_tables: " + db.error());
            if (PQntuples(t.get()) == 0)
                return failed(exit_code::publication, "publication " + cfg.publication + " does not include " +
                                                              table_text + ": run ALTER PUBLICATION " + pub_id +
                                                              " ADD TABLE " + qualified);
            // PG15 column lists: every mapped column must be published.
            if (PQserverVersion(conn.get()) >= 150000) {
                auto c = db.exec("SELECT unnest(attnames) FROM pg_publication_tables WHERE pubname = " + pub_lit +
                                 " AND schemaname = " + schema_lit + " AND tablename = " + table_lit);
                if (!c) return failed(exit_code::publication, "cannot read the column list: " + db.error());
                std::set<std::string> published;
                for (int i = 0; i < PQntuples(c.get()); ++i) published.insert(PQgetvalue(c.get(), i, 0));
                for (const auto& [col, why] : needed)
                    if (!published.count(col))
                        return failed(exit_code::publication,
                                      "publication " + cfg.publication + " does not publish column \"" + col +
                                          "\" of " + table_text + " (needed by " + why +
                                          "): drop its column list with ALTER PUBLICATION " + pub_id +
                                          " SET TABLE " + qualified);
            }
        }
    }

    // --- slot
    bool slot_created = false;
    const std::string create_slot = "SELECT pg_create_logical_replication_slot(" + slot_lit + ", 'pgoutput')";
    const std::string drop_slot = "SELECT pg_drop_replication_slot(" + slot_lit + ")";
    {
        // Why a slot was invalidated: PG17+ name it (invalidation_reason: wal_removed,
        // rows_removed, wal_level_insufficient, and on PG18 idle_timeout). Before
        // that only wal_status says 'lost', for every cause. PG16's `conflicting` does
        // not help: it is true for any invalidated logical slot (seen on 16.14 for
        // wal_removed), which PG17 narrowed to the recovery conflicts. Without a
        // reason, a standby (logical slots there exist from PG16) may also have lost
        // the slot to a recovery conflict; a primary only to removed WAL.
        const int server_version = PQserverVersion(conn.get());
        const std::string reason_sql = server_version >= 170000 ? "coalesce(invalidation_reason, '')" : "''";
        auto r = db.exec(
            "SELECT slot_type, coalesce(plugin, ''), coalesce(database = current_database(), false), "
            "coalesce(database, ''), coalesce(wal_status, ''), " +
            reason_sql + ", pg_is_in_recovery() FROM pg_replication_slots WHERE slot_name = " + slot_lit);
        if (!r) return failed(exit_code::slot, "cannot read pg_replication_slots: " + db.error());
        if (PQntuples(r.get()) == 0) {
            if (!cfg.create_slot)
                return failed(exit_code::slot,
                              "replication slot " + cfg.slot + " does not exist: run " + create_slot);
            auto c = db.exec(create_slot);
            if (!c)
                return failed(exit_code::slot, "cannot create replication slot " + cfg.slot + ": " + db.error());
            log::info(mod, "event=slot_created slot={} plugin=pgoutput consistent_point={}", log::quote(cfg.slot),
                      PQntuples(c.get()) == 1 ? PQgetvalue(c.get(), 0, 0) : "?");
            slot_created = true;
        } else {
            std::string_view type = PQgetvalue(r.get(), 0, 0), plugin = PQgetvalue(r.get(), 0, 1),
                             same_db = PQgetvalue(r.get(), 0, 2), database = PQgetvalue(r.get(), 0, 3),
                             wal_status = PQgetvalue(r.get(), 0, 4), reason = PQgetvalue(r.get(), 0, 5),
                             in_recovery = PQgetvalue(r.get(), 0, 6);
            if (type != "logical" || plugin != "pgoutput")
                return failed(exit_code::slot, "replication slot " + cfg.slot + " is " + std::string(type) +
                                                       (plugin.empty() ? "" : " with plugin " + std::string(plugin)) +
                                                       ", not logical pgoutput: choose another --slot or run " +
                                                       drop_slot);
            if (same_db != "t")
                return failed(exit_code::slot, "replication slot " + cfg.slot + " belongs to database " +
                                                       std::string(database) +
                                                       ": connect to that database or choose another --slot");
            if (wal_status == "lost" || !reason.empty()) {
                std::string why;
                if (reason.empty() && in_recovery == "t")
                    why = "WAL it needed was removed (max_slot_wal_keep_size) or it conflicted with recovery "
                          "on this standby";
                else if (reason.empty() || reason == "wal_removed")
                    why = "WAL it needed was removed (max_slot_wal_keep_size)";
                else if (reason == "idle_timeout")
                    why = "it was inactive longer than idle_replication_slot_timeout";
                else if (reason == "rows_removed" || reason == "wal_level_insufficient")
                    why = "it conflicted with recovery on this standby";
                else
                    why = "Postgres invalidated it";
                return failed(exit_code::slot,
                              "replication slot " + cfg.slot + " was invalidated (wal_status=" +
                                  std::string(wal_status) +
                                  (reason.empty() ? "" : ", invalidation_reason=" + std::string(reason)) + "): " +
                                  why +
                                  ", so events committed since its last confirmed position cannot be streamed "
                                  "from it; run " +
                                  drop_slot + " and restart to recreate it, then reconcile the gap");
            }
        }
    }

    // --- identity of the cluster (for the Kafka transactional.id): over a
    // replication connection, which the relay's role may open anyway.
    std::string system_id;
    {
        const char* rkeys[] = {"dbname", "replication", "application_name", nullptr};
        const char* rvals[] = {cfg.postgres.c_str(), "database", "outbox-relay-setup", nullptr};
        conn_ptr rc(PQconnectdbParams(rkeys, rvals, /*expand_dbname=*/1));
        if (!rc || PQstatus(rc.get()) != CONNECTION_OK)
            return failed(exit_code::privileges,
                          "cannot open a replication connection: " +
                              (rc ? one_line(PQerrorMessage(rc.get())) : std::string("out of memory")) +
                              " (the role needs REPLICATION, and pg_hba.conf must allow it for database " +
                              PQdb(conn.get()) + ")");
        result_ptr r(PQexec(rc.get(), "IDENTIFY_SYSTEM"));
        if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1)
            return failed(exit_code::pg_connect,
                          "IDENTIFY_SYSTEM failed: " + (r ? one_line(PQresultErrorMessage(r.get())) : std::string()));
        system_id = PQgetvalue(r.get(), 0, 0);
    }

    log::info(mod, "event=ready slot={} publication={} table={} system_id={}", log::quote(cfg.slot),
              log::quote(cfg.publication), log::quote(table_text), system_id);
    setup_result ok;
    ok.system_id = system_id;
    ok.database = PQdb(conn.get());
    ok.slot_created = slot_created;
    ok.table_oid = static_cast<std::uint32_t>(std::stoul(relid));
    ok.partitioned = partitioned;
    return ok;
}

std::string drop_replication_slot(const relay_config& cfg, std::chrono::seconds wait) {
    const char* keys[] = {"dbname", "application_name", nullptr};
    const char* vals[] = {cfg.postgres.c_str(), "outbox-relay-setup", nullptr};
    conn_ptr conn(PQconnectdbParams(keys, vals, /*expand_dbname=*/1));
    if (!conn || PQstatus(conn.get()) != CONNECTION_OK)
        return "cannot connect: " + (conn ? one_line(PQerrorMessage(conn.get())) : std::string("out of memory"));
    session db(conn.get());
    const std::string lit = db.literal(cfg.slot);
    const auto deadline = std::chrono::steady_clock::now() + wait;
    for (;;) {
        auto r = db.exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = " + lit +
                         " AND NOT active");
        auto left = db.exec("SELECT count(*) FROM pg_replication_slots WHERE slot_name = " + lit);
        if (left && std::string_view(PQgetvalue(left.get(), 0, 0)) == "0") return {};
        if (std::chrono::steady_clock::now() >= deadline)
            return r ? "the slot is still active" : db.error();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

}  // namespace outbox::io
