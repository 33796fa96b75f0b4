// `outbox-relay status` and `outbox-relay setup` (admin.hpp). Blocking libpq
// and librdkafka calls are fine here: no loop runs.
#include "outbox_relay/io/admin.hpp"

#include "outbox_relay/exit_code.hpp"
#include "outbox_relay/io/kafka_tail_scanner.hpp"
#include "outbox_relay/io/pg_params.hpp"
#include "outbox_relay/lsn.hpp"
#include "outbox_relay/outbox.hpp"
#include "outbox_relay/secrets.hpp"
#include "outbox_relay/setup_sql.hpp"

#include <libpq-fe.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace outbox::io {

namespace {

struct conn_deleter {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
struct result_deleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using conn_ptr = std::unique_ptr<PGconn, conn_deleter>;
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

std::string one_line(std::string_view s) {
    std::string out;
    for (char c : s) out += (c == '\n' || c == '\r') ? ' ' : c;
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

conn_ptr connect(const relay_config& cfg, bool replication, std::string& error) {
    std::vector<pg_params::kv> fixed{{"application_name", "outbox-relay-admin"}};
    if (replication) fixed.emplace_back("replication", "database");
    const pg_params p(cfg.postgres, cfg.postgres_password, {{"connect_timeout", "10"}}, fixed);
    conn_ptr c(PQconnectdbParams(p.keys(), p.values(), 1));
    if (!c || PQstatus(c.get()) != CONNECTION_OK) {
        error = c ? one_line(PQerrorMessage(c.get())) : std::string("out of memory");
        return nullptr;
    }
    return c;
}

result_ptr query(PGconn* c, const std::string& sql, const std::vector<std::string>& params, std::string& error) {
    std::vector<const char*> v;
    for (const auto& p : params) v.push_back(p.c_str());
    result_ptr r(PQexecParams(c, sql.c_str(), static_cast<int>(v.size()), nullptr, v.data(), nullptr, nullptr, 0));
    if (!r || (PQresultStatus(r.get()) != PGRES_TUPLES_OK && PQresultStatus(r.get()) != PGRES_COMMAND_OK)) {
        error = r ? one_line(PQresultErrorMessage(r.get())) : one_line(PQerrorMessage(c));
        return nullptr;
    }
    return r;
}

std::optional<std::string> cell(PGresult* r, int row, int col) {
    if (PQgetisnull(r, row, col)) return std::nullopt;
    return std::string(PQgetvalue(r, row, col));
}

std::string text_or(const std::optional<std::string>& v, const char* none) { return v ? *v : std::string(none); }

std::string bytes_text(const std::optional<std::string>& v) {
    if (!v) return "-";
    const double b = std::stod(*v);
    const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = b;
    int u = 0;
    while (std::abs(x) >= 1024 && u < 4) x /= 1024, ++u;
    char buf[64];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", x, unit[u]);
    return *v + " (" + buf + ")";
}

}  // namespace

int run_status(const relay_config& cfg, bool json, std::FILE* out) {
    nlohmann::ordered_json j;
    std::vector<std::string> problems;
    exit_code code = exit_code::ok;
    auto finding = [&](exit_code c, std::string what) {
        problems.push_back(what);
        if (code == exit_code::ok) code = c;
    };
    auto emit = [&] {
        j["problems"] = problems;
        j["exit_code"] = to_int(code);
        j["healthy"] = code == exit_code::ok;
        if (json) {
            std::fprintf(out, "%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        }
        return to_int(code);
    };
    j["postgres"] = redact_conninfo(cfg.postgres);
    j["slot"] = {{"name", cfg.slot}};
    j["publication"] = {{"name", cfg.publication}};

    std::string err;
    auto c = connect(cfg, false, err);
    if (!c) {
        finding(exit_code::pg_connect, "cannot connect to Postgres: " + err);
        if (!json) std::fprintf(out, "postgres     %s\nPROBLEM      %s\n", redact_conninfo(cfg.postgres).c_str(),
                                problems.back().c_str());
        return emit();
    }

    // --- slot
    auto s = query(c.get(),
                   "SELECT coalesce(plugin, ''), slot_type, active, active_pid::text, confirmed_flush_lsn::text, "
                   "restart_lsn::text, coalesce(wal_status, ''), safe_wal_size::text, "
                   "pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE "
                   "pg_current_wal_lsn() END, restart_lsn)::bigint::text, "
                   "pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE "
                   "pg_current_wal_lsn() END, confirmed_flush_lsn)::bigint::text, "
                   "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)::text, "
                   "coalesce(database, '') "
                   "FROM pg_replication_slots WHERE slot_name = $1",
                   {cfg.slot}, err);
    std::optional<std::string> confirmed;
    if (!s) {
        finding(exit_code::slot, "cannot read pg_replication_slots: " + err);
    } else if (PQntuples(s.get()) == 0) {
        j["slot"]["exists"] = false;
        finding(exit_code::slot, "replication slot " + cfg.slot + " does not exist");
    } else {
        PGresult* r = s.get();
        auto& js = j["slot"];
        js["exists"] = true;
        js["plugin"] = text_or(cell(r, 0, 0), "");
        js["type"] = text_or(cell(r, 0, 1), "");
        js["database"] = text_or(cell(r, 0, 11), "");
        js["active"] = text_or(cell(r, 0, 2), "f") == "t";
        js["active_pid"] = cell(r, 0, 3) ? nlohmann::ordered_json(std::stoi(*cell(r, 0, 3))) : nlohmann::ordered_json();
        confirmed = cell(r, 0, 4);
        js["confirmed_flush_lsn"] = text_or(confirmed, "");
        js["restart_lsn"] = text_or(cell(r, 0, 5), "");
        js["server_wal_lsn"] = text_or(cell(r, 0, 10), "");
        js["wal_status"] = text_or(cell(r, 0, 6), "");
        js["safe_wal_size_bytes"] =
            cell(r, 0, 7) ? nlohmann::ordered_json(std::stoll(*cell(r, 0, 7))) : nlohmann::ordered_json();
        js["retained_wal_bytes"] =
            cell(r, 0, 8) ? nlohmann::ordered_json(std::stoll(*cell(r, 0, 8))) : nlohmann::ordered_json();
        js["lag_bytes"] = cell(r, 0, 9) ? nlohmann::ordered_json(std::stoll(*cell(r, 0, 9))) : nlohmann::ordered_json();
        if (js["plugin"] != "pgoutput" || js["type"] != "logical")
            finding(exit_code::slot, "replication slot " + cfg.slot + " is not a logical pgoutput slot");
        else if (js["wal_status"] == "lost")
            finding(exit_code::slot, "replication slot " + cfg.slot + " was invalidated (wal_status=lost)");
        if (!js["active"].get<bool>())
            finding(exit_code::status_slot_inactive,
                    "no walsender holds slot " + cfg.slot + ": no relay is streaming from it, and it keeps WAL");
        if (js["wal_status"] == "unreserved")
            finding(exit_code::status_wal_at_risk, "slot " + cfg.slot +
                                                       " is unreserved: WAL it needs is about to be removed "
                                                       "(max_slot_wal_keep_size)");
    }

    // --- publication
    auto p = query(c.get(), "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1",
                   {cfg.publication}, err);
    if (!p) {
        finding(exit_code::publication, "cannot read pg_publication: " + err);
    } else if (PQntuples(p.get()) == 0) {
        j["publication"]["exists"] = false;
        finding(exit_code::publication, "publication " + cfg.publication + " does not exist");
    } else {
        auto& jp = j["publication"];
        jp["exists"] = true;
        std::string publish;
        const char* ops[] = {"insert", "update", "delete", "truncate"};
        for (int i = 0; i < 4; ++i)
            if (text_or(cell(p.get(), 0, i), "f") == "t") publish += (publish.empty() ? "" : ",") + std::string(ops[i]);
        jp["publish"] = publish;
        jp["via_partition_root"] = text_or(cell(p.get(), 0, 4), "f") == "t";
        auto t = query(c.get(),
                       "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1",
                       {cfg.publication}, err);
        std::vector<std::string> tables;
        if (t)
            for (int i = 0; i < PQntuples(t.get()); ++i) tables.push_back(PQgetvalue(t.get(), i, 0));
        jp["tables"] = tables;
        for (const auto& r : table_routes(cfg)) {
            const std::string want = r.schema + "." + r.table;
            if (std::find(tables.begin(), tables.end(), want) == tables.end())
                finding(exit_code::publication, "publication " + cfg.publication + " does not include " + want);
        }
    }

    // --- Kafka: the newest record of this source per topic the template reaches
    auto& jk = j["kafka"];
    jk["brokers"] = cfg.brokers;
    jk["topics"] = nlohmann::ordered_json::array();
    {
        std::string rerr;
        auto rc = connect(cfg, true, rerr);
        result_ptr id;
        if (rc) id.reset(PQexec(rc.get(), "IDENTIFY_SYSTEM"));
        if (!rc || !id || PQresultStatus(id.get()) != PGRES_TUPLES_OK || PQntuples(id.get()) != 1) {
            finding(exit_code::pg_connect, "cannot identify the cluster over a replication connection: " +
                                               (rc ? one_line(PQerrorMessage(rc.get())) : rerr));
        } else {
            source_id src;
            src.system_id = PQgetvalue(id.get(), 0, 0);
            src.timeline = static_cast<std::uint32_t>(std::stoul(PQgetvalue(id.get(), 0, 1)));
            src.database = PQgetvalue(id.get(), 0, 3);
            src.slot = cfg.slot;
            jk["source"] = src.header_value();
            // The topics every route's template can reach, as the relay's own gap probe sees them.
            topic_affixes affixes;
            for (const auto& r : table_routes(cfg)) {
                auto m = outbox_mapper::create(r);
                if (m) affixes.push_back(m.value().topic_affixes());
            }
            if (!cfg.message_prefix.empty())
                if (auto m = outbox_mapper::create(cfg.messages)) affixes.push_back(m.value().topic_affixes());
            tail_scan_options so;
            so.brokers = cfg.brokers;
            so.properties = cfg.kafka;
            so.deadline = std::chrono::seconds(20);
            so.source = src;
            try {
                auto r = probe_own_records(so, affixes);
                jk["topics_probed"] = r.topics_probed;
                for (const auto& [topic, newest] : r.per_topic)
                    jk["topics"].push_back({{"topic", topic}, {"newest_commit_lsn", newest.to_string()}});
            } catch (const std::exception& e) {
                finding(exit_code::status_kafka, std::string("cannot read Kafka's tails: ") + e.what());
            }
        }
    }

    if (!json) {
        const auto& js = j["slot"];
        const auto& jp = j["publication"];
        auto str = [](const nlohmann::ordered_json& v) -> std::string {
            if (v.is_null()) return "-";
            if (v.is_string()) return v.get<std::string>();
            return v.dump();
        };
        std::fprintf(out, "postgres          %s\n", str(j["postgres"]).c_str());
        if (js.value("exists", false)) {
            std::fprintf(out, "slot              %s (%s, plugin %s, database %s)\n", cfg.slot.c_str(),
                         str(js["type"]).c_str(), str(js["plugin"]).c_str(), str(js["database"]).c_str());
            std::fprintf(out, "active pid        %s\n", str(js["active_pid"]).c_str());
            std::fprintf(out, "confirmed lsn     %s\n", str(js["confirmed_flush_lsn"]).c_str());
            std::fprintf(out, "restart lsn       %s\n", str(js["restart_lsn"]).c_str());
            std::fprintf(out, "server wal lsn    %s\n", str(js["server_wal_lsn"]).c_str());
            std::fprintf(out, "lag               %s\n",
                         bytes_text(js["lag_bytes"].is_null() ? std::nullopt
                                                              : std::optional<std::string>(js["lag_bytes"].dump()))
                             .c_str());
            std::fprintf(out, "retained wal      %s\n",
                         bytes_text(js["retained_wal_bytes"].is_null()
                                        ? std::nullopt
                                        : std::optional<std::string>(js["retained_wal_bytes"].dump()))
                             .c_str());
            std::fprintf(out, "wal status        %s (safe_wal_size %s)\n", str(js["wal_status"]).c_str(),
                         js["safe_wal_size_bytes"].is_null() ? "unlimited"
                                                             : js["safe_wal_size_bytes"].dump().c_str());
        } else {
            std::fprintf(out, "slot              %s: missing\n", cfg.slot.c_str());
        }
        if (jp.value("exists", false)) {
            std::string tables;
            for (const auto& t : jp["tables"]) tables += (tables.empty() ? "" : ", ") + t.get<std::string>();
            std::fprintf(out, "publication       %s (publish %s%s): %s\n", cfg.publication.c_str(),
                         str(jp["publish"]).c_str(), jp["via_partition_root"].get<bool>() ? ", via root" : "",
                         tables.empty() ? "no tables" : tables.c_str());
        } else {
            std::fprintf(out, "publication       %s: missing\n", cfg.publication.c_str());
        }
        std::fprintf(out, "kafka             %s, source %s\n", cfg.brokers.c_str(),
                     jk.contains("source") ? jk["source"].get<std::string>().c_str() : "?");
        if (jk["topics"].empty()) std::fprintf(out, "  (no records of this source found)\n");
        for (const auto& t : jk["topics"])
            std::fprintf(out, "  %-40s newest commit %s\n", t["topic"].get<std::string>().c_str(),
                         t["newest_commit_lsn"].get<std::string>().c_str());
        for (const auto& pr : problems) std::fprintf(out, "PROBLEM           %s\n", pr.c_str());
        std::fprintf(out, "%s\n", problems.empty() ? "healthy" : ("unhealthy: exit " + std::to_string(to_int(code)) +
                                                                " (" + std::string(exit_code_name(code)) + ")")
                                                                   .c_str());
    }
    return emit();
}

int run_setup(const relay_config& cfg, std::string_view role, bool apply, std::FILE* out) {
    if (!apply) {
        std::fputs(setup_script(cfg, role).c_str(), out);
        return 0;
    }
    std::string err;
    auto c = connect(cfg, false, err);
    if (!c) {
        std::fprintf(out, "cannot connect to Postgres: %s\n", err.c_str());
        return to_int(exit_code::pg_connect);
    }
    int changes = 0;
    for (const auto& step : setup_steps(cfg, role)) {
        auto done = query(c.get(), step.check, {}, err);
        if (!done) {
            std::fprintf(out, "%-14s failed: %s\n", step.name.c_str(), err.c_str());
            return to_int(exit_code::privileges);
        }
        if (std::string_view(PQgetvalue(done.get(), 0, 0)) == "t") {
            std::fprintf(out, "%-14s exists\n", step.name.c_str());
            continue;
        }
        if (!query(c.get(), step.sql, {}, err)) {
            std::fprintf(out, "%-14s failed: %s\n", step.name.c_str(), err.c_str());
            return to_int(exit_code::privileges);
        }
        ++changes;
        std::fprintf(out, "%-14s created\n", step.name.c_str());
    }
    std::fprintf(out, "changes=%d\n", changes);
    if (!role.empty() && changes > 0)
        std::fprintf(out, "set the role's password with psql: \\password %s\n", std::string(role).c_str());
    return 0;
}

}  // namespace outbox::io
