#pragma once
// Every exit code of the outbox-relay process, in one place (README "Running
// the relay" lists them). The start-up checks (io/pg_setup.hpp), the relay
// session (relay_session.hpp) and main() all return these.
#include <string_view>

namespace outbox {

enum class exit_code : int {
    ok = 0,                 // stopped by SIGTERM/SIGINT after draining
    runtime = 1,            // unexpected failure (logged)
    usage = 2,              // bad command line or configuration (names the key and its source)
    // start-up checks
    pg_connect = 10,        // cannot connect / authenticate
    wal_level = 11,         // wal_level is not logical
    privileges = 12,        // role lacks REPLICATION or SELECT on the outbox
    table_missing = 13,     // outbox table does not exist
    column_missing = 14,    // a mapped column is missing
    publication = 15,       // publication missing, not creatable, or not covering the table
    slot = 16,              // slot missing/not creatable, not pgoutput, or invalidated
    // running
    kafka_config = 20,      // librdkafka rejected the producer configuration
    record_rejected = 21,   // Kafka refused a record for good (event id logged); nothing at or after it confirmed
    protocol = 22,          // undecodable replication data or an unexpected message (LSN logged)
    outbox_schema = 23,     // the outbox table lost a mapped column, or a row cannot be mapped
    slot_lost = 24,         // the slot disappeared or was invalidated while streaming
    producer_failed = 25,   // the producer hit an error no new producer can heal, or kept failing
    metrics_listen = 26,    // the metrics endpoint cannot listen on metrics-listen
    fenced = 27,            // another relay took over this source's Kafka transactions (this one is a zombie)
    // `outbox-relay status` (it also returns 10, 15 and 16 for those findings)
    status_slot_inactive = 30,  // no walsender holds the slot: no relay is streaming from it
    status_wal_at_risk = 31,    // wal_status is unreserved: the slot is about to lose WAL it needs
    status_kafka = 32,          // Kafka's tails could not be read (brokers unreachable, not authorised)
};

constexpr int to_int(exit_code c) noexcept { return static_cast<int>(c); }

// Short name of the code for logs, e.g. "record_rejected".
std::string_view exit_code_name(exit_code c) noexcept;

}  // namespace outbox
