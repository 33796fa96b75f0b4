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

// The first column `names` lacks that the route needs (the mapper's own
// rule, so setup and runtime agree), or an empty string.
std::string missing_column(const routing_config& r, const std::set<std::string>& names) {
    cached_relation rel;
    for (const std::string& n : names) rel.columns.push_back({n, 0, -1, false});
    auto m = outbox_mapper::create(r);
    if (!m) return {};  // build_config reports a bad route
    auto ok = m->check_relation(rel);
    return ok ? std::string() : ok.error().field;
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
    const std::vector<routing_config> routes = table_routes(cfg);
    std::string tables_text;
    for (const auto& rt : routes) tables_text += (tables_text.empty() ? "" : ",") + rt.schema + "." + rt.table;

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
    if (slot_lit.empty() || pub_lit.empty() || pub_id.empty())
        return failed(exit_code::pg_connect, "cannot quote names: " + one_line(PQerrorMessage(conn.get())));
    struct table_facts {
        std::string text, schema_lit, table_lit, qualified, relid;
        bool partitioned = false;
    };
    std::vector<table_facts> facts;
    std::string qualified_list;
    for (const auto& rt : routes) {
        table_facts f;
        f.text = rt.schema + "." + rt.table;
        f.schema_lit = db.literal(rt.schema);
        f.table_lit = db.literal(rt.table);
        f.qualified = db.ident(rt.schema) + "." + db.ident(rt.table);
        if (f.schema_lit.empty() || f.table_lit.empty())
            return failed(exit_code::pg_connect, "cannot quote names: " + one_line(PQerrorMessage(conn.get())));
        qualified_list += (qualified_list.empty() ? "" : ", ") + f.qualified;
        facts.push_back(std::move(f));
    }

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

    // --- each table exists, is readable, has the columns its route needs
    for (std::size_t i = 0; i < routes.size(); ++i) {
        table_facts& f = facts[i];
        const std::string& table_text = f.text;
        {
            auto r = db.exec("SELECT to_regclass(" + db.literal(f.qualified) + ")::oid");
            if (!r) return failed(exit_code::table_missing, "cannot look up table " + table_text + ": " + db.error());
            if (PQgetisnull(r.get(), 0, 0))
                return failed(exit_code::table_missing,
                              "table " + table_text + " does not exist: create the outbox table or fix --table");
            f.relid = PQgetvalue(r.get(), 0, 0);
        }
        {
            auto r = db.exec("SELECT has_table_privilege(" + f.relid + "::oid, 'SELECT')");
            if (!r) return failed(exit_code::privileges, "cannot check privileges: " + db.error());
            if (std::string_view(PQgetvalue(r.get(), 0, 0)) != "t")
                return failed(exit_code::privileges, "role " + role + " cannot read " + table_text +
                                                             ": run GRANT SELECT ON " + f.qualified + " TO " +
                                                             db.ident(role));
        }
        {
            auto r = db.exec("SELECT attname FROM pg_attribute WHERE attrelid = " + f.relid +
                             "::oid AND attnum > 0 AND NOT attisdropped");
            if (!r) return failed(exit_code::column_missing, "cannot list columns: " + db.error());
            std::set<std::string> have;
            for (int k = 0; k < PQntuples(r.get()); ++k) have.insert(PQgetvalue(r.get(), k, 0));
            if (std::string col = missing_column(routes[i], have); !col.empty())
                return failed(exit_code::column_missing, "table " + table_text + " has no column \"" + col +
                                                                 "\" (its route needs it: id, key, payload, "
                                                                 "timestamp, topic template or placement): add it "
                                                                 "or change the routing config");
        }
        // A partitioned outbox (the usual way to clean one up: drop old
        // partitions) must be published through its root: otherwise pgoutput
        // names the leaf partitions, which are not the configured table, and
        // every row would be ignored.
        {
            auto r = db.exec("SELECT relkind = 'p' FROM pg_class WHERE oid = " + f.relid + "::oid");
            if (!r || PQntuples(r.get()) != 1)
                return failed(exit_code::table_missing, "cannot read pg_class for " + table_text + ": " + db.error());
            f.partitioned = std::string_view(PQgetvalue(r.get(), 0, 0)) == "t";
        }
    }
    bool partitioned = false;
    for (const auto& f : facts) partitioned = partitioned || f.partitioned;

    // --- publication (before the slot: PG15 looks the publication up at
    // the decoded WAL position, so one created after the slot breaks decoding).
    // publish_via_partition_root changes nothing for a plain table and makes
    // a partitioned one (and partitions attached later) arrive as the root.
    const std::string create_pub = "CREATE PUBLICATION " + pub_id + " FOR TABLE " + qualified_list +
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
            log::info(mod, "event=publication_created publication={} tables={}", log::quote(cfg.publication),
                      log::quote(tables_text));
        } else {
            if (std::string_view(PQgetvalue(r.get(), 0, 0)) != "t")
                return failed(exit_code::publication,
                              "publication " + cfg.publication + " does not publish inserts: run ALTER PUBLICATION " +
                                  pub_id + " SET (publish = 'insert')");
            const bool via_root = std::string_view(PQgetvalue(r.get(), 0, 1)) == "t";
            for (std::size_t i = 0; i < routes.size(); ++i) {
                const table_facts& f = facts[i];
                if (f.partitioned && !via_root)
                    return failed(exit_code::publication,
                                  "publication " + cfg.publication + " does not publish via the partition root, so rows of the "
                                      "partitioned table " + f.text + " would arrive under the partitions' names and be "
                                      "missed: run ALTER PUBLICATION " + pub_id + " SET (publish_via_partition_root = true)");
                auto t = db.exec("SELECT 1 FROM pg_publication_tables WHERE pubname = " + pub_lit +
                                 " AND schemaname = " + f.schema_lit + " AND tablename = " + f.table_lit);
                if (!t) return failed(exit_code::publication, "cannot read pg_publication_tables: " + db.error());
                if (PQntuples(t.get()) == 0)
                    return failed(exit_code::publication, "publication " + cfg.publication + " does not include " +
                                                                  f.text + ": run ALTER PUBLICATION " + pub_id +
                                                                  " ADD TABLE " + f.qualified);
                // PG15 column lists: every column the route needs must be published.
                if (PQserverVersion(conn.get()) >= 150000) {
                    auto c = db.exec("SELECT unnest(attnames) FROM pg_publication_tables WHERE pubname = " + pub_lit +
                                     " AND schemaname = " + f.schema_lit + " AND tablename = " + f.table_lit);
                    if (!c) return failed(exit_code::publication, "cannot read the column list: " + db.error());
                    std::set<std::string> published;
                    for (int k = 0; k < PQntuples(c.get()); ++k) published.insert(PQgetvalue(c.get(), k, 0));
                    if (std::string col = missing_column(routes[i], published); !col.empty())
                        return failed(exit_code::publication,
                                      "publication " + cfg.publication + " does not publish column \"" + col +
                                          "\" of " + f.text + " (its route needs it): drop its column list with "
                                          "ALTER PUBLICATION " + pub_id + " SET TABLE " + f.qualified);
                }
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

    log::info(mod, "event=ready slot={} publication={} tables={} system_id={}", log::quote(cfg.slot),
              log::quote(cfg.publication), log::quote(tables_text), system_id);
    setup_result ok;
    ok.system_id = system_id;
    ok.database = PQdb(conn.get());
    ok.slot_created = slot_created;
    for (const auto& f : facts) ok.table_oids.push_back(static_cast<std::uint32_t>(std::stoul(f.relid)));
    ok.table_oid = ok.table_oids.front();
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
