#pragma once
// Relay configuration: JSON file < environment < command-line flags.
//
// One option table (options()) drives every layer: the CLI flags and --help
// (main.cpp), the environment, the JSON file and the defaults. Every option
// has a flag (--name), an env variable (OUTBOX_RELAY_NAME, dashes become
// underscores, upper case) and a JSON key (the name). Defaults live in one
// place, the member initialisers of relay_config; the table prints them.
// librdkafka properties: -X prop=value, JSON "kafka": {"prop": "value"}, env
// OUTBOX_RELAY_KAFKA_<PROP> ('.' -> '_'). Unknown JSON keys, OUTBOX_RELAY_*
// variables and flags are errors; "config" / OUTBOX_RELAY_CONFIG (the file
// path) are skipped.
#include "outbox_relay/errc.hpp"
#include "outbox_relay/log_text.hpp"
#include "outbox_relay/outbox.hpp"
#include "outbox_relay/secrets.hpp"  // redact_conninfo (moved there: one module for every secret)

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outbox {

enum class delivery_mode { exactly_once, at_least_once };

struct relay_config {
    std::string postgres;                     // libpq conninfo or URI (secret: never log raw)
    std::string postgres_password_file;       // read by the shell into postgres_password
    // Not an option: the content of postgres_password_file, given to libpq
    // as its `password` keyword (never on a command line, never printed).
    std::string postgres_password;
    std::string brokers;                      // bootstrap.servers
    std::string slot = "outbox_relay";
    std::string publication = "outbox_relay_pub";
    // The route options given at the top level: the one outbox table, or
    // the defaults of every entry of the file's "tables" and of "messages".
    routing_config routing;
    std::vector<routing_config> tables;       // every outbox table: build_config fills it (at least one)
    std::string message_prefix = "outbox";    // pg_logical_emit_message prefix relayed as events; empty = off
    routing_config messages;                  // the route of the outbox messages (build_config fills it)
    std::map<std::string, std::string> kafka; // -X librdkafka properties
    delivery_mode delivery = delivery_mode::exactly_once;
    std::size_t max_inflight_records = 20'000;  // 200 ms of acks at 100 k/s; bounds catch-up RSS
    std::size_t max_inflight_bytes = 16u << 20;
    std::chrono::milliseconds status_interval{10'000};
    std::chrono::milliseconds drain_timeout{30'000};
    std::chrono::milliseconds reconnect_backoff_max{10'000};
    std::chrono::milliseconds scan_timeout{60'000};          // bound on one exactly-once tail scan
    std::chrono::milliseconds pg_silence_timeout{30'000};    // nothing heard from Postgres this long: connection dead
    unsigned producer_restart_limit = 10;     // fatal producer errors in a row (no ack between) before exit 25
    std::string metrics_listen;               // "host:port", empty = off; a bare port binds 127.0.0.1
    std::size_t metrics_max_connections = 64; // more open HTTP connections are closed at once
    std::chrono::milliseconds ready_stall{30'000};  // records pending and no ack/commit this long: not ready
    std::chrono::milliseconds slot_status_interval{5'000};  // how often the slot's WAL figures are read (0: never)
    std::chrono::milliseconds progress_interval{30'000};    // the info progress line (0: never)
    std::string log_level = "info";
    log_format log_fmt = log_format::keyvalue;
    bool create_slot = true;                  // create publication + slot when missing
    bool accept_slot_gap = false;             // carry on when a recreated slot may have left a gap
    std::string dead_letter_topic;            // rows that cannot be delivered for good go here; empty = stop instead
    bool kafka_transactions = true;           // exactly-once: produce in Kafka transactions (fences zombies)
    std::chrono::milliseconds kafka_txn_max{100};  // the longest a Kafka transaction stays open while records keep coming
    std::chrono::milliseconds kafka_txn_min_interval{5};  // the least time from one Kafka commit to the next (0: none)
    std::chrono::milliseconds kafka_txn_begin_delay{3};   // after a commit, wait this long before the next transaction's first record
    std::chrono::milliseconds cleanup_after{0};    // delete relayed outbox rows older than this (cleanup_plan.hpp); 0 = off
    std::size_t cleanup_batch = 10'000;            // rows per cleanup DELETE
};

// One option of the table. `apply` parses a raw value into the config and
// returns an empty string, or says what is wrong with it (one line; never
// echoing a secret). `show` prints the option's current value (the default,
// for relay_config{}) as `apply` would read it back.
struct option_spec {
    std::string_view name;
    std::string_view help;
    bool required = false;
    // The value is (or may hold) a secret: `show` must return it redacted
    // (tests/unit/config_test.cpp checks every such option), and errors never
    // echo it.
    bool secret = false;
    std::string (*apply)(relay_config&, const std::string& value);
    std::string (*show)(const relay_config&);
};

// The option table, in --help order.
std::span<const option_spec> options() noexcept;

// The outbox tables' routes: cfg.tables, or cfg.routing alone when tables
// is empty (a relay_config built by hand rather than by build_config).
std::vector<routing_config> table_routes(const relay_config& cfg);

// OUTBOX_RELAY_<NAME> for option `name`.
std::string env_name_of(std::string_view name);

// Builds the configuration. `file_json` is the text of --config (empty when
// none), `env` the process environment (only OUTBOX_RELAY_* are read), `flags`
// the parsed command-line options in order (name without dashes -> value;
// "X" may repeat). Errors are errc::bad_config with error::field = the option
// key (or the unknown name as given), error::source = where the value came
// from and error::message = what is wrong.
result<relay_config> build_config(std::string_view file_json, std::string_view file_name,
                                  const std::map<std::string, std::string>& env,
                                  const std::vector<std::pair<std::string, std::string>>& flags);

// The effective configuration as a JSON object in the config file's syntax
// (every option of the table by its `show`, plus "kafka"), with secrets
// redacted (secret options' `show`, is_secret_kafka_property). Pretty-printed
// with `indent` spaces. For `run --print-config`.
std::string effective_config_json(const relay_config& cfg, int indent = 2);

// Why the relay refuses a user setting of librdkafka property `name`, or an
// empty view when it may be set. One list for the config layer (which names
// the source) and the Kafka sink (which forces these last).
std::string_view refused_kafka_property(std::string_view name) noexcept;

}  // namespace outbox
