#pragma once
// What `outbox-relay setup` prints and (with --apply) runs: the outbox table,
// the publication (publish = 'insert', publish_via_partition_root = true),
// the pgoutput slot and a least-privilege login role, for the configured
// names. Pure: SQL text only; io/setup.cpp executes it.
//
// Every statement is idempotent by itself (IF NOT EXISTS, guarded DO blocks,
// a guarded slot SELECT), so the printed script can be run twice with psql;
// each step also has a check query, so --apply can say what it changed and a
// second --apply changes nothing. Order matters: the publication must exist
// before the slot (PG15 looks it up at the decoded position).
#include "outbox_relay/config.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace outbox {

struct setup_step {
    std::string name;   // table, publication, slot, role, grant_connect, grant_usage, grant_select
    std::string check;  // SELECT returning one boolean: true when the step is already done
    std::string sql;    // the idempotent statement
    std::string why;    // one comment line for the printed script
};

// `role` empty: no role and no grants.
std::vector<setup_step> setup_steps(const relay_config& cfg, std::string_view role);

// The whole script for psql, with comments.
std::string setup_script(const relay_config& cfg, std::string_view role);

// "name" with embedded quotes doubled; 'text' with embedded quotes doubled.
std::string sql_ident(std::string_view s);
std::string sql_literal(std::string_view s);

}  // namespace outbox
