// Test 04: an invalidated slot stops the relay at start-up with exit code 16 and a
// message that says WHY Postgres invalidated it, on every Postgres version the stack
// runs (CI: 15 and 18).
//
// What differs by version (pg_replication_slots): PG15 has only wal_status ('lost');
// PG16 adds `conflicting`, but reports it true for ANY invalidated logical slot, this
// one too (so the relay must not read it as "conflict with recovery"); PG17 adds
// `invalidation_reason` (wal_removed, rows_removed, wal_level_insufficient); PG18 adds
// idle_replication_slot_timeout and the reason idle_timeout, whose slot still has its
// WAL, so "WAL was removed" would be a wrong diagnosis there. wal_status is 'lost' for
// every cause.
//
// Both invalidations are forced through server settings (ALTER SYSTEM + reload) that
// affect every slot of the stack's Postgres; integration tests run one at a time
// (RESOURCE_LOCK stack), and a guard resets the settings even when a check fails.
#include "harness.hpp"
#include "scenario_support.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

using namespace outbox::it::scn;
using outbox::it::exit_status;

namespace {

int server_version(pg& c) { return std::stoi(*c.scalar("SHOW server_version_num")); }

// Resets the named settings and reloads on scope exit.
struct settings_guard {
    pg& conn;
    std::vector<std::string> names;
    ~settings_guard() {
        try {
            for (const auto& n : names) conn.exec("ALTER SYSTEM RESET " + n);
            conn.exec("SELECT pg_reload_conf()");
        } catch (const std::exception& e) {
            std::fprintf(stderr, "04_slot_invalidation: cannot reset settings: %s\n", e.what());
        }
    }
};

// `value` as Postgres prints it back (e.g. 1MB, 1s).
void set_and_reload(pg& c, const std::string& name, const std::string& value) {
    c.exec("ALTER SYSTEM SET " + name + " = '" + value + "'");
    c.exec("SELECT pg_reload_conf()");
    // The reload is asynchronous: wait until a new backend sees the new value (the
    // checkpointer, which invalidates slots, reloads at the same signal).
    const bool applied = wait_until(clock::now() + 10s, [&] {
        pg probe(env().pg);
        return probe.scalar("SELECT current_setting('" + name + "')") == std::optional<std::string>(value);
    });
    REQUIRE_MESSAGE(applied, name << " did not become " << value << " after pg_reload_conf()");
}

std::optional<std::string> slot_column(scenario& sc, const std::string& col) {
    return sc.admin().scalar("SELECT " + col + " FROM pg_replication_slots WHERE slot_name = '" + sc.slot() + "'");
}

// Starts the relay on the scenario's (invalidated) slot and returns its exit status
// and log; it must stop on its own at start-up.
std::pair<exit_status, std::string> run_relay_to_exit(scenario& sc) {
    auto& r = sc.start_relay("relay");
    auto st = r.wait_exit(clock::now() + 60s);
    const std::string log = r.log_text();
    INFO("relay log:\n" << log);
    REQUIRE_MESSAGE(st.has_value(), "the relay did not exit within 60 s on an invalidated slot");
    return {*st, log};
}

}  // namespace

TEST_CASE("04_slot_invalidated_by_removed_wal_exits_16_naming_the_reason") {
    scenario sc("04_slot_invalidation");
    pg& admin = sc.admin();
    const int version = server_version(admin);
    INFO("server_version_num=" << version);
    // Publication before the slot, as the relay itself does it.
    admin.exec("CREATE PUBLICATION " + sc.publication() + " FOR TABLE " + sc.table() + " WITH (publish = 'insert')");
    admin.exec("SELECT pg_create_logical_replication_slot('" + sc.slot() + "', 'pgoutput')");

    {
        settings_guard reset{admin, {"max_slot_wal_keep_size"}};
        // Slots may hold back at most 1 MB of WAL: switching to new segments and a
        // checkpoint then invalidate the idle slot (its restart_lsn falls behind).
        set_and_reload(admin, "max_slot_wal_keep_size", "1MB");
        const bool lost = wait_until(clock::now() + 60s, [&] {
            admin.exec("INSERT INTO " + sc.table() +
                       " (aggregatetype, aggregateid, type, payload, seq) VALUES ('t', 'a', 'x', '{}', 0)");
            admin.exec("SELECT pg_switch_wal()");
            admin.exec("CHECKPOINT");
            return slot_column(sc, "wal_status") == std::optional<std::string>("lost");
        }, 200ms);
        REQUIRE_MESSAGE(lost, "the slot was not invalidated within 60 s");
    }

    const auto [st, log] = run_relay_to_exit(sc);
    CHECK(st.code == std::optional<int>(16));
    CHECK(log.find("was invalidated (wal_status=lost") != std::string::npos);
    CHECK(log.find("WAL it needed was removed") != std::string::npos);
    CHECK(log.find("conflicted with recovery") == std::string::npos);
    if (version >= 170000) {
        // PG17+ name the cause; the relay passes it on.
        CHECK(slot_column(sc, "conflicting") == std::optional<std::string>("f"));
        CHECK(slot_column(sc, "invalidation_reason") == std::optional<std::string>("wal_removed"));
        CHECK(log.find("invalidation_reason=wal_removed") != std::string::npos);
    } else {
        if (version >= 160000) {
            // The PG16 quirk the relay works around (PG17 made it false here).
            CHECK(slot_column(sc, "conflicting") == std::optional<std::string>("t"));
        }
        // Before PG17 there is no such column; the relay must not ask for it (the
        // query would fail and the exit-16 message would be about that instead).
        CHECK(log.find("invalidation_reason") == std::string::npos);
        CHECK(log.find("cannot read pg_replication_slots") == std::string::npos);
    }
}

TEST_CASE("04_slot_invalidated_by_idle_timeout_exits_16_naming_the_reason") {
    scenario sc("04_slot_idle");
    pg& admin = sc.admin();
    const int version = server_version(admin);
    INFO("server_version_num=" << version);
    const std::string have_guc =
        *admin.scalar("SELECT count(*) FROM pg_settings WHERE name = 'idle_replication_slot_timeout'");
    if (version < 180000) {
        // The setting (and so this cause) exists from PG18 on; older servers cannot
        // invalidate a slot for idleness.
        CHECK(have_guc == "0");
        return;
    }
    REQUIRE(have_guc == "1");
    admin.exec("CREATE PUBLICATION " + sc.publication() + " FOR TABLE " + sc.table() + " WITH (publish = 'insert')");
    admin.exec("SELECT pg_create_logical_replication_slot('" + sc.slot() + "', 'pgoutput')");
    {
        settings_guard reset{admin, {"idle_replication_slot_timeout"}};
        set_and_reload(admin, "idle_replication_slot_timeout", "1s");
        // Invalidation happens at a checkpoint once inactive_since is older than the
        // timeout; a new slot is inactive from its creation.
        const bool invalidated = wait_until(clock::now() + 60s, [&] {
            admin.exec("CHECKPOINT");
            return slot_column(sc, "invalidation_reason") == std::optional<std::string>("idle_timeout");
        }, 300ms);
        REQUIRE_MESSAGE(invalidated, "the idle slot was not invalidated within 60 s");
    }
    CHECK(slot_column(sc, "wal_status") == std::optional<std::string>("lost"));

    const auto [st, log] = run_relay_to_exit(sc);
    CHECK(st.code == std::optional<int>(16));
    CHECK(log.find("invalidation_reason=idle_timeout") != std::string::npos);
    CHECK(log.find("inactive longer than idle_replication_slot_timeout") != std::string::npos);
    // Not the removed-WAL diagnosis of PG15 (this slot's WAL may well still exist).
    CHECK(log.find("WAL it needed was removed") == std::string::npos);
}
