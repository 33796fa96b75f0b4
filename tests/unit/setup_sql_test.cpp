#include "outbox_relay/setup_sql.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>

using namespace outbox;

namespace {

relay_config two_tables() {
    relay_config c;
    c.slot = "s1";
    c.publication = "p1";
    routing_config a;
    a.schema = "orders";
    a.table = "outbox";
    routing_config b;
    b.schema = "billing";
    b.table = "events";
    b.columns.key = "account";
    c.tables = {a, b};
    return c;
}

bool has_step(const std::vector<setup_step>& steps, const std::string& name) {
    return std::any_of(steps.begin(), steps.end(), [&](const setup_step& s) { return s.name == name; });
}

}  // namespace

TEST_CASE("sql_quoting_doubles_embedded_quotes") {
    CHECK(sql_ident("a\"b") == "\"a\"\"b\"");
    CHECK(sql_literal("it's") == "'it''s'");
    CHECK(sql_ident("") == "\"\"");
}

TEST_CASE("setup_steps_cover_every_table_in_order") {
    auto steps = setup_steps(two_tables(), "relay");
    std::vector<std::string> names;
    for (const auto& s : steps) names.push_back(s.name);
    // Tables, then the publication (before the slot: PG15 looks it up), then the role and grants.
    const std::vector<std::string> want{"table orders.outbox",
                                        "table billing.events",
                                        "publication",
                                        "publication orders.outbox",
                                        "publication billing.events",
                                        "slot",
                                        "role",
                                        "grant_connect",
                                        "grant_usage orders",
                                        "grant_usage billing",
                                        "grant_select orders.outbox",
                                        "grant_select billing.events"};
    CHECK(names == want);
    const auto& pub = steps[2];
    CHECK(pub.sql.find("FOR TABLE \"orders\".\"outbox\", \"billing\".\"events\"") != std::string::npos);
    CHECK(pub.sql.find("publish = 'insert'") != std::string::npos);
    CHECK(pub.sql.find("publish_via_partition_root = true") != std::string::npos);
    // The configured key column is in that table's DDL.
    CHECK(steps[1].sql.find("\"account\" text NOT NULL") != std::string::npos);
    CHECK(steps[0].sql.find("\"aggregateid\" text NOT NULL") != std::string::npos);
}

TEST_CASE("setup_every_statement_is_guarded_and_has_a_check") {
    for (const auto& s : setup_steps(two_tables(), "relay")) {
        CAPTURE(s.name);
        CHECK(s.check.rfind("SELECT ", 0) == 0);
        const bool guarded = s.sql.find("IF NOT EXISTS") != std::string::npos ||
                             s.sql.find("WHERE NOT EXISTS") != std::string::npos ||
                             s.sql.rfind("GRANT ", 0) == 0 || s.sql.find("GRANT CONNECT") != std::string::npos;
        CHECK(guarded);  // running the script twice is harmless
        CHECK(s.sql.find("PASSWORD") == std::string::npos);
    }
}

TEST_CASE("setup_without_role_has_no_grants") {
    auto steps = setup_steps(two_tables(), "");
    CHECK(!has_step(steps, "role"));
    CHECK(!has_step(steps, "grant_connect"));
    CHECK(has_step(steps, "slot"));
}

TEST_CASE("setup_route_by_equal_to_key_is_one_column") {
    relay_config c;
    c.routing.route_by = "aggregateid";
    auto steps = setup_steps(c, "");
    const std::string& ddl = steps.at(0).sql;
    const auto first = ddl.find("\"aggregateid\"");
    REQUIRE(first != std::string::npos);
    CHECK(ddl.find("\"aggregateid\"", first + 1) == std::string::npos);
}

TEST_CASE("setup_names_with_quotes_are_quoted") {
    relay_config c;
    c.slot = "s";
    c.publication = "p'x";
    auto steps = setup_steps(c, "r\"ole");
    const std::string script = setup_script(c, "r\"ole");
    CHECK(script.find("pubname = 'p''x'") != std::string::npos);
    CHECK(script.find("CREATE ROLE \"r\"\"ole\" LOGIN REPLICATION") != std::string::npos);
}
