#include "outbox_relay/config.hpp"

#include "outbox_relay/cleanup_plan.hpp"
#include "outbox_relay/json_error.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <optional>
#include <set>
#include <utility>
#include <string_view>

namespace outbox {
namespace {

// ---------------------------------------------------------------------------
// Option names. One spelling per option: the flag is --<name>, the JSON key is
// <name>, the environment variable is OUTBOX_RELAY_<NAME> with '-' -> '_'.
//
// librdkafka properties (-X prop=value) come from three places too:
//   flag:  -X linger.ms=5                  (repeatable)
//   JSON:  "kafka": {"linger.ms": "5"}     (strings; integers/booleans accepted)
//   env:   OUTBOX_RELAY_KAFKA_LINGER_MS=5  (name upper-cased, '.' -> '_')
// The env form is reversible because librdkafka property names contain no
// '_'. Precedence is per property: flag > env > file.
// ---------------------------------------------------------------------------
constexpr std::string_view env_prefix = "OUTBOX_RELAY_";
constexpr std::string_view env_kafka_prefix = "OUTBOX_RELAY_KAFKA_";
// The path of the file itself: read by main before build_config, so it is
// known here only to be skipped (not reported as a typo).
constexpr std::string_view config_path_option = "config";
// The librdkafka properties: "X" as a flag, "kafka" in the file.
constexpr std::string_view kafka_flag = "X";
constexpr std::string_view kafka_key = "kafka";

// Settings the Kafka sink forces for the delivery guarantees (idempotent
// producer, acks=all, no timeout inside the producer: ARCHITECTURE.md
// invariants 3 and 4), that have their own option, or that the relay sizes
// itself. Rejected at configuration time so the error names the source.
struct refused_prop {
    std::string_view name;
    std::string_view why;
};
constexpr std::array<refused_prop, 10> refused_kafka_props = {{
    {"bootstrap.servers", "use --brokers"},
    {"metadata.broker.list", "use --brokers"},
    {"enable.idempotence", "forced to true by the relay (ordering, no duplicates)"},
    {"acks", "forced to all by the relay (nothing acked is lost)"},
    {"request.required.acks", "forced to all by the relay (nothing acked is lost)"},
    {"message.timeout.ms", "forced to 0 by the relay (records never time out in the producer)"},
    {"delivery.timeout.ms", "forced to 0 by the relay (records never time out in the producer)"},
    {"transactional.id", "set by the relay from the cluster, database and slot (kafka-transactions)"},
    // The relay stops reading Postgres above max-inflight-*; librdkafka's own
    // queue is sized above that so it can never refuse a record first.
    {"queue.buffering.max.messages", "sized by the relay: set max-inflight-records instead"},
    {"queue.buffering.max.kbytes", "sized by the relay: set max-inflight-bytes instead"},
}};

// The route options (table, topic, columns, placements, envelope): below.
struct route_option;
const route_option* find_route_option(std::string_view name);

const option_spec* find_option(std::string_view name) {
    for (const option_spec& o : options())
        if (o.name == name) return &o;
    return nullptr;
}

struct raw_value {
    std::string value;
    std::string source;  // e.g. "--slot", "OUTBOX_RELAY_SLOT", "relay.json:slot"
};

struct raw_config {
    std::map<std::string, raw_value> options;  // option name -> value
    std::map<std::string, raw_value> kafka;    // property -> value
    // The file's "tables" (route options per outbox table) and "messages"
    // (route options of the outbox messages).
    std::optional<std::vector<std::map<std::string, raw_value>>> tables;
    std::string tables_source;
    std::map<std::string, raw_value> messages;
};

constexpr std::string_view tables_key = "tables";
constexpr std::string_view messages_key = "messages";

error config_error(std::string key, std::string source, std::string message) {
    error e(errc::bad_config, key);
    e.source = std::move(source);
    e.message = std::move(message);
    return e;
}

// ---------------------------------------------------------------------------
// JSON file
// ---------------------------------------------------------------------------

// JSON scalars are accepted as their text; numbers and booleans are written
// unquoted by most people and meaning is the same.
bool json_scalar_text(const nlohmann::json& v, std::string* out) {
    switch (v.type()) {
        case nlohmann::json::value_t::string: *out = v.get_ref<const std::string&>(); return true;
        case nlohmann::json::value_t::number_unsigned: *out = std::to_string(v.get<std::uint64_t>()); return true;
        case nlohmann::json::value_t::number_integer: *out = std::to_string(v.get<std::int64_t>()); return true;
        case nlohmann::json::value_t::boolean: *out = v.get<bool>() ? "true" : "false"; return true;
        default: return false;
    }
}

result<void> read_file(std::string_view text, std::string_view file_name, raw_config& raw) {
    const std::string fname = file_name.empty() ? std::string("config") : std::string(file_name);
    auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) {
        const json_error_site loc = locate_json_error(text);
        const std::size_t upto = std::min(loc.position, text.size());
        // position is 1-based past the offending character; count the lines
        // before it.
        const std::size_t line =
            1 + static_cast<std::size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(upto > 0 ? upto - 1 : 0), '\n'));
        const std::string where = fname + ":" + std::to_string(line);
        return config_error("config", where, where + ": invalid JSON: " + loc.reason);
    }
    if (!doc.is_object()) return config_error("config", fname, fname + ": the top level must be a JSON object");
    for (const auto& [key, value] : doc.items()) {
        const std::string source = fname + ":" + key;
        if (key == kafka_key) {
            if (!value.is_object())
                return config_error(key, source, "must be an object of librdkafka properties, e.g. {\"linger.ms\": \"5\"}");
            for (const auto& [prop, pv] : value.items()) {
                std::string s;
                if (!json_scalar_text(pv, &s))
                    return config_error("kafka", source + "." + prop, "librdkafka property value must be a string, integer or boolean");
                raw.kafka[prop] = {std::move(s), source + "." + prop};
            }
            continue;
        }
        if (key == tables_key || key == messages_key) {
            const bool is_tables = key == tables_key;
            if (is_tables && (!value.is_array() || value.empty()))
                return config_error(key, source, "must be a non-empty array of objects, one per outbox table");
            if (!is_tables && !value.is_object())
                return config_error(key, source, "must be an object of route options for the outbox messages");
            if (is_tables) {
                raw.tables.emplace();
                raw.tables_source = source;
            }
            const std::size_t n = is_tables ? value.size() : 1;
            for (std::size_t i = 0; i < n; ++i) {
                const auto& entry = is_tables ? value[i] : value;
                const std::string where = is_tables ? source + "[" + std::to_string(i) + "]" : source;
                if (!entry.is_object()) return config_error(key, where, "must be an object of route options");
                std::map<std::string, raw_value> opts;
                for (const auto& [k, v] : entry.items()) {
                    const std::string src = where + "." + k;
                    if (find_route_option(k) == nullptr || (!is_tables && k == "table"))
                        return config_error(key, src,
                                            "unknown " + std::string(is_tables ? "table" : "messages") + " option \"" +
                                                k + "\" (route options only: topic, route-by, *-column, placement, ...)");
                    std::string text;
                    if (k == "placement" && v.is_array()) {
                        // ["a:header", "b:envelope:x"] reads better in a file than one string.
                        for (const auto& item : v) {
                            if (!item.is_string()) return config_error(key, src, "placement items must be strings");
                            if (!text.empty()) text += ',';
                            text += item.get<std::string>();
                        }
                    } else if (!json_scalar_text(v, &text)) {
                        return config_error(key, src, "must be a string, integer or boolean");
                    }
                    opts[k] = {std::move(text), src};
                }
                if (is_tables)
                    raw.tables->push_back(std::move(opts));
                else
                    raw.messages = std::move(opts);
            }
            continue;
        }
        // "X" is the flag spelling; the file uses "kafka".
        if (find_option(key) == nullptr)
            return config_error(key, source,
                                key == kafka_flag ? "unknown option \"X\": librdkafka properties go in \"kafka\": {...}"
                                                  : "unknown option \"" + key + "\" (misspelt?)");
        std::string s;
        if (!json_scalar_text(value, &s)) return config_error(key, source, "must be a string, integer or boolean");
        raw.options[key] = {std::move(s), source};
    }
    return {};
}

// ---------------------------------------------------------------------------
// Environment and flags
// ---------------------------------------------------------------------------

result<void> read_env(const std::map<std::string, std::string>& env, raw_config& raw) {
    for (const auto& [name, value] : env) {
        if (!name.starts_with(env_prefix)) continue;
        if (name == env_name_of(config_path_option)) continue;
        if (name.starts_with(env_kafka_prefix)) {
            std::string prop;
            for (char c : std::string_view(name).substr(env_kafka_prefix.size()))
                prop += c == '_' ? '.' : static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            if (prop.empty()) return config_error("kafka", name, "names no librdkafka property");
            raw.kafka[prop] = {value, name};
            continue;
        }
        const option_spec* found = nullptr;
        for (const option_spec& o : options())
            if (env_name_of(o.name) == name) found = &o;
        // A misspelt variable would otherwise be ignored silently.
        if (found == nullptr) return config_error(name, name, "unknown OUTBOX_RELAY_* variable (misspelt?)");
        raw.options[std::string(found->name)] = {value, name};
    }
    return {};
}

result<void> read_flags(const std::vector<std::pair<std::string, std::string>>& flags, raw_config& raw) {
    for (const auto& [name, value] : flags) {
        if (name == config_path_option) continue;
        if (name == kafka_flag) {
            const auto eq = value.find('=');
            if (eq == std::string::npos || eq == 0)
                return config_error("X", "-X " + value, "expected -X property=value");
            std::string prop = value.substr(0, eq);
            raw.kafka[prop] = {value.substr(eq + 1), "-X " + prop};
            continue;
        }
        if (find_option(name) == nullptr) return config_error(name, "--" + name, "unknown option --" + name);
        raw.options[name] = {value, "--" + name};
    }
    return {};
}

// ---------------------------------------------------------------------------
// Value parsers of the option table
// ---------------------------------------------------------------------------

bool is_lower_alnum_(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }

// Replication slot names: lower-case letters, digits and '_', at most 63
// (NAMEDATALEN-1), as ReplicationSlotValidateName requires.
bool valid_slot(std::string_view s) {
    return !s.empty() && s.size() <= 63 && std::all_of(s.begin(), s.end(), is_lower_alnum_);
}

// A plain SQL identifier as stored in the catalog: letter or '_' first, then
// letters, digits, '_' or '$', at most 63 bytes. Compared case-sensitively
// with what pgoutput sends, so a table created as "Outbox" (quoted) is
// configured as Outbox. Names needing quotes beyond that are refused rather
// than half-supported.
bool valid_identifier(std::string_view s) {
    if (s.empty() || s.size() > 63) return false;
    auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
    if (!alpha(s.front())) return false;
    return std::all_of(s.begin(), s.end(),
                       [&](char c) { return alpha(c) || (c >= '0' && c <= '9') || c == '$'; });
}

bool parse_uint(std::string_view s, std::uint64_t* out) {
    if (s.empty() || s.size() > 20) return false;
    if (!std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return ec == std::errc{} && p == s.data() + s.size();
}

bool valid_kafka_prop_name(std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return is_lower_alnum_(c) || c == '.'; });
}

// "host:port" with port 0-65535 (0: any free port, logged); an IPv6 host goes in brackets.
bool valid_listen(std::string_view s) {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    std::string_view host = s.substr(0, colon);
    std::uint64_t port = 0;
    if (!parse_uint(s.substr(colon + 1), &port) || port > 65535) return false;
    if (host.front() == '[') return host.size() > 2 && host.back() == ']';
    return host.find(':') == std::string_view::npos && host.find_first_of(" \t/") == std::string_view::npos;
}

// Parses an integer in [lo, hi]; the error text says the range.
template <std::uint64_t lo, std::uint64_t hi>
std::string number(const std::string& s, std::uint64_t& out) {
    if (!parse_uint(s, &out) || out < lo || out > hi)
        return "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got \"" + s + "\"";
    return {};
}

std::string identifier(const std::string& s, std::string& out) {
    if (!valid_identifier(s))
        return "must be an identifier ([A-Za-z_][A-Za-z0-9_$]*, at most 63 bytes), got \"" + s + "\"";
    out = s;
    return {};
}

template <std::uint64_t lo, std::uint64_t hi>
std::string millis(const std::string& s, std::chrono::milliseconds& out) {
    std::uint64_t n = 0;
    std::string why = number<lo, hi>(s, n);
    if (why.empty()) out = std::chrono::milliseconds(static_cast<std::int64_t>(n));
    return why;
}

std::string ms_text(std::chrono::milliseconds v) { return std::to_string(v.count()); }

// ---------------------------------------------------------------------------
// Route options: how the rows of one outbox table (or the outbox messages)
// become records. Given at the top level they configure the one table, or
// are the defaults of every entry of "tables" and of "messages" in the file.
// ---------------------------------------------------------------------------
struct route_option {
    std::string_view name;
    std::string_view help;
    std::string (*apply)(routing_config&, const std::string& value);
    std::string (*show)(const routing_config&);
};

std::string column_or_empty(const std::string& s, std::string& out) {
    if (s.empty()) {
        out.clear();
        return {};
    }
    return identifier(s, out);
}

const route_option route_options[] = {
    {"table", "outbox table as schema.table or table",
     [](routing_config& r, const std::string& s) -> std::string {
         const auto dot = s.find('.');
         std::string schema = dot == std::string::npos ? std::string("public") : s.substr(0, dot);
         std::string table = dot == std::string::npos ? s : s.substr(dot + 1);
         if (!valid_identifier(schema) || !valid_identifier(table))
             return "must be schema.table or table (identifiers), got \"" + s + "\"";
         r.schema = std::move(schema);
         r.table = std::move(table);
         return {};
     },
     [](const routing_config& r) { return r.schema + "." + r.table; }},
    {"topic", "topic template: literal text, {column} placeholders, ${routedByValue} (= the route-by column)",
     [](routing_config& r, const std::string& s) -> std::string {
         r.topic_template = s;  // checked by the mapper once every option is in
         return {};
     },
     [](const routing_config& r) { return r.topic_template; }},
    {"route-by", "column that ${routedByValue} in the topic template stands for (Debezium route.by.field)",
     [](routing_config& r, const std::string& s) { return identifier(s, r.route_by); },
     [](const routing_config& r) { return r.route_by; }},
    {"id-column", "column holding the event id (header id, ce_id)",
     [](routing_config& r, const std::string& s) { return identifier(s, r.columns.id); },
     [](const routing_config& r) { return r.columns.id; }},
    {"key-column", "column used as the Kafka key; NULL = null key (Debezium table.field.event.key)",
     [](routing_config& r, const std::string& s) { return identifier(s, r.columns.key); },
     [](const routing_config& r) { return r.columns.key; }},
    {"type-column", "column holding the event type (ce_type; a header through the default placement)",
     [](routing_config& r, const std::string& s) {
         // The default placement (header "type") follows the type column.
         const bool default_header = r.placements == std::vector<placement>{{r.columns.type, placement_kind::header, "type"}};
         std::string why = identifier(s, r.columns.type);
         if (why.empty() && default_header) r.placements = {{r.columns.type, placement_kind::header, "type"}};
         return why;
     },
     [](const routing_config& r) { return r.columns.type; }},
    {"payload-column", "column used as the Kafka value (Debezium table.field.event.payload)",
     [](routing_config& r, const std::string& s) { return identifier(s, r.columns.payload); },
     [](const routing_config& r) { return r.columns.payload; }},
    {"timestamp-column",
     "column with the record timestamp (timestamp, timestamptz or epoch ms); empty = the commit time",
     [](routing_config& r, const std::string& s) { return column_or_empty(s, r.columns.timestamp); },
     [](const routing_config& r) { return r.columns.timestamp; }},
    {"traceparent-column", "column with a W3C traceparent, used when the table has it; empty = none",
     [](routing_config& r, const std::string& s) { return column_or_empty(s, r.columns.traceparent); },
     [](const routing_config& r) { return r.columns.traceparent; }},
    {"tracestate-column", "column with the W3C tracestate, used when the table has it; empty = none",
     [](routing_config& r, const std::string& s) { return column_or_empty(s, r.columns.tracestate); },
     [](const routing_config& r) { return r.columns.tracestate; }},
    {"placement",
     "additional columns: col:header[:alias],col:envelope[:alias],col:partition (Debezium "
     "table.fields.additional.placement); replaces the default",
     [](routing_config& r, const std::string& s) -> std::string {
         auto p = parse_placements(s);
         if (!p) return "\"" + p.error().field + "\": " + p.error().message;
         r.placements = std::move(*p);
         return {};
     },
     [](const routing_config& r) { return placements_text(r.placements); }},
    {"additional-missing", "a placement column the table lacks: error | ignore (Debezium table.field.additional.missing)",
     [](routing_config& r, const std::string& s) -> std::string {
         if (s == "error")
             r.additional_missing = missing_policy::error;
         else if (s == "ignore")
             r.additional_missing = missing_policy::ignore;
         else
             return "must be error or ignore, got \"" + s + "\"";
         return {};
     },
     [](const routing_config& r) -> std::string {
         return r.additional_missing == missing_policy::error ? "error" : "ignore";
     }},
    {"tombstone-on-empty-payload", "a NULL, empty or blank payload becomes a tombstone: true | false",
     [](routing_config& r, const std::string& s) -> std::string {
         if (s != "true" && s != "false") return "must be true or false, got \"" + s + "\"";
         r.tombstone_on_empty_payload = s == "true";
         return {};
     },
     [](const routing_config& r) -> std::string { return r.tombstone_on_empty_payload ? "true" : "false"; }},
    {"envelope", "the record value: raw | json | cloudevents",
     [](routing_config& r, const std::string& s) -> std::string {
         for (envelope_kind e : {envelope_kind::raw, envelope_kind::json, envelope_kind::cloudevents})
             if (s == envelope_name(e)) {
                 r.envelope = e;
                 return {};
             }
         return "must be raw, json or cloudevents, got \"" + s + "\"";
     },
     [](const routing_config& r) { return std::string(envelope_name(r.envelope)); }},
    {"ce-source", "CloudEvents source attribute; empty = /<database>/<schema>.<table>",
     [](routing_config& r, const std::string& s) -> std::string {
         r.ce_source = s;
         return {};
     },
     [](const routing_config& r) { return r.ce_source; }},
    {"ce-content-type", "CloudEvents content-type; empty = from the payload column's type",
     [](routing_config& r, const std::string& s) -> std::string {
         r.ce_content_type = s;
         return {};
     },
     [](const routing_config& r) { return r.ce_content_type; }},
};
constexpr std::size_t route_option_count = sizeof(route_options) / sizeof(route_options[0]);

const route_option* find_route_option(std::string_view name) {
    for (const route_option& o : route_options)
        if (o.name == name) return &o;
    return nullptr;
}

// The top-level spelling of route option I: it configures cfg.routing.
template <std::size_t I>
std::string route_apply(relay_config& c, const std::string& s) {
    return route_options[I].apply(c.routing, s);
}
template <std::size_t I>
std::string route_show(const relay_config& c) {
    return route_options[I].show(c.routing);
}
template <std::size_t... I>
std::vector<option_spec> route_specs(std::index_sequence<I...>) {
    return {option_spec{route_options[I].name, route_options[I].help, false, false, &route_apply<I>,
                        &route_show<I>}...};
}

// The table. Each entry's `apply` validates; `show` prints relay_config's
// value back in the syntax `apply` accepts (the defaults for --help, and the
// effective configuration).
const option_spec option_table[] = {
    {"postgres", "libpq conninfo or URI of the database holding the outbox (replication rights needed)", true, true,
     [](relay_config& c, const std::string& s) -> std::string {
         // Never echo this value: it may carry a password.
         if (s.empty()) return "must not be empty";
         c.postgres = s;
         return {};
     },
     [](const relay_config& c) { return redact_conninfo(c.postgres); }},
    {"postgres-password-file",
     "file holding the Postgres password (given to libpq as `password`, never on the command line; libpq's "
     "PGPASSFILE / passfile work too)",
     false, false,
     [](relay_config& c, const std::string& s) -> std::string {
         c.postgres_password_file = s;  // read (and checked) by the shell before anything connects
         return {};
     },
     [](const relay_config& c) { return c.postgres_password_file; }},
    {"brokers", "Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]", true, false,
     [](relay_config& c, const std::string& s) -> std::string {
         if (s.empty() || s.front() == ',' || s.back() == ',' || s.find(",,") != std::string::npos ||
             s.find_first_of(" \t") != std::string::npos)
             return "must be host:port[,host:port...], got \"" + s + "\"";
         c.brokers = s;
         return {};
     },
     [](const relay_config& c) { return c.brokers; }},
    {"slot", "logical replication slot", false, false,
     [](relay_config& c, const std::string& s) -> std::string {
         if (!valid_slot(s)) return "must match [a-z0-9_]{1,63}, got \"" + s + "\"";
         c.slot = s;
         return {};
     },
     [](const relay_config& c) { return c.slot; }},
    {"publication", "publication of the outbox table", false, false,
     [](relay_config& c, const std::string& s) { return identifier(s, c.publication); },
     [](const relay_config& c) { return c.publication; }},
    {"delivery", "exactly-once | at-least-once", false, false,
     [](relay_config& c, const std::string& s) -> std::string {
         if (s == "exactly-once")
             c.delivery = delivery_mode::exactly_once;
         else if (s == "at-least-once")
             c.delivery = delivery_mode::at_least_once;
         else
             return "must be exactly-once or at-least-once, got \"" + s + "\"";
         return {};
     },
     [](const relay_config& c) -> std::string {
         return c.delivery == delivery_mode::exactly_once ? "exactly-once" : "at-least-once";
     }},
    // librdkafka's queue is sized above these (at most 10,000,000 messages and
    // 2 GiB), so the upper bounds keep that possible.
    {"max-inflight-records", "stop reading the WAL above this many unacked (or parked) records", false, false,
     [](relay_config& c, const std::string& s) {
         std::uint64_t n = 0;
         std::string why = number<1, 5'000'000>(s, n);
         c.max_inflight_records = static_cast<std::size_t>(n);
         return why;
     },
     [](const relay_config& c) { return std::to_string(c.max_inflight_records); }},
    {"max-inflight-bytes", "stop reading the WAL above this many unacked (or parked) bytes", false, false,
     [](relay_config& c, const std::string& s) {
         std::uint64_t n = 0;
         std::string why = number<1, std::uint64_t{1} << 30>(s, n);
         c.max_inflight_bytes = static_cast<std::size_t>(n);
         return why;
     },
     [](const relay_config& c) { return std::to_string(c.max_inflight_bytes); }},
    // At most 10 s: the server must hear from us well inside
    // wal_sender_timeout (ARCHITECTURE.md invariant 5).
    {"status-interval-ms", "status update interval to Postgres, ms", false, false,
     [](relay_config& c, const std::string& s) { return millis<100, 10'000>(s, c.status_interval); },
     [](const relay_config& c) { return ms_text(c.status_interval); }},
    {"drain-timeout-ms", "how long SIGTERM waits for the open transaction, then for Kafka acks, ms", false, false,
     [](relay_config& c, const std::string& s) { return millis<1, 3'600'000>(s, c.drain_timeout); },
     [](const relay_config& c) { return ms_text(c.drain_timeout); }},
    {"reconnect-backoff-max-ms", "cap of the reconnect and producer-restart backoff, ms", false, false,
     [](relay_config& c, const std::string& s) { return millis<1, 3'600'000>(s, c.reconnect_backoff_max); },
     [](const relay_config& c) { return ms_text(c.reconnect_backoff_max); }},
    {"scan-timeout-ms", "bound on one exactly-once tail scan of a topic (retried after a backoff), ms", false, false,
     [](relay_config& c, const std::string& s) { return millis<100, 3'600'000>(s, c.scan_timeout); },
     [](const relay_config& c) { return ms_text(c.scan_timeout); }},
    // Below the server's default wal_sender_timeout (60 s), so the relay
    // notices a dead path before the server does.
    {"pg-silence-timeout-ms", "nothing heard from Postgres for this long: the connection is dead, reconnect, ms",
     false, false,
     [](relay_config& c, const std::string& s) { return millis<1'000, 3'600'000>(s, c.pg_silence_timeout); },
     [](const relay_config& c) { return ms_text(c.pg_silence_timeout); }},
    {"producer-restart-limit", "fatal producer errors in a row without an ack in between before exit 25", false,
     false,
     [](relay_config& c, const std::string& s) {
         std::uint64_t n = 0;
         std::string why = number<1, 1'000'000>(s, n);
         c.producer_restart_limit = static_cast<unsigned>(n);
         return why;
     },
     [](const relay_config& c) { return std::to_string(c.producer_restart_limit); }},
    {"metrics-listen", "HOST:PORT or PORT (= 127.0.0.1:PORT) for /metrics, /healthz, /readyz (empty = off)", false, false,
     [](relay_config& c, const std::string& s) -> std::string {
         // A bare port ("9187" or ":9187") binds loopback only: exposing the
         // endpoint beyond the host is a choice written out ("0.0.0.0:9187").
         std::string v = s;
         std::uint64_t port = 0;
         if (parse_uint(v, &port) && port <= 65535) v = "127.0.0.1:" + v;
         else if (v.size() > 1 && v.front() == ':' && parse_uint(v.substr(1), &port) && port <= 65535)
             v = "127.0.0.1" + v;
         if (!v.empty() && !valid_listen(v))
             return "must be host:port or port (port 0-65535), got \"" + s + "\"";
         c.metrics_listen = v;
         return {};
     },
     [](const relay_config& c) { return c.metrics_listen; }},
    {"metrics-max-connections",
     "open HTTP connections allowed on metrics-listen; more are closed at once", false, false,
     [](relay_config& c, const std::string& s) {
         std::uint64_t n = 0;
         std::string why = number<1, 10'000>(s, n);
         c.metrics_max_connections = static_cast<std::size_t>(n);
         return why;
     },
     [](const relay_config& c) { return std::to_string(c.metrics_max_connections); }},
    {"ready-stall-ms",
     "/readyz says 503 when records are pending and nothing was acknowledged or committed for this long, ms",
     false, false, [](relay_config& c, const std::string& s) { return millis<100, 3'600'000>(s, c.ready_stall); },
     [](const relay_config& c) { return ms_text(c.ready_stall); }},
    {"slot-status-interval-ms",
     "how often the slot's retained WAL, wal_status, safe_wal_size and active PID are read (0 = never), ms", false,
     false,
     [](relay_config& c, const std::string& s) -> std::string {
         std::chrono::milliseconds v{0};
         std::string why = millis<0, 3'600'000>(s, v);
         if (why.empty() && v.count() > 0 && v.count() < 500) why = "must be 0 or at least 500, got \"" + s + "\"";
         if (why.empty()) c.slot_status_interval = v;
         return why;
     },
     [](const relay_config& c) { return ms_text(c.slot_status_interval); }},
    {"progress-interval-ms", "how often the info progress line (events/s, lag) is logged (0 = never), ms", false,
     false,
     [](relay_config& c, const std::string& s) -> std::string {
         std::chrono::milliseconds v{0};
         std::string why = millis<0, 86'400'000>(s, v);
         if (why.empty() && v.count() > 0 && v.count() < 1000) why = "must be 0 or at least 1000, got \"" + s + "\"";
         if (why.empty()) c.progress_interval = v;
         return why;
     },
     [](const relay_config& c) { return ms_text(c.progress_interval); }},
    {"log-level", "debug | info | warn | error", false, false,
     [](relay_config& c, const std::string& s) -> std::string {
         if (s != "debug" && s != "info" && s != "warn" && s != "error")
             return "must be debug, info, warn or error, got \"" + s + "\"";
         c.log_level = s;
         return {};
     },
     [](const relay_config& c) { return c.log_level; }},
    {"log-format", "keyvalue | json (one JSON object per line, same keys)", false, false,
     [](relay_config& c, const std::string& s) -> std::string {
         if (s == "keyvalue")
             c.log_fmt = log_format::keyvalue;
         else if (s == "json")
             c.log_fmt = log_format::json;
         else
             return "must be keyvalue or json, got \"" + s + "\"";
         return {};
     },
     [](const relay_config& c) -> std::string { return c.log_fmt == log_format::json ? "json" : "keyvalue"; }},
    {"create-slot", "create the publication and slot when missing: true | false", false, false,
     [](relay_config& c, const std::string& s) -> std::string {
         if (s != "true" && s != "false") return "must be true or false, got \"" + s + "\"";
         c.create_slot = s == "true";
         return {};
     },
     [](const relay_config& c) -> std::string { return c.create_slot ? "true" : "false"; }},
    {"dead-letter-topic",
     "topic for rows Kafka refuses for good or that cannot be mapped (empty = stop with exit 21/23 instead)", false,
     false,
     [](relay_config& c, const std::string& s) -> std::string {
         if (!s.empty() && !valid_topic_name(s))
             return "must be a Kafka topic name (1-249 of [a-zA-Z0-9._-], not . or ..), got \"" + s + "\"";
         c.dead_letter_topic = s;
         return {};
     },
     [](const relay_config& c) { return c.dead_letter_topic; }},
    {"kafka-transactions",
     "exactly-once: produce in Kafka transactions, which fences a paused relay once a standby took over: true | "
     "false",
     false, false,
     [](relay_config& c, const std::string& s) -> std::string {
         if (s != "true" && s != "false") return "must be true or false, got \"" + s + "\"";
         c.kafka_transactions = s == "true";
         return {};
     },
     [](const relay_config& c) -> std::string { return c.kafka_transactions ? "true" : "false"; }},
    {"kafka-txn-max-ms",
     "the longest a Kafka transaction stays open while records keep coming (commits happen sooner when the WAL "
     "is idle), ms",
     false, false, [](relay_config& c, const std::string& s) { return millis<1, 60'000>(s, c.kafka_txn_max); },
     [](const relay_config& c) { return ms_text(c.kafka_txn_max); }},
    {"kafka-txn-min-interval-ms",
     "the least time from the start of one Kafka commit to the next when the stream goes quiet (fewer, larger "
     "transactions; each costs the producer CPU), ms; 0 = commit as soon as the stream is quiet",
     false, false,
     [](relay_config& c, const std::string& s) { return millis<0, 60'000>(s, c.kafka_txn_min_interval); },
     [](const relay_config& c) { return ms_text(c.kafka_txn_min_interval); }},
    {"kafka-txn-begin-delay-ms",
     "after a Kafka commit, how long records wait before the next transaction's first one is produced: the "
     "coordinator answers CONCURRENT_TRANSACTIONS until the commit's markers are written, and librdkafka 2.0.2 "
     "retries that after 20 ms, ms; 0 = at once",
     false, false,
     [](relay_config& c, const std::string& s) { return millis<0, 1'000>(s, c.kafka_txn_begin_delay); },
     [](const relay_config& c) { return ms_text(c.kafka_txn_begin_delay); }},
    {"accept-slot-gap",
     "start even though the slot was (re)created while Kafka holds events of this source: true | false", false,
     false,
     [](relay_config& c, const std::string& s) -> std::string {
         if (s != "true" && s != "false") return "must be true or false, got \"" + s + "\"";
         c.accept_slot_gap = s == "true";
         return {};
     },
     [](const relay_config& c) -> std::string { return c.accept_slot_gap ? "true" : "false"; }},
    // Opt-in: off unless set. The rule (which rows, when) is cleanup_plan.hpp's.
    {"cleanup-after",
     "delete outbox rows the relay has confirmed, once their transaction committed this long ago: 90s, 15m, 1h, 2d "
     "(empty = off; plain tables only)",
     false, false,
     [](relay_config& c, const std::string& s) -> std::string {
         auto r = parse_cleanup_after(s);
         if (!r) return r.error().message;
         c.cleanup_after = *r;
         return {};
     },
     [](const relay_config& c) { return format_cleanup_after(c.cleanup_after); }},
    {"cleanup-batch", "rows deleted per cleanup statement (each its own transaction)", false, false,
     [](relay_config& c, const std::string& s) {
         std::uint64_t n = 0;
         std::string why = number<1, 1'000'000>(s, n);
         c.cleanup_batch = static_cast<std::size_t>(n);
         return why;
     },
     [](const relay_config& c) { return std::to_string(c.cleanup_batch); }},
    {"message-prefix",
     "prefix of pg_logical_emit_message outbox messages relayed as events; empty = messages off", false, false,
     [](relay_config& c, const std::string& s) -> std::string {
         if (s.size() > 200) return "must be at most 200 bytes";
         c.message_prefix = s;
         return {};
     },
     [](const relay_config& c) { return c.message_prefix; }},
};

}  // namespace

std::span<const option_spec> options() noexcept {
    // The route options go after "publication", as one block.
    static const std::vector<option_spec> all = [] {
        std::vector<option_spec> v;
        for (const option_spec& o : option_table) {
            v.push_back(o);
            if (o.name == "publication")
                for (const option_spec& r : route_specs(std::make_index_sequence<route_option_count>{})) v.push_back(r);
        }
        return v;
    }();
    return all;
}

std::vector<routing_config> table_routes(const relay_config& cfg) {
    return cfg.tables.empty() ? std::vector<routing_config>{cfg.routing} : cfg.tables;
}

std::string env_name_of(std::string_view option) {
    std::string s(env_prefix);
    for (char c : option) s += c == '-' ? '_' : static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    return s;
}

std::string effective_config_json(const relay_config& cfg, int indent) {
    nlohmann::ordered_json j;
    for (const option_spec& o : options()) j[std::string(o.name)] = o.show(cfg);
    // Routes: every table's own options when they are not just the top level's
    // (a file with "tables"), and the messages' route, so the output reads
    // back as the same configuration.
    auto route_json = [](const routing_config& r, bool with_table) {
        nlohmann::ordered_json o = nlohmann::ordered_json::object();
        for (const route_option& ro : route_options)
            if (with_table || ro.name != "table") o[std::string(ro.name)] = ro.show(r);
        return o;
    };
    if (!cfg.tables.empty() &&
        !(cfg.tables.size() == 1 && route_json(cfg.tables[0], true) == route_json(cfg.routing, true))) {
        j.erase("table");
        nlohmann::ordered_json t = nlohmann::ordered_json::array();
        for (const auto& r : cfg.tables) t.push_back(route_json(r, true));
        j["tables"] = std::move(t);
    }
    if (!cfg.message_prefix.empty()) j["messages"] = route_json(cfg.messages, false);
    nlohmann::ordered_json k = nlohmann::ordered_json::object();
    for (const auto& [prop, value] : cfg.kafka) k[prop] = shown_kafka_value(prop, value);
    j[std::string(kafka_key)] = std::move(k);
    return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string_view refused_kafka_property(std::string_view name) noexcept {
    for (const auto& r : refused_kafka_props)
        if (r.name == name) return r.why;
    return {};
}

result<relay_config> build_config(std::string_view file_json, std::string_view file_name,
                                  const std::map<std::string, std::string>& env,
                                  const std::vector<std::pair<std::string, std::string>>& flags) {
    // Later sources overwrite earlier ones per key: file < env < flags.
    raw_config raw;
    if (!file_json.empty()) {
        if (auto r = read_file(file_json, file_name, raw); !r) return r.error();
    }
    if (auto r = read_env(env, raw); !r) return r.error();
    if (auto r = read_flags(flags, raw); !r) return r.error();

    relay_config cfg;
    for (const option_spec& o : options()) {
        auto it = raw.options.find(std::string(o.name));
        if (it == raw.options.end()) {
            if (o.required)
                return config_error(std::string(o.name), "",
                                    "required: set --" + std::string(o.name) + ", " + env_name_of(o.name) +
                                        " or \"" + std::string(o.name) + "\" in the config file");
            continue;
        }
        if (std::string why = o.apply(cfg, it->second.value); !why.empty())
            return config_error(std::string(o.name), it->second.source, std::move(why));
    }

    for (const auto& [prop, value] : raw.kafka) {
        if (!valid_kafka_prop_name(prop))
            return config_error("kafka", value.source, "\"" + prop + "\" is not a librdkafka property name");
        if (auto why = refused_kafka_property(prop); !why.empty())
            return config_error("kafka", value.source, prop + " cannot be set: " + std::string(why));
        cfg.kafka[prop] = value.value;
    }

    // Every route is checked with the mapper itself so config and runtime
    // can never disagree about what is valid. `opts` are the options that
    // route got beyond the top level (they name the source of an error).
    auto check_route = [&](const routing_config& r, const std::map<std::string, raw_value>& opts,
                           const std::string& what) -> result<void> {
        auto m = outbox_mapper::create(r);
        if (m) return {};
        const bool topic = m.error().code == errc::bad_topic_template;
        const std::string key = topic ? "topic" : "placement";
        std::string src;
        if (auto it = opts.find(key); it != opts.end())
            src = it->second.source;
        else if (auto top = raw.options.find(key); top != raw.options.end())
            src = top->second.source;
        if (topic)
            return config_error(key, src, "invalid topic template \"" + r.topic_template + "\" (" + what +
                                              "): use literal [A-Za-z0-9._-] text, {column} placeholders and "
                                              "${routedByValue}");
        return config_error(key, src, "placement \"" + m.error().field + "\" (" + what + "): " + m.error().message);
    };
    auto overlay = [](routing_config r, const std::map<std::string, raw_value>& opts) -> result<routing_config> {
        for (const auto& [k, v] : opts)
            if (std::string why = find_route_option(k)->apply(r, v.value); !why.empty())
                return config_error(k, v.source, std::move(why));
        return r;
    };
    if (raw.tables) {
        if (auto it = raw.options.find("table"); it != raw.options.end())
            return config_error("table", it->second.source,
                                "\"table\" and \"tables\" are both set: with \"tables\", name each table in its entry");
        std::set<std::string> seen;
        for (std::size_t i = 0; i < raw.tables->size(); ++i) {
            const auto& opts = (*raw.tables)[i];
            const std::string where = raw.tables_source + "[" + std::to_string(i) + "]";
            if (!opts.count("table"))
                return config_error("tables", where, "each entry names its \"table\"");
            auto r = overlay(cfg.routing, opts);
            if (!r) return r.error();
            const std::string name = r->schema + "." + r->table;
            if (!seen.insert(name).second)
                return config_error("tables", where, "table " + name + " appears twice");
            if (auto ok = check_route(*r, opts, name); !ok) return ok.error();
            cfg.tables.push_back(std::move(*r));
        }
    } else {
        if (auto ok = check_route(cfg.routing, {}, cfg.routing.schema + "." + cfg.routing.table); !ok)
            return ok.error();
        cfg.tables.push_back(cfg.routing);
    }
    {
        auto r = overlay(cfg.routing, raw.messages);
        if (!r) return r.error();
        cfg.messages = std::move(*r);
        cfg.messages.relid = 0;
        if (!cfg.message_prefix.empty())
            if (auto ok = check_route(cfg.messages, raw.messages, "messages"); !ok) return ok.error();
    }
    return cfg;
}

}  // namespace outbox
