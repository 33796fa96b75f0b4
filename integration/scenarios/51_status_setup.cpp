// Scenario 51 (issue 11): `outbox-relay setup` and `outbox-relay status`
// against the database. setup --apply creates table, publication, slot and a
// least-privilege role that the catalogs confirm; a second --apply changes
// nothing. status --json reports what pg_replication_slots and
// pg_publication_tables say, and the newest position per topic read from
// Kafka; its exit code is 0 while a relay streams and 30 when none does.
#include "harness.hpp"
#include "ops_support.hpp"
#include "scenario_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <set>

using namespace outbox::it::scn;
namespace ops = outbox::it::ops;

namespace {

// relay_args() as another subcommand's, with option `replace` given `value`.
std::vector<std::string> as(const std::string& sub, std::vector<std::string> args, const std::string& replace = "",
                            const std::string& value = "") {
    args.at(0) = sub;  // relay_args() starts with "run"
    for (std::size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == replace) args[i + 1] = value;
    return args;
}

}  // namespace

TEST_CASE("51_setup_apply_is_idempotent") {
    scenario sc("51_setup");
    pg& db = sc.admin();
    const std::string base = sc.prefix() + "_s";
    const std::string table = "public." + base, pub = base + "_pub", slot = base + "_slot", role = base + "_role";
    struct cleanup {
        pg& db;
        std::string table, pub, slot, role;
        ~cleanup() {
            try {
                db.exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '" +
                        slot + "'");
                db.exec("DROP PUBLICATION IF EXISTS " + pub);
                db.exec("DROP TABLE IF EXISTS " + table);
                db.exec("DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" + role +
                        "') THEN EXECUTE 'DROP OWNED BY " + role + "'; EXECUTE 'DROP ROLE " + role +
                        "'; END IF; END $$");
            } catch (...) {
            }
        }
    } done{db, table, pub, slot, role};
    const std::vector<std::string> args{"setup",   "--postgres", env().pg, "--brokers", env().brokers, "--table",
                                        table,     "--publication", pub,   "--slot",    slot,          "--role",
                                        role};
    const std::string bin = outbox::it::relay_binary();

    // The printed script names every object and holds no password.
    auto printed = ops::run_command(bin, args);
    REQUIRE(printed.code == 0);
    CHECK(printed.output.find("CREATE TABLE IF NOT EXISTS \"public\".\"" + base + "\"") != std::string::npos);
    CHECK(printed.output.find("CREATE PUBLICATION \"" + pub + "\"") != std::string::npos);
    CHECK(printed.output.find("pg_create_logical_replication_slot('" + slot + "', 'pgoutput')") != std::string::npos);
    CHECK(printed.output.find("CREATE ROLE \"" + role + "\" LOGIN REPLICATION") != std::string::npos);
    CHECK(printed.output.find("PASSWORD") == std::string::npos);
    CHECK(db.scalar("SELECT to_regclass('" + table + "') IS NULL") == std::optional<std::string>("t"));  // printing ran nothing

    // First --apply: everything is created.
    auto first = ops::run_command(bin, [&] { auto a = args; a.push_back("--apply"); return a; }(), true);
    INFO("first apply:\n" << first.output);
    REQUIRE(first.code == 0);
    CHECK(first.output.find("changes=0") == std::string::npos);
    CHECK(db.scalar("SELECT to_regclass('" + table + "') IS NOT NULL") == std::optional<std::string>("t"));
    CHECK(db.scalar("SELECT pubinsert AND NOT pubupdate AND NOT pubdelete AND pubviaroot FROM pg_publication WHERE "
                    "pubname = '" + pub + "'") == std::optional<std::string>("t"));
    CHECK(db.scalar("SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables WHERE "
                    "pubname = '" + pub + "'") == std::optional<std::string>(table));
    CHECK(db.scalar("SELECT plugin || '/' || slot_type FROM pg_replication_slots WHERE slot_name = '" + slot + "'") ==
          std::optional<std::string>("pgoutput/logical"));
    CHECK(db.scalar("SELECT rolcanlogin AND rolreplication AND NOT rolsuper AND rolpassword IS NULL FROM pg_authid "
                    "WHERE rolname = '" + role + "'") == std::optional<std::string>("t"));
    CHECK(db.scalar("SELECT has_table_privilege('" + role + "', '" + table + "', 'SELECT')") ==
          std::optional<std::string>("t"));
    for (const char* priv : {"INSERT", "UPDATE", "DELETE", "TRUNCATE"})
        CHECK(db.scalar("SELECT has_table_privilege('" + role + "', '" + table + "', '" + priv + "')") ==
              std::optional<std::string>("f"));
    const auto before = db.query(
        "SELECT (SELECT oid::text FROM pg_publication WHERE pubname = '" + pub + "'), "
        "(SELECT restart_lsn::text || ' ' || catalog_xmin::text FROM pg_replication_slots WHERE slot_name = '" +
        slot + "'), (SELECT oid::text FROM pg_roles WHERE rolname = '" + role + "'), (SELECT '" + table +
        "'::regclass::oid::text)");

    // Second --apply: nothing to do, and nothing changed.
    auto second = ops::run_command(bin, [&] { auto a = args; a.push_back("--apply"); return a; }(), true);
    INFO("second apply:\n" << second.output);
    REQUIRE(second.code == 0);
    CHECK(second.output.find("changes=0") != std::string::npos);
    CHECK(second.output.find("created") == std::string::npos);
    const auto after = db.query(
        "SELECT (SELECT oid::text FROM pg_publication WHERE pubname = '" + pub + "'), "
        "(SELECT restart_lsn::text || ' ' || catalog_xmin::text FROM pg_replication_slots WHERE slot_name = '" +
        slot + "'), (SELECT oid::text FROM pg_roles WHERE rolname = '" + role + "'), (SELECT '" + table +
        "'::regclass::oid::text)");
    CHECK(after == before);

    // The printed script is itself idempotent: psql runs it on top without error.
    auto again = ops::run_command("/usr/lib/postgresql/15/bin/psql",
                                  {"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", env().pg, "-c", printed.output}, true);
    CHECK_MESSAGE(again.code == 0, again.output);
}

TEST_CASE("51_status_matches_the_database") {
    scenario sc("51_status");
    auto& relay = sc.start_relay();
    sc.wait_streaming(relay);
    outbox_writer w(env().pg, sc.table(), "s", 12, 3);
    for (int i = 0; i < 10; ++i) w.write_txn(6);
    auto rep = sc.check(90s, false, 60);
    REQUIRE(rep.ok());
    const std::string bin = outbox::it::relay_binary();
    const auto status_args = as("status", sc.relay_args({"--json"}));

    // Streaming: exit 0, and the figures are the database's. Confirmed can
    // move between our read and status's, so read the slot until it is still.
    nlohmann::json j;
    ops::command_result r;
    std::vector<std::vector<std::optional<std::string>>> row;
    bool same = wait_until(clock::now() + 30s, [&] {
        r = ops::run_command(bin, status_args);
        j = nlohmann::json::parse(r.output);
        row = sc.admin().query("SELECT active_pid::text, confirmed_flush_lsn::text, restart_lsn::text, wal_status "
                               "FROM pg_replication_slots WHERE slot_name = '" + sc.slot() + "'");
        return j["slot"]["confirmed_flush_lsn"] == *row[0][1];
    }, 500ms);
    INFO("status output:\n" << r.output);
    CHECK(same);
    CHECK(r.code == 0);
    CHECK(j["healthy"] == true);
    CHECK(j["slot"]["exists"] == true);
    CHECK(j["slot"]["plugin"] == "pgoutput");
    CHECK(j["slot"]["active"] == true);
    CHECK(std::to_string(j["slot"]["active_pid"].get<int>()) == *row[0][0]);
    CHECK(j["slot"]["restart_lsn"] == *row[0][2]);
    CHECK(j["slot"]["wal_status"] == *row[0][3]);
    CHECK(j["slot"]["retained_wal_bytes"].get<long long>() >= 0);
    CHECK(j["slot"]["lag_bytes"].get<long long>() >= 0);
    CHECK(j["publication"]["tables"] == nlohmann::json::array({sc.table()}));
    CHECK(j["publication"]["publish"] == "insert");
    // Kafka: one entry per topic written, each at or below what the slot confirmed.
    std::set<std::string> topics;
    const auto confirmed = parse_lsn(*row[0][1]);
    for (const auto& t : j["kafka"]["topics"]) {
        topics.insert(t["topic"].get<std::string>());
        const auto newest = parse_lsn(t["newest_commit_lsn"].get<std::string>());
        CHECK(newest > 0);
        CHECK(newest <= confirmed);
    }
    CHECK(topics == std::set<std::string>{sc.topic("type0"), sc.topic("type1"), sc.topic("type2")});

    // The text screen says the same for people.
    auto text = ops::run_command(bin, as("status", sc.relay_args()));
    INFO("status text:\n" << text.output);
    CHECK(text.code == 0);
    CHECK(text.output.find("confirmed lsn     " + *row[0][1]) != std::string::npos);
    CHECK(text.output.find("healthy") != std::string::npos);

    // No relay: exit 30, with the reason.
    relay.terminate();
    REQUIRE(relay.wait_exit(clock::now() + 40s).has_value());
    REQUIRE(wait_until(clock::now() + 20s, [&] { return !sc.slot_info().active_pid.has_value(); }));
    r = ops::run_command(bin, status_args);
    INFO("status output (stopped):\n" << r.output);
    CHECK(r.code == 30);
    j = nlohmann::json::parse(r.output);
    CHECK(j["healthy"] == false);
    CHECK(j["problems"].dump().find("no walsender holds slot") != std::string::npos);

    // A slot that does not exist: exit 16.
    r = ops::run_command(bin, as("status", sc.relay_args({"--json"}), "--slot", sc.slot() + "_missing"));
    CHECK(r.code == 16);
}
