#pragma once
// Start-up checks and objects on the Postgres side, over an ordinary
// (non-replication) blocking libpq connection. Runs once before streaming.
#include "outbox_relay/config.hpp"
#include "outbox_relay/exit_code.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace outbox::io {

// Set-up failures are the exit codes 10-16 of exit_code.hpp (pg_connect ...
// slot); `ok` when everything is in place.
using setup_failure = exit_code;

struct setup_result {
    exit_code failure = exit_code::ok;
    std::string message;  // one line: what is wrong and what to do
    bool slot_created = false;  // the slot did not exist and was created now
    std::uint32_t table_oid = 0;  // the first outbox table's OID (the root of a partitioned one)
    std::vector<std::uint32_t> table_oids;  // every outbox table's, in table_routes(cfg) order
    bool partitioned = false;     // one of them is partitioned
    std::string system_id;        // IDENTIFY_SYSTEM systemid of the cluster
    std::string database;         // the database the outbox lives in
};

// Checks wal_level, rights, table and columns; creates the publication
// (publish = 'insert') and the pgoutput slot when missing and
// cfg.create_slot is set. Blocking; call before the loop streams.
setup_result prepare_postgres(const relay_config& cfg);

// Drops cfg.slot, retrying while it is still active (a walsender letting go)
// for up to `wait`. Blocking. Returns an empty string on success (or when
// the slot is already gone), else why not.
std::string drop_replication_slot(const relay_config& cfg, std::chrono::seconds wait);

}  // namespace outbox::io
