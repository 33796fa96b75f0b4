#include "outbox_relay/setup_sql.hpp"

namespace outbox {

std::string sql_ident(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"') out += '"';
        out += c;
    }
    return out + "\"";
}

std::string sql_literal(std::string_view s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out += '\'';
        out += c;
    }
    return out + "'";
}

std::vector<setup_step> setup_steps(const relay_config& cfg, std::string_view role) {
    const auto& r = cfg.routing;
    const auto& col = r.columns;
    const std::string table = sql_ident(r.schema) + "." + sql_ident(r.table);
    const std::string table_lit = sql_literal(sql_ident(r.schema) + "." + sql_ident(r.table));
    std::vector<setup_step> steps;

    // The relay's default layout (sql/01_outbox_table.sql) with the configured column names.
    std::string ddl = "CREATE TABLE IF NOT EXISTS " + table + " (\n    " + sql_ident(col.id) +
                      " uuid PRIMARY KEY,\n    " + sql_ident(col.aggregatetype) + " text NOT NULL,\n    " +
                      sql_ident(col.aggregateid) + " text NOT NULL,\n    " + sql_ident(col.type) +
                      " text NOT NULL,\n    " + sql_ident(col.payload) +
                      " jsonb,\n    created_at timestamptz NOT NULL DEFAULT now()\n)";
    steps.push_back({"table", "SELECT to_regclass(" + table_lit + ") IS NOT NULL", ddl,
                     "the outbox table; the application inserts events into it in its own transactions"});

    const std::string pub = sql_ident(cfg.publication);
    steps.push_back(
        {"publication",
         "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = " + sql_literal(cfg.publication) + ")",
         "DO $$\nBEGIN\n    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = " +
             sql_literal(cfg.publication) + ") THEN\n        CREATE PUBLICATION " + pub + " FOR TABLE " + table +
             " WITH (publish = 'insert', publish_via_partition_root = true);\n    END IF;\nEND\n$$",
         "inserts only (cleanup DELETEs never reach the relay); a partitioned outbox arrives as its root; "
         "before the slot"});

    steps.push_back(
        {"slot",
         "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = " + sql_literal(cfg.slot) + ")",
         "SELECT pg_create_logical_replication_slot(" + sql_literal(cfg.slot) +
             ", 'pgoutput') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = " +
             sql_literal(cfg.slot) + ")",
         "the slot holds WAL from here on until the relay confirms it: start the relay soon, or drop it"});

    if (role.empty()) return steps;
    const std::string rid = sql_ident(role);
    const std::string rlit = sql_literal(role);
    steps.push_back({"role", "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = " + rlit + ")",
                     "DO $$\nBEGIN\n    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = " + rlit +
                         ") THEN\n        CREATE ROLE " + rid + " LOGIN REPLICATION;\n    END IF;\nEND\n$$",
                     "LOGIN REPLICATION, no password here (set one with \\password " + std::string(role) +
                         "). REPLICATION is not a read-only grant: the role can create its own slots and decode "
                         "every table of the database through them"});
    steps.push_back({"grant_connect",
                     "SELECT has_database_privilege(" + rlit + ", current_database(), 'CONNECT')",
                     "DO $$\nBEGIN\n    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), " +
                         rlit + ");\nEND\n$$",
                     "connect to this database (explicit, in case PUBLIC's default was revoked)"});
    steps.push_back({"grant_usage",
                     "SELECT has_schema_privilege(" + rlit + ", " + sql_literal(r.schema) + ", 'USAGE')",
                     "GRANT USAGE ON SCHEMA " + sql_ident(r.schema) + " TO " + rid, "see the outbox table's schema"});
    steps.push_back({"grant_select", "SELECT has_table_privilege(" + rlit + ", " + table_lit + ", 'SELECT')",
                     "GRANT SELECT ON " + table + " TO " + rid,
                     "read the outbox (the relay's start-up check requires it); nothing else: no INSERT, UPDATE, "
                     "DELETE, no other table"});
    return steps;
}

std::string setup_script(const relay_config& cfg, std::string_view role) {
    std::string out = "-- outbox-relay setup for table " + cfg.routing.schema + "." + cfg.routing.table +
                      ", publication " + cfg.publication + ", slot " + cfg.slot +
                      (role.empty() ? std::string() : ", role " + std::string(role)) +
                      ".\n-- Idempotent: running it again changes nothing. Run as the table owner or a superuser.\n";
    for (const auto& s : setup_steps(cfg, role)) {
        out += "\n-- " + s.name + ": " + s.why + "\n";
        out += s.sql + ";\n";
    }
    return out;
}

}  // namespace outbox
