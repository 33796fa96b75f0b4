#include "outbox_relay/config.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
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
constexpr std::array<std::string_view, 22> option_names = {
    "postgres",        "brokers",           "slot",
    "publication",     "table",             "topic",
    "id-column",       "aggregatetype-column", "aggregateid-column",
    "type-column",     "payload-column",    "delivery",
    "max-inflight-records", "max-inflight-bytes", "status-interval-ms",
    "drain-timeout-ms", "reconnect-backoff-max-ms", "metrics-listen",
    "log-level",       "create-slot",       "kafka",
    "X",
};

constexpr std::string_view env_prefix = "OUTBOX_RELAY_";
constexpr std::string_view env_kafka_prefix = "OUTBOX_RELAY_KAFKA_";
// The path of the file itself: read by main before build_config, so it is
// known here only to be skipped (not reported as a typo).
constexpr std::string_view config_path_option = "config";

// Settings the Kafka sink forces for the delivery guarantees (idempotent
// producer, acks=all, no timeout inside the producer: ARCHITECTURE.md
// invariants 3 and 4) or that have their own option. Rejected here so the
// error names the source instead of surfacing at producer creation.
struct forbidden_prop {
    std::string_view name;
    std::string_view why;
};
constexpr std::array<forbidden_prop, 7> forbidden_kafka_props = {{
    {"bootstrap.servers", "use --brokers"},
    {"metadata.broker.list", "use --brokers"},
    {"enable.idempotence", "forced to true by the relay (ordering, no duplicates)"},
    {"acks", "forced to all by the relay (nothing acked is lost)"},
    {"request.required.acks", "forced to all by the relay (nothing acked is lost)"},
    {"message.timeout.ms", "forced to 0 by the relay (records never time out in the producer)"},
    {"delivery.timeout.ms", "forced to 0 by the relay (records never time out in the producer)"},
}};

bool is_known_option(std::string_view name) {
    return std::find(option_names.begin(), option_names.end(), name) != option_names.end();
}

std::string env_name_of(std::string_view option) {
    std::string s(env_prefix);
    for (char c : option) s += c == '-' ? '_' : static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    return s;
}

struct raw_config {
    std::map<std::string, config_source_value> options;  // option name -> value
    std::map<std::string, config_source_value> kafka;    // property -> value
};

bool fail(config_error* err, std::string key, std::string source, std::string message) {
    if (err) *err = {std::move(key), std::move(source), std::move(message)};
    return false;
}

// ---------------------------------------------------------------------------
// JSON file
// ---------------------------------------------------------------------------

// Finds where a document that failed to parse went wrong, without exceptions:
// a SAX pass that records the byte offset of the error.
struct error_locator final : nlohmann::json_sax<nlohmann::json> {
    std::size_t position = 0;
    std::string reason;
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return true; }
    bool key(string_t&) override { return true; }
    bool end_object() override { return true; }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) override {
        position = pos;
        // what() reads "[json.exception.parse_error.101] parse error at line
        // L, column C: <reason>"; keep only the reason, the line is ours.
        std::string_view w = ex.what();
        const auto col = w.find("column ");
        const auto colon = col == std::string_view::npos ? col : w.find(": ", col);
        reason = std::string(colon == std::string_view::npos ? w : w.substr(colon + 2));
        return false;
    }
};

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

bool read_file(std::string_view text, std::string_view file_name, raw_config& raw, config_error* err) {
    const std::string fname = file_name.empty() ? std::string("config") : std::string(file_name);
    auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) {
        error_locator loc;
        nlohmann::json::sax_parse(text, &loc);
        const std::size_t upto = std::min(loc.position, text.size());
        // position is 1-based past the offending character; count the lines
        // before it.
        const std::size_t line =
            1 + static_cast<std::size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(upto > 0 ? upto - 1 : 0), '\n'));
        const std::string where = fname + ":" + std::to_string(line);
        return fail(err, "config", where, where + ": invalid JSON: " + loc.reason);
    }
    if (!doc.is_object()) return fail(err, "config", fname, fname + ": the top level must be a JSON object");
    for (const auto& [key, value] : doc.items()) {
        const std::string source = fname + ":" + key;
        // "X" is the flag spelling; the file uses "kafka".
        if (!is_known_option(key) || key == "X")
            return fail(err, key, source, "unknown option \"" + key + "\" (misspelt?)");
        if (key == "kafka") {
            if (!value.is_object())
                return fail(err, key, source, "must be an object of librdkafka properties, e.g. {\"linger.ms\": \"5\"}");
            for (const auto& [prop, pv] : value.items()) {
                std::string s;
                if (!json_scalar_text(pv, &s))
                    return fail(err, "kafka", source + "." + prop, "librdkafka property value must be a string, integer or boolean");
                raw.kafka[prop] = {std::move(s), source + "." + prop};
            }
            continue;
        }
        std::string s;
        if (!json_scalar_text(value, &s)) return fail(err, key, source, "must be a string, integer or boolean");
        raw.options[key] = {std::move(s), source};
    }
    return true;
}

// ---------------------------------------------------------------------------
// Environment and flags
// ---------------------------------------------------------------------------

bool read_env(const std::map<std::string, std::string>& env, raw_config& raw, config_error* err) {
    for (const auto& [name, value] : env) {
        if (!name.starts_with(env_prefix)) continue;
        if (name == env_name_of(config_path_option)) continue;
        if (name.starts_with(env_kafka_prefix)) {
            std::string prop;
            for (char c : std::string_view(name).substr(env_kafka_prefix.size()))
                prop += c == '_' ? '.' : static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            if (prop.empty()) return fail(err, "kafka", name, "names no librdkafka property");
            raw.kafka[prop] = {value, name};
            continue;
        }
        bool found = false;
        for (std::string_view opt : option_names) {
            if (opt == "kafka" || opt == "X") continue;
            if (env_name_of(opt) == name) {
                raw.options[std::string(opt)] = {value, name};
                found = true;
                break;
            }
        }
        // A misspelt variable would otherwise be ignored silently.
        if (!found) return fail(err, name, name, "unknown OUTBOX_RELAY_* variable (misspelt?)");
    }
    return true;
}

bool read_flags(const std::vector<std::pair<std::string, std::string>>& flags, raw_config& raw,
                config_error* err) {
    for (const auto& [name, value] : flags) {
        if (name == config_path_option) continue;
        if (name == "X") {
            const auto eq = value.find('=');
            if (eq == std::string::npos || eq == 0)
                return fail(err, "X", "-X " + value, "expected -X property=value");
            std::string prop = value.substr(0, eq);
            raw.kafka[prop] = {value.substr(eq + 1), "-X " + prop};
            continue;
        }
        if (!is_known_option(name) || name == "kafka")
            return fail(err, name, "--" + name, "unknown option --" + name);
        raw.options[name] = {value, "--" + name};
    }
    return true;
}

// ---------------------------------------------------------------------------
// Validation
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

// "host:port" with port 1-65535; an IPv6 host goes in brackets.
bool valid_listen(std::string_view s) {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    std::string_view host = s.substr(0, colon);
    std::uint64_t port = 0;
    if (!parse_uint(s.substr(colon + 1), &port) || port < 1 || port > 65535) return false;
    if (host.front() == '[') return host.size() > 2 && host.back() == ']';
    return host.find(':') == std::string_view::npos && host.find_first_of(" \t/") == std::string_view::npos;
}

bool apply_number(std::string_view name, const config_source_value& v, std::uint64_t lo, std::uint64_t hi,
                  std::uint64_t* out, config_error* err) {
    if (!parse_uint(v.value, out) || *out < lo || *out > hi)
        return fail(err, std::string(name), v.source,
                    "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got \"" +
                        v.value + "\"");
    return true;
}

bool apply_option(relay_config& c, const std::string& name, const config_source_value& v, config_error* err) {
    const std::string& s = v.value;
    auto identifier = [&](std::string* out) {
        if (!valid_identifier(s))
            return fail(err, name, v.source,
                        "must be an identifier ([A-Za-z_][A-Za-z0-9_$]*, at most 63 bytes), got \"" + s + "\"");
        *out = s;
        return true;
    };
    std::uint64_t n = 0;
    if (name == "postgres") {
        // Never echo this value: it may carry a password.
        if (s.empty()) return fail(err, name, v.source, "must not be empty");
        c.postgres = s;
    } else if (name == "brokers") {
        if (s.empty() || s.front() == ',' || s.back() == ',' || s.find(",,") != std::string::npos ||
            s.find_first_of(" \t") != std::string::npos)
            return fail(err, name, v.source, "must be host:port[,host:port...], got \"" + s + "\"");
        c.brokers = s;
    } else if (name == "slot") {
        if (!valid_slot(s))
            return fail(err, name, v.source, "must match [a-z0-9_]{1,63}, got \"" + s + "\"");
        c.slot = s;
    } else if (name == "publication") {
        return identifier(&c.publication);
    } else if (name == "table") {
        const auto dot = s.find('.');
        std::string schema = dot == std::string::npos ? std::string("public") : s.substr(0, dot);
        std::string table = dot == std::string::npos ? s : s.substr(dot + 1);
        if (!valid_identifier(schema) || !valid_identifier(table))
            return fail(err, name, v.source, "must be schema.table or table (identifiers), got \"" + s + "\"");
        c.routing.schema = std::move(schema);
        c.routing.table = std::move(table);
    } else if (name == "topic") {
        c.routing.topic_template = s;  // validated once the columns are known
    } else if (name == "id-column") {
        return identifier(&c.routing.columns.id);
    } else if (name == "aggregatetype-column") {
        return identifier(&c.routing.columns.aggregatetype);
    } else if (name == "aggregateid-column") {
        return identifier(&c.routing.columns.aggregateid);
    } else if (name == "type-column") {
        return identifier(&c.routing.columns.type);
    } else if (name == "payload-column") {
        return identifier(&c.routing.columns.payload);
    } else if (name == "delivery") {
        if (s == "exactly-once")
            c.delivery = delivery_mode::exactly_once;
        else if (s == "at-least-once")
            c.delivery = delivery_mode::at_least_once;
        else
            return fail(err, name, v.source, "must be exactly-once or at-least-once, got \"" + s + "\"");
    } else if (name == "max-inflight-records") {
        if (!apply_number(name, v, 1, 10'000'000, &n, err)) return false;
        c.max_inflight_records = static_cast<std::size_t>(n);
    } else if (name == "max-inflight-bytes") {
        if (!apply_number(name, v, 1, std::uint64_t{1} << 40, &n, err)) return false;
        c.max_inflight_bytes = static_cast<std::size_t>(n);
    } else if (name == "status-interval-ms") {
        // At most 10 s: the server must hear from us well inside
        // wal_sender_timeout (ARCHITECTURE.md invariant 5).
        if (!apply_number(name, v, 100, 10'000, &n, err)) return false;
        c.status_interval = std::chrono::milliseconds(n);
    } else if (name == "drain-timeout-ms") {
        if (!apply_number(name, v, 1, 3'600'000, &n, err)) return false;
        c.drain_timeout = std::chrono::milliseconds(n);
    } else if (name == "reconnect-backoff-max-ms") {
        if (!apply_number(name, v, 1, 3'600'000, &n, err)) return false;
        c.reconnect_backoff_max = std::chrono::milliseconds(n);
    } else if (name == "metrics-listen") {
        if (!s.empty() && !valid_listen(s))
            return fail(err, name, v.source, "must be host:port (port 1-65535), got \"" + s + "\"");
        c.metrics_listen = s;
    } else if (name == "log-level") {
        if (s != "debug" && s != "info" && s != "warn" && s != "error")
            return fail(err, name, v.source, "must be debug, info, warn or error, got \"" + s + "\"");
        c.log_level = s;
    } else if (name == "create-slot") {
        if (s != "true" && s != "false")
            return fail(err, name, v.source, "must be true or false, got \"" + s + "\"");
        c.create_slot = s == "true";
    } else {
        return fail(err, name, v.source, "unknown option");
    }
    return true;
}

}  // namespace

result<relay_config> build_config(std::string_view file_json, std::string_view file_name,
                                  const std::map<std::string, std::string>& env,
                                  const std::vector<std::pair<std::string, std::string>>& flags,
                                  config_error* err) {
    // Later sources overwrite earlier ones per key: file < env < flags.
    raw_config raw;
    if (!file_json.empty() && !read_file(file_json, file_name, raw, err)) return errc::bad_config;
    if (!read_env(env, raw, err)) return errc::bad_config;
    if (!read_flags(flags, raw, err)) return errc::bad_config;

    relay_config cfg;
    for (const auto& [name, value] : raw.options)
        if (!apply_option(cfg, name, value, err)) return errc::bad_config;

    for (const auto& [prop, value] : raw.kafka) {
        if (!valid_kafka_prop_name(prop)) {
            fail(err, "kafka", value.source, "\"" + prop + "\" is not a librdkafka property name");
            return errc::bad_config;
        }
        for (const auto& f : forbidden_kafka_props) {
            if (prop == f.name) {
                fail(err, "kafka", value.source, prop + " cannot be set: " + std::string(f.why));
                return errc::bad_config;
            }
        }
        cfg.kafka[prop] = value.value;
    }

    for (std::string_view required : {"postgres", "brokers"}) {
        if (!raw.options.contains(std::string(required))) {
            fail(err, std::string(required), "",
                 "required: set --" + std::string(required) + ", " + env_name_of(required) + " or \"" +
                     std::string(required) + "\" in the config file");
            return errc::bad_config;
        }
    }

    // The template is checked with the mapper itself so config and runtime
    // can never disagree about what is valid.
    if (!outbox_mapper::create(cfg.routing)) {
        auto it = raw.options.find("topic");
        fail(err, "topic", it == raw.options.end() ? std::string() : it->second.source,
             "invalid topic template \"" + cfg.routing.topic_template +
                 "\": use literal [A-Za-z0-9._-] text and {column} placeholders");
        return errc::bad_config;
    }
    return cfg;
}

// ---------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------
namespace {

constexpr std::string_view mask = "********";

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
               return lower(x) == lower(y);
           });
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// postgres://user:secret@host:5432/db?password=secret&sslmode=require
std::string redact_uri(std::string_view s, std::size_t scheme_len) {
    std::string out(s.substr(0, scheme_len));
    std::string_view rest = s.substr(scheme_len);
    // libpq takes the userinfo up to the first '@' before the path.
    const auto path = rest.find_first_of("/?");
    const auto at = rest.substr(0, path).find('@');
    if (at != std::string_view::npos) {
        std::string_view userinfo = rest.substr(0, at);
        const auto colon = userinfo.find(':');
        if (colon != std::string_view::npos) {
            out.append(userinfo.substr(0, colon + 1));
            out.append(mask);
        } else {
            out.append(userinfo);
        }
        rest = rest.substr(at);
    }
    const auto q = rest.find('?');
    if (q == std::string_view::npos) {
        out.append(rest);
        return out;
    }
    out.append(rest.substr(0, q + 1));
    std::string_view query = rest.substr(q + 1);
    bool first = true;
    while (true) {
        const auto amp = query.find('&');
        std::string_view param = query.substr(0, amp);
        if (!first) out += '&';
        first = false;
        const auto eq = param.find('=');
        if (eq != std::string_view::npos && iequals(param.substr(0, eq), "password")) {
            out.append(param.substr(0, eq + 1));
            out.append(mask);
        } else {
            out.append(param);
        }
        if (amp == std::string_view::npos) break;
        query = query.substr(amp + 1);
    }
    return out;
}

// host=db password='it''s \' secret' user=app: parsed as libpq's
// conninfo_parse does (optional spaces around '=', single-quoted values with
// backslash escapes, bare values up to whitespace).
std::string redact_keyword_value(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && is_space(s[i])) out += s[i++];
        if (i >= s.size()) break;
        const std::size_t key_start = i;
        while (i < s.size() && s[i] != '=' && !is_space(s[i])) ++i;
        std::string_view key = s.substr(key_start, i - key_start);
        out.append(key);
        while (i < s.size() && is_space(s[i])) out += s[i++];
        if (i >= s.size() || s[i] != '=') {
            // Not key=value: libpq rejects it, but the text may still hold a
            // secret; hide everything from here on rather than guess.
            if (i < s.size()) out.append(mask);
            return out;
        }
        out += s[i++];  // '='
        while (i < s.size() && is_space(s[i])) out += s[i++];
        const std::size_t value_start = i;
        if (i < s.size() && s[i] == '\'') {
            ++i;
            while (i < s.size() && s[i] != '\'') i += (s[i] == '\\' && i + 1 < s.size()) ? 2 : 1;
            if (i < s.size()) ++i;  // closing quote
        } else {
            while (i < s.size() && !is_space(s[i])) i += (s[i] == '\\' && i + 1 < s.size()) ? 2 : 1;
        }
        if (iequals(key, "password"))
            out.append(mask);
        else
            out.append(s.substr(value_start, i - value_start));
    }
    return out;
}

}  // namespace

std::string redact_conninfo(std::string_view conninfo) {
    for (std::string_view scheme : {"postgresql://", "postgres://"})
        if (conninfo.starts_with(scheme)) return redact_uri(conninfo, scheme.size());
    return redact_keyword_value(conninfo);
}

}  // namespace outbox
