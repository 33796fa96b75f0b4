#include "outbox_relay/setup_sql.hpp"

#include <algorithm>

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
    const std::vector<routing_config> routes = table_routes(cfg);
    auto table_of = [](const routing_config& r) { return sql_ident(r.schema) + "." + sql_ident(r.table); };
    std::vector<setup_step> steps;

    // The relay's default layout (sql/01_outbox_table.sql) with each route's column names.
    for (const auto& r : routes) {
        const auto& col = r.columns;
        const std::string table = table_of(r);
        // Each configured column once (route_by may name the key column, for instance).
        std::vector<std::pair<std::string, std::string>> cols{{col.id, "uuid PRIMARY KEY"},
                                                              {r.route_by, "text NOT NULL"},
                                                              {col.key, "text NOT NULL"},
                                                              {col.type, "text NOT NULL"},
                                                              {col.payload, "jsonb"}};
        std::string ddl = "CREATE TABLE IF NOT EXISTS " + table + " (\n";
        std::vector<std::string> seen;
        for (const auto& [name, type] : cols) {
            if (name.empty() || std::find(seen.begin(), seen.end(), name) != seen.end()) continue;
            seen.push_back(name);
            ddl += "    " + sql_ident(name) + " " + type + ",\n";
        }
        ddl += "    created_at timestamptz NOT NULL DEFAULT now()\n)";
        steps.push_back({"table " + r.schema + "." + r.table,
                         "SELECT to_regclass(" + sql_literal(table) + ") IS NOT NULL", ddl,
                         "an outbox table; the application inserts events into it in its own transactions"});
    }

    std::string all_tables;
    for (const auto& r : routes) all_tables += (all_tables.empty() ? "" : ", ") + table_of(r);
    const std::string pub = sql_ident(cfg.publication);
    const std::string pub_lit = sql_literal(cfg.publication);
    steps.push_back({"publication", "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = " + pub_lit + ")",
                     "DO $$\nBEGIN\n    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = " + pub_lit +
                         ") THEN\n        CREATE PUBLICATION " + pub + " FOR TABLE " + all_tables +
                         " WITH (publish = 'insert', publish_via_partition_root = true);\n    END IF;\nEND\n$$",
                     "inserts only (cleanup DELETEs never reach the relay); a partitioned outbox arrives as its "
                     "root; before the slot"});
    // A publication made earlier (or by hand) may lack a table added to the configuration since.
    for (const auto& r : routes) {
        const std::string cond = "SELECT 1 FROM pg_publication_tables WHERE pubname = " + pub_lit +
                                 " AND schemaname = " + sql_literal(r.schema) +
                                 " AND tablename = " + sql_literal(r.table);
        steps.push_back({"publication " + r.schema + "." + r.table, "SELECT EXISTS (" + cond + ")",
                         "DO $$\nBEGIN\n    IF NOT EXISTS (" + cond + ") THEN\n        ALTER PUBLICATION " + pub +
                             " ADD TABLE " + table_of(r) + ";\n    END IF;\nEND\n$$",
                         "the publication covers this table"});
    }

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
    std::vector<std::string> schemas;
    for (const auto& r : routes) {
        if (std::find(schemas.begin(), schemas.end(), r.schema) != schemas.end()) continue;
        schemas.push_back(r.schema);
        steps.push_back({"grant_usage " + r.schema,
                         "SELECT has_schema_privilege(" + rlit + ", " + sql_literal(r.schema) + ", 'USAGE')",
                         "GRANT USAGE ON SCHEMA " + sql_ident(r.schema) + " TO " + rid,
                         "see the outbox table's schema"});
    }
    for (const auto& r : routes)
        steps.push_back({"grant_select " + r.schema + "." + r.table,
                         "SELECT has_table_privilege(" + rlit + ", " + sql_literal(table_of(r)) + ", 'SELECT')",
                         "GRANT SELECT ON " + table_of(r) + " TO " + rid,
                         "read the outbox (the relay's start-up check requires it); nothing else: no INSERT, "
                         "UPDATE, DELETE, no other table"});
    return steps;
}

std::string setup_script(const relay_config& cfg, std::string_view role) {
    std::string tables;
    for (const auto& r : table_routes(cfg)) tables += (tables.empty() ? "" : ", ") + r.schema + "." + r.table;
    std::string out = "-- outbox-relay setup for table(s) " + tables + ", publication " + cfg.publication + ", slot " + cfg.slot +
                      (role.empty() ? std::string() : ", role " + std::string(role)) +
                      ".\n-- Idempotent: running it again changes nothing. Run as the table owner or a superuser.\n";
    for (const auto& s : setup_steps(cfg, role)) {
        out += "\n-- " + s.name + ": " + s.why + "\n";
        out += s.sql + ";\n";
    }
    return out;
}

}  // namespace outbox
