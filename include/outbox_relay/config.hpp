#pragma once
// Relay configuration: JSON file < environment < command-line flags.
// Every option has a flag (--name), an env variable (OUTBOX_RELAY_NAME, dashes
// become underscores, upper case) and a JSON key (name with dashes). Errors
// name the key and the source it came from. librdkafka properties: -X
// prop=value, JSON "kafka": {"prop": "value"}, env OUTBOX_RELAY_KAFKA_<PROP>
// ('.' -> '_'). Unknown JSON keys, OUTBOX_RELAY_* variables and flags are
// errors; "config" / OUTBOX_RELAY_CONFIG (the file path) are skipped.
#include "outbox_relay/errc.hpp"
#include "outbox_relay/outbox.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace outbox {

enum class delivery_mode { exactly_once, at_least_once };

struct relay_config {
    std::string postgres;                     // libpq conninfo or URI (secret: never log raw)
    std::string brokers;                      // bootstrap.servers
    std::string slot = "outbox_relay";
    std::string publication = "outbox_relay_pub";
    routing_config routing;                   // table (schema.table), columns, topic template
    std::map<std::string, std::string> kafka; // -X librdkafka properties
    delivery_mode delivery = delivery_mode::exactly_once;
    std::size_t max_inflight_records = 100'000;
    std::size_t max_inflight_bytes = 256u << 20;
    std::chrono::milliseconds status_interval{10'000};
    std::chrono::milliseconds drain_timeout{30'000};
    std::chrono::milliseconds reconnect_backoff_max{10'000};
    std::string metrics_listen;               // "host:port", empty = off
    std::string log_level = "info";
    bool create_slot = true;                  // create publication + slot when missing
};

// One raw option value and where it came from, for error messages.
struct config_source_value {
    std::string value;
    std::string source;  // e.g. "--slot", "OUTBOX_RELAY_SLOT", "relay.json:slot"
};

struct config_error {
    std::string key;      // the option, e.g. "max-inflight-records"
    std::string source;   // where the bad value came from
    std::string message;  // what is wrong, one line
};

// Builds the configuration. `file_json` is the text of --config (empty when
// none), `env` the process environment (only OUTBOX_RELAY_* are read), `flags`
// the parsed command-line options in order (name without dashes -> value;
// "X" may repeat). On error returns errc::bad_config and fills *err.
result<relay_config> build_config(std::string_view file_json, std::string_view file_name,
                                  const std::map<std::string, std::string>& env,
                                  const std::vector<std::pair<std::string, std::string>>& flags,
                                  config_error* err);

// The conninfo with any password replaced by "********" (key=value and URI forms).
std::string redact_conninfo(std::string_view conninfo);

}  // namespace outbox
