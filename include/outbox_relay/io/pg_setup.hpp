#pragma once
// Start-up checks and objects on the Postgres side, over an ordinary
// (non-replication) blocking libpq connection. Runs once before streaming.
#include "outbox_relay/config.hpp"

#include <string>

namespace outbox::io {

// Distinct process exit codes for set-up failures (README documents them).
enum class setup_failure : int {
    none = 0,
    connect = 10,             // cannot connect / authenticate
    wal_level = 11,           // wal_level is not logical
    privileges = 12,          // role lacks REPLICATION or SELECT on the outbox
    table_missing = 13,       // outbox table does not exist
    column_missing = 14,      // a mapped column is missing
    publication = 15,         // publication missing and could not be created, or does not cover the table
    slot = 16,                // slot missing and could not be created, wrong plugin, or invalidated
};

struct setup_result {
    setup_failure failure = setup_failure::none;
    std::string message;  // one line: what is wrong and what to do
};

// Checks wal_level, rights, table and columns; creates the publication
// (publish = 'insert') and the pgoutput slot when missing and
// cfg.create_slot is set. Blocking; call before the loop streams.
setup_result prepare_postgres(const relay_config& cfg);

}  // namespace outbox::io
