#pragma once
// The operator's subcommands: `outbox-relay status` (one screen: slot,
// publication, lag, retained WAL, and the newest position of this source per
// Kafka topic) and `outbox-relay setup` (the SQL for table, publication, slot
// and role; --apply runs it). Blocking; they run instead of the relay loop.
#include "outbox_relay/config.hpp"

#include <cstdio>
#include <string_view>

namespace outbox::io {

// Writes the report to `out` (text, or one JSON object with `json`) and
// returns the exit code: 0 healthy; 10 cannot connect; 15 publication
// missing or not covering the table; 16 slot missing, not pgoutput or lost;
// 30 no walsender holds the slot; 31 wal_status unreserved; 32 Kafka's
// tails could not be read. The first finding in that order decides.
int run_status(const relay_config& cfg, bool json, std::FILE* out);

// Prints the setup script (setup_sql.hpp) to `out`, or with `apply` runs each
// step whose check says it is not done yet and reports created/exists per
// step and `changes=N`. Returns 0, 10 when it cannot connect, 12 when a
// statement fails (the server's message is printed; usually privileges).
int run_setup(const relay_config& cfg, std::string_view role, bool apply, std::FILE* out);

}  // namespace outbox::io
