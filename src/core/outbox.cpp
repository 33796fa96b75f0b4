#include "outbox_relay/outbox.hpp"

#include "outbox_relay/pg_type_oids.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <climits>
#include <cstdio>
#include <utility>

namespace outbox {
namespace {

// jsonb_send writes a format version byte before the text (jsonb.c
// jsonb_send: pq_sendint8(&buf, version) with version 1).
constexpr char jsonb_binary_version = 1;
// The Debezium spelling of the route-by column in a template.
constexpr std::string_view routed_by_value = "${routedByValue}";

// Kafka accepts only [a-zA-Z0-9._-] in topic names; checking the template's
// literal text up front turns a typo into a start-up error instead of a
// delivery failure on the first row.
bool legal_topic_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

bool is_set(const pgoutput::tuple_column& c) noexcept {
    return c.kind == pgoutput::column_kind::text || c.kind == pgoutput::column_kind::binary;
}

// The error path of required_text, kept out of line so the per-row path
// inlines to a compare and a copy of the view.
[[gnu::noinline, gnu::cold]] error column_error(const pgoutput::tuple_column& c, const std::string& name) {
    const errc e = c.kind == pgoutput::column_kind::null              ? errc::null_column
                   : c.kind == pgoutput::column_kind::unchanged_toast ? errc::unchanged_toast_column
                                                                      : errc::bad_value;
    return error(e, name);
}

[[gnu::noinline, gnu::cold]] error value_error(const std::string& column, std::string why) {
    error e(errc::bad_value, column);
    e.message = std::move(why);
    return e;
}

// Reads a column that must carry a value ('t' or 'b'); the error names it.
inline result<std::string_view> required_text(const pgoutput::tuple_column& c, const std::string& name) {
    if (is_set(c)) [[likely]]
        return c.value;
    return column_error(c, name);
}

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// byteaout in hex format (the default bytea_output): "\x" then two hex
// digits per byte.
bool decode_bytea_hex(std::string_view text, std::string& out) {
    if (text.size() < 2 || text[0] != '\\' || text[1] != 'x' || text.size() % 2 != 0) return false;
    out.clear();
    out.reserve((text.size() - 2) / 2);
    for (std::size_t i = 2; i < text.size(); i += 2) {
        const int hi = hex_digit(text[i]), lo = hex_digit(text[i + 1]);
        if (hi < 0 || lo < 0) return false;
        out.push_back(static_cast<char>(hi * 16 + lo));
    }
    return true;
}

void append_json_string(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    out.push_back('"');
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out.append("\\\""); break;
            case '\\': out.append("\\\\"); break;
            case '\n': out.append("\\n"); break;
            case '\r': out.append("\\r"); break;
            case '\t': out.append("\\t"); break;
            case '\b': out.append("\\b"); break;
            case '\f': out.append("\\f"); break;
            default:
                if (c < 0x20) {
                    out.append("\\u00");
                    out.push_back(hex[c >> 4]);
                    out.push_back(hex[c & 15]);
                } else {
                    out.push_back(ch);
                }
        }
    }
    out.push_back('"');
}

void append_base64(std::string& out, std::string_view in) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::size_t i = 0;
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(in[k]); };
    for (; i + 3 <= in.size(); i += 3) {
        const unsigned v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
        out.push_back(alphabet[(v >> 18) & 63]);
        out.push_back(alphabet[(v >> 12) & 63]);
        out.push_back(alphabet[(v >> 6) & 63]);
        out.push_back(alphabet[v & 63]);
    }
    if (i + 1 == in.size()) {
        const unsigned v = byte(i) << 16;
        out.push_back(alphabet[(v >> 18) & 63]);
        out.push_back(alphabet[(v >> 12) & 63]);
        out.append("==");
    } else if (i + 2 == in.size()) {
        const unsigned v = (byte(i) << 16) | (byte(i + 1) << 8);
        out.push_back(alphabet[(v >> 18) & 63]);
        out.push_back(alphabet[(v >> 12) & 63]);
        out.push_back(alphabet[(v >> 6) & 63]);
        out.push_back('=');
    }
}

bool is_json_number(std::string_view s) noexcept {
    // JSON: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? ; Postgres may
    // print NaN / Infinity, which JSON has no number for.
    std::size_t i = 0;
    if (i < s.size() && s[i] == '-') ++i;
    if (i >= s.size()) return false;
    if (s[i] == '0') {
        ++i;
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    } else {
        return false;
    }
    if (i < s.size() && s[i] == '.') {
        ++i;
        const std::size_t d = i;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
        if (i == d) return false;
    }
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        ++i;
        if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
        const std::size_t d = i;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
        if (i == d) return false;
    }
    return i == s.size();
}

// One column's value as a JSON value, by its type: JSON types embedded,
// numbers and booleans bare, bytea as base64 (Kafka Connect's JsonConverter
// writes bytes so), everything else as a string of its text.
void append_json_value(std::string& out, const pgoutput::tuple_column& c, std::uint32_t type_oid) {
    if (!is_set(c)) {
        out.append("null");
        return;
    }
    switch (type_oid) {
        case pg_oid::json:
        case pg_oid::jsonb: {
            std::string_view v = c.value;
            if (c.kind == pgoutput::column_kind::binary && type_oid == pg_oid::jsonb && !v.empty() &&
                v.front() == jsonb_binary_version)
                v.remove_prefix(1);
            out.append(v);
            return;
        }
        case pg_oid::int2:
        case pg_oid::int4:
        case pg_oid::int8:
        case pg_oid::oid:
        case pg_oid::float4:
        case pg_oid::float8:
        case pg_oid::numeric:
            if (is_json_number(c.value)) {
                out.append(c.value);
                return;
            }
            break;
        case pg_oid::bool_:
            if (c.value == "t" || c.value == "true") {
                out.append("true");
                return;
            }
            if (c.value == "f" || c.value == "false") {
                out.append("false");
                return;
            }
            break;
        case pg_oid::bytea: {
            std::string raw;
            if (c.kind == pgoutput::column_kind::text && decode_bytea_hex(c.value, raw)) {
                out.push_back('"');
                append_base64(out, raw);
                out.push_back('"');
                return;
            }
            break;
        }
        default: break;
    }
    append_json_string(out, c.value);
}

// Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (H.
// Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

// y-m-d of a day count since 1970-01-01 (civil_from_days).
void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) noexcept {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = static_cast<std::int64_t>(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
}

bool digits(std::string_view s, std::size_t at, std::size_t n, unsigned& out) noexcept {
    if (at + n > s.size()) return false;
    unsigned v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + static_cast<unsigned>(s[i] - '0');
    }
    out = v;
    return true;
}

// ISO 8601 as Postgres prints it with DateStyle ISO ("2026-12-01
// 12:34:56.123456+01", timestamptz; no offset for timestamp, read as UTC
// like Debezium does), and the RFC 3339 form ("2026-12-01T12:34:56Z"), to
// microseconds since the Unix epoch. A date alone is its midnight UTC.
bool parse_iso_time(std::string_view s, std::int64_t& us) noexcept {
    unsigned y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
    if (!digits(s, 0, 4, y) || s.size() < 10 || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
        !digits(s, 8, 2, d))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31) return false;
    std::size_t i = 10;
    std::int64_t frac_us = 0;
    if (i < s.size()) {
        if (s[i] != ' ' && s[i] != 'T') return false;
        if (!digits(s, i + 1, 2, h) || i + 3 >= s.size() || s[i + 3] != ':' || !digits(s, i + 4, 2, mi) ||
            i + 6 >= s.size() || s[i + 6] != ':' || !digits(s, i + 7, 2, se))
            return false;
        if (h > 24 || mi > 59 || se > 60) return false;
        i += 9;
        if (i < s.size() && s[i] == '.') {
            ++i;
            std::int64_t scale = 100000;
            const std::size_t start = i;
            while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
                frac_us += (s[i] - '0') * scale;
                scale /= 10;
                ++i;
            }
            if (i == start) return false;
        }
    }
    std::int64_t offset_s = 0;
    if (i < s.size()) {
        if (s[i] == 'Z' && i + 1 == s.size()) {
            ++i;
        } else if (s[i] == '+' || s[i] == '-') {
            const int sign = s[i] == '-' ? -1 : 1;
            unsigned oh = 0, om = 0, os = 0;
            if (!digits(s, i + 1, 2, oh)) return false;
            i += 3;
            if (i < s.size() && s[i] == ':') {
                if (!digits(s, i + 1, 2, om)) return false;
                i += 3;
                if (i < s.size() && s[i] == ':') {
                    if (!digits(s, i + 1, 2, os)) return false;
                    i += 3;
                }
            } else if (i + 1 < s.size() && digits(s, i, 2, om)) {
                i += 2;  // +0100
            }
            offset_s = sign * static_cast<std::int64_t>(oh * 3600 + om * 60 + os);
        }
    }
    if (i != s.size()) return false;  // " BC", "infinity", anything else
    const std::int64_t days = days_from_civil(y, mo, d);
    us = ((days * 86400 + h * 3600 + mi * 60 + se) - offset_s) * 1'000'000 + frac_us;
    return true;
}

bool parse_int64(std::string_view s, std::int64_t& out) noexcept {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size() && !s.empty();
}

// The record timestamp from a column: a time type, or an integer of epoch
// milliseconds; text columns may hold either.
result<std::int64_t> timestamp_ms_of(const pgoutput::tuple_column& c, std::uint32_t type_oid, const std::string& name) {
    std::int64_t us = 0, ms = 0;
    const std::string_view v = c.value;
    const bool integer_type = type_oid == pg_oid::int2 || type_oid == pg_oid::int4 || type_oid == pg_oid::int8 ||
                              type_oid == pg_oid::numeric;
    const bool time_type = type_oid == pg_oid::timestamp || type_oid == pg_oid::timestamptz || type_oid == pg_oid::date;
    if (c.kind == pgoutput::column_kind::binary && (time_type || integer_type))
        return value_error(name, "binary time values are not read: stream in text mode");
    if (!integer_type && parse_iso_time(v, us)) {
        ms = us >= 0 ? us / 1000 : -((-us + 999) / 1000);
    } else if (!time_type && parse_int64(v, ms)) {
        // epoch milliseconds as stored
    } else {
        return value_error(name, "\"" + std::string(v.substr(0, 64)) +
                                     "\" is not a time (ISO 8601 with DateStyle ISO, or epoch milliseconds)");
    }
    if (ms <= 0) return value_error(name, "the time " + std::string(v.substr(0, 64)) + " is not after 1970-01-01");
    return ms;
}

// RFC 3339 in UTC with microseconds: "2026-12-01T12:34:56.123456Z".
void format_rfc3339(std::int64_t us, std::string& out) {
    std::int64_t secs = us >= 0 ? us / 1'000'000 : -((-us + 999'999) / 1'000'000);
    const std::int64_t frac = us - secs * 1'000'000;
    std::int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    const std::int64_t rem = secs - days * 86400;
    std::int64_t y = 0;
    unsigned m = 0, d = 0;
    civil_from_days(days, y, m, d);
    char buf[40];
    const int n = std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%06lldZ",
                                static_cast<long long>(y), m, d, static_cast<long long>(rem / 3600),
                                static_cast<long long>(rem / 60 % 60), static_cast<long long>(rem % 60),
                                static_cast<long long>(frac));
    out.assign(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
}

std::string_view content_type_of(std::uint32_t type_oid) noexcept {
    switch (type_oid) {
        case pg_oid::json:
        case pg_oid::jsonb: return "application/json";
        case pg_oid::bytea: return "application/octet-stream";
        default: return "text/plain; charset=utf-8";
    }
}

bool ce_reserved(std::string_view alias) noexcept { return alias.starts_with("ce_") || alias == "content-type"; }

}  // namespace

// ------------------------------------------------------------ placements

std::vector<placement> default_placements() { return {{"type", placement_kind::header, "type"}}; }

std::string_view envelope_name(envelope_kind e) noexcept {
    switch (e) {
        case envelope_kind::raw: return "raw";
        case envelope_kind::json: return "json";
        case envelope_kind::cloudevents: return "cloudevents";
    }
    return "raw";
}

result<std::vector<placement>> parse_placements(std::string_view text) {
    std::vector<placement> out;
    auto fail = [](std::string_view item, std::string why) {
        error e(errc::bad_placement, item);
        e.message = std::move(why);
        return e;
    };
    if (trim(text).empty()) return out;
    std::size_t start = 0;
    while (start <= text.size()) {
        const std::size_t comma = text.find(',', start);
        const std::string_view item = trim(text.substr(start, comma == std::string_view::npos ? std::string_view::npos
                                                                                             : comma - start));
        start = comma == std::string_view::npos ? text.size() + 1 : comma + 1;
        std::vector<std::string_view> parts;
        std::size_t p = 0;
        while (true) {
            const std::size_t colon = item.find(':', p);
            parts.push_back(trim(item.substr(p, colon == std::string_view::npos ? std::string_view::npos : colon - p)));
            if (colon == std::string_view::npos) break;
            p = colon + 1;
        }
        if (item.empty()) return fail(item, "empty item in the list");
        if (parts.size() < 2 || parts.size() > 3)
            return fail(item, "expected column:header[:alias], column:envelope[:alias] or column:partition");
        placement pl;
        pl.column = std::string(parts[0]);
        if (pl.column.empty()) return fail(item, "no column named");
        if (parts[1] == "header")
            pl.where = placement_kind::header;
        else if (parts[1] == "envelope")
            pl.where = placement_kind::envelope;
        else if (parts[1] == "partition")
            pl.where = placement_kind::partition;
        else
            return fail(item, "placement must be header, envelope or partition, got \"" + std::string(parts[1]) + "\"");
        pl.alias = parts.size() == 3 ? std::string(parts[2]) : pl.column;
        if (pl.alias.empty()) return fail(item, "empty alias");
        out.push_back(std::move(pl));
    }
    return out;
}

std::string placements_text(const std::vector<placement>& list) {
    std::string s;
    for (const placement& p : list) {
        if (!s.empty()) s += ',';
        s += p.column;
        s += p.where == placement_kind::header ? ":header" : p.where == placement_kind::envelope ? ":envelope" : ":partition";
        if (p.alias != p.column && p.where != placement_kind::partition) s += ":" + p.alias;
    }
    return s;
}

bool reserved_header_name(std::string_view name) noexcept { return name.starts_with("outbox-relay."); }

bool valid_traceparent(std::string_view v) noexcept {
    auto lower_hex = [](std::string_view s) {
        return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
    };
    auto all_zero = [](std::string_view s) { return std::all_of(s.begin(), s.end(), [](char c) { return c == '0'; }); };
    if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
    const std::string_view version = v.substr(0, 2), trace_id = v.substr(3, 32), parent_id = v.substr(36, 16),
                           flags = v.substr(53, 2);
    if (!lower_hex(version) || version == "ff" || !lower_hex(trace_id) || !lower_hex(parent_id) || !lower_hex(flags))
        return false;
    if (all_zero(trace_id) || all_zero(parent_id)) return false;
    if (version == "00") return v.size() == 55;
    return v.size() == 55 || v[55] == '-';
}

// ---------------------------------------------------------------- mapper

result<outbox_mapper> outbox_mapper::create(routing_config cfg) {
    outbox_mapper m;
    const std::string& t = cfg.topic_template;
    if (t.empty()) return error(errc::bad_topic_template, t);
    std::size_t i = 0;
    while (i < t.size()) {
        if (std::string_view(t).substr(i).starts_with(routed_by_value)) {
            m.segments_.push_back({true, cfg.route_by});
            i += routed_by_value.size();
        } else if (t[i] == '{') {
            const std::size_t close = t.find_first_of("{}", i + 1);
            // No closing brace, a nested '{', or "{}": literal braces are not
            // supported, so every one of these is a mistake in the template.
            if (close == std::string::npos || t[close] != '}' || close == i + 1)
                return error(errc::bad_topic_template, t);
            m.segments_.push_back({true, t.substr(i + 1, close - i - 1)});
            i = close + 1;
        } else {
            std::size_t end = i;
            while (end < t.size() && t[end] != '{' && t[end] != '}' &&
                   !std::string_view(t).substr(end).starts_with(routed_by_value))
                ++end;
            if (end < t.size() && t[end] == '}') return error(errc::bad_topic_template, t);
            for (std::size_t k = i; k < end; ++k)
                if (!legal_topic_char(t[k])) return error(errc::bad_topic_template, t);
            m.segments_.push_back({false, t.substr(i, end - i)});
            i = end;
        }
    }
    for (const segment& s : m.segments_) m.has_placeholder_ = m.has_placeholder_ || s.placeholder;
    // A template without placeholders is one fixed topic: check it whole now
    // (length, "." and "..") so a bad one fails at start-up.
    if (!m.has_placeholder_ && !valid_topic_name(t)) return error(errc::bad_topic_template, t);

    auto bad = [](const placement& p, std::string why) {
        error e(errc::bad_placement, placements_text({p}));
        e.message = std::move(why);
        return e;
    };
    int partitions = 0;
    std::vector<std::string_view> aliases;
    for (const placement& p : cfg.placements) {
        if (p.column.empty() || p.alias.empty()) return bad(p, "a placement needs a column and an alias");
        if (p.where == placement_kind::partition) {
            if (++partitions > 1) return bad(p, "only one column can choose the partition");
            continue;
        }
        if (p.where == placement_kind::envelope) {
            if (cfg.envelope != envelope_kind::json)
                return bad(p, "an envelope placement needs the json envelope (--envelope json); the " +
                                  std::string(envelope_name(cfg.envelope)) + " envelope sends the payload alone");
            if (p.alias == "payload") return bad(p, "\"payload\" is the envelope's payload field");
            if (std::find(aliases.begin(), aliases.end(), p.alias) != aliases.end())
                return bad(p, "two envelope placements named \"" + p.alias + "\"");
            aliases.push_back(p.alias);
            continue;
        }
        if (reserved_header_name(p.alias)) return bad(p, "headers named outbox-relay.* are the relay's own");
        if (cfg.envelope == envelope_kind::cloudevents && ce_reserved(p.alias))
            return bad(p, "ce_* and content-type headers are the CloudEvents attributes");
    }
    m.segment_index_.assign(m.segments_.size(), -1);
    m.placement_index_.assign(cfg.placements.size(), -1);
    m.cfg_ = std::move(cfg);
    m.set_label(m.cfg_.schema + "." + m.cfg_.table);
    return m;
}

void outbox_mapper::set_database(std::string_view database) {
    database_ = database;
    set_label(label_);
}

void outbox_mapper::set_label(std::string label) {
    label_ = std::move(label);
    ce_source_ = !cfg_.ce_source.empty() ? cfg_.ce_source
                 : database_.empty()     ? "/" + label_
                                         : "/" + database_ + "/" + label_;
}

bool outbox_mapper::is_outbox(const cached_relation& rel) const noexcept {
    if (cfg_.relid != 0 && rel.relid == cfg_.relid) return true;
    return rel.relname == cfg_.table && rel.nspname == cfg_.schema;
}

result<void> outbox_mapper::check_relation(const cached_relation& rel) const {
    const outbox_columns& c = cfg_.columns;
    for (const std::string* name : {&c.id, &c.key, &c.payload})
        if (rel.column_index(*name) < 0) return error(errc::missing_column, *name);
    if (!c.timestamp.empty() && rel.column_index(c.timestamp) < 0) return error(errc::missing_column, c.timestamp);
    if (cfg_.envelope == envelope_kind::cloudevents && rel.column_index(c.type) < 0)
        return error(errc::missing_column, c.type);
    for (const segment& s : segments_)
        if (s.placeholder && rel.column_index(s.text) < 0) return error(errc::missing_column, s.text);
    if (cfg_.additional_missing == missing_policy::error)
        for (const placement& p : cfg_.placements)
            if (rel.column_index(p.column) < 0) return error(errc::missing_column, p.column);
    return {};
}

void outbox_mapper::resolve(const cached_relation& rel) const {
    const outbox_columns& c = cfg_.columns;
    idx_id_ = rel.column_index(c.id);
    idx_key_ = rel.column_index(c.key);
    idx_type_ = rel.column_index(c.type);
    idx_payload_ = rel.column_index(c.payload);
    idx_timestamp_ = c.timestamp.empty() ? -1 : rel.column_index(c.timestamp);
    idx_traceparent_ = c.traceparent.empty() ? -1 : rel.column_index(c.traceparent);
    idx_tracestate_ = c.tracestate.empty() ? -1 : rel.column_index(c.tracestate);
    for (std::size_t i = 0; i < segments_.size(); ++i)
        segment_index_[i] = segments_[i].placeholder ? rel.column_index(segments_[i].text) : -1;
    for (std::size_t i = 0; i < cfg_.placements.size(); ++i)
        placement_index_[i] = rel.column_index(cfg_.placements[i].column);
    resolved_generation_ = rel.generation;
    resolved_relid_ = rel.relid;
}

result<record> outbox_mapper::map(const cached_relation& rel, const pgoutput::tuple_data& row, const row_context& ctx,
                                  record_scratch& scratch) const {
    // Resolve column indexes once per relation generation so the per-row path
    // is index arithmetic only. Generation 0 (a relation not built by a
    // relation_cache, e.g. an outbox message) is resolved every time.
    if (rel.generation == 0 || rel.generation != resolved_generation_ || rel.relid != resolved_relid_) {
        auto r = check_relation(rel);
        if (!r) return r.error();
        resolve(rel);
    }
    // The indexes are only meaningful for a tuple laid out by this relation
    // (relation_cache::check verifies the same; this keeps map() safe alone).
    if (row.columns.size() != rel.columns.size()) return errc::column_count_mismatch;
    const auto& cols = row.columns;
    const outbox_columns& names = cfg_.columns;
    auto type_of = [&](int i) { return rel.columns[static_cast<std::size_t>(i)].type_oid; };
    record rec;
    scratch.headers.clear();
    scratch.trace_dropped = false;

    auto id = required_text(cols[idx_id_], names.id);
    if (!id) return id.error();
    scratch.headers.push_back({header_id, *id});

    // Key: a NULL key column becomes a null Kafka key (the partitioner then
    // spreads those records; the caller decides whether that is acceptable).
    const pgoutput::tuple_column& key = cols[idx_key_];
    if (key.kind == pgoutput::column_kind::null) {
        rec.key_null = true;
    } else {
        auto k = required_text(key, names.key);
        if (!k) return k.error();
        rec.key = *k;
    }

    // Value: the payload as the server sent it. In text mode that is the
    // type's output (jsonb normalised by Postgres, json/text verbatim), but
    // bytea prints as \x hex, which is decoded: an Avro or protobuf payload
    // must reach Kafka as its bytes. In binary mode ('b') jsonb_send
    // prefixes a version byte 0x01 that is not part of the JSON: strip it.
    const pgoutput::tuple_column& payload = cols[idx_payload_];
    const std::uint32_t payload_type = type_of(idx_payload_);
    std::string_view value;
    bool value_null = false;
    if (payload.kind == pgoutput::column_kind::null) {
        value_null = true;
    } else {
        auto v = required_text(payload, names.payload);
        if (!v) return v.error();
        value = *v;
        if (payload.kind == pgoutput::column_kind::binary && payload_type == pg_oid::jsonb) {
            if (value.empty() || value.front() != jsonb_binary_version)
                return value_error(names.payload, "binary jsonb without format version 1");
            value.remove_prefix(1);
        } else if (payload.kind == pgoutput::column_kind::text && payload_type == pg_oid::bytea) {
            if (!decode_bytea_hex(value, scratch.bytes))
                return value_error(names.payload, "bytea not in hex format (set bytea_output = 'hex')");
            value = scratch.bytes;
        }
    }
    // Debezium's route.tombstone.on.empty.payload: NULL or blank -> tombstone.
    const bool tombstone = cfg_.tombstone_on_empty_payload && (value_null || trim(value).empty());

    // Topic from the template. A NULL or unchanged-TOAST placeholder column
    // has no text to route by; inventing one would misroute silently.
    std::size_t len = 0;
    for (std::size_t i = 0; i < segments_.size(); ++i) {
        if (!segments_[i].placeholder) {
            len += segments_[i].text.size();
            continue;
        }
        auto v = required_text(cols[segment_index_[i]], segments_[i].text);
        if (!v) return v.error();
        len += v->size();
    }
    std::string& topic = scratch.topic;
    topic.clear();
    topic.reserve(len);
    for (std::size_t i = 0; i < segments_.size(); ++i) {
        if (segments_[i].placeholder)
            topic.append(cols[segment_index_[i]].value);
        else
            topic.append(segments_[i].text);
    }
    // A fixed template was checked at create(); a placeholder's value can
    // still make a name Kafka refuses ("bad topic/x"): say so here, naming
    // the template, rather than let the broker reject it later.
    if (has_placeholder_ && !valid_topic_name(topic)) return error(errc::invalid_topic, cfg_.topic_template);

    // Timestamp: the column when set and not NULL (Debezium falls back the
    // same way), else the commit time. Never the relay's clock.
    rec.timestamp_ms = ctx.commit_time_us / 1000;
    if (idx_timestamp_ >= 0 && is_set(cols[idx_timestamp_])) {
        auto ts = timestamp_ms_of(cols[idx_timestamp_], type_of(idx_timestamp_), names.timestamp);
        if (!ts) return ts.error();
        rec.timestamp_ms = *ts;
    } else if (idx_timestamp_ >= 0 && cols[idx_timestamp_].kind == pgoutput::column_kind::unchanged_toast) {
        return column_error(cols[idx_timestamp_], names.timestamp);
    }

    // Placements: headers in the configured order; the partition.
    for (std::size_t i = 0; i < cfg_.placements.size(); ++i) {
        const placement& p = cfg_.placements[i];
        const int ci = placement_index_[i];
        if (ci < 0 || p.where == placement_kind::envelope) continue;  // absent (missing = ignore), or below
        const pgoutput::tuple_column& c = cols[static_cast<std::size_t>(ci)];
        if (c.kind == pgoutput::column_kind::unchanged_toast) return column_error(c, p.column);
        if (p.where == placement_kind::header) {
            // A NULL column is a header with a null value, as Debezium adds it.
            scratch.headers.push_back({p.alias, c.value, !is_set(c)});
            continue;
        }
        if (!is_set(c)) continue;  // NULL partition: the partitioner decides
        std::int64_t part = -1;
        if (!parse_int64(c.value, part) || part < 0 || part > INT32_MAX)
            return value_error(p.column, "partition \"" + std::string(c.value.substr(0, 32)) +
                                             "\" is not an integer from 0 to 2147483647");
        rec.partition = static_cast<std::int32_t>(part);
    }

    // W3C trace context from the columns, then the extra headers (a
    // message's). A malformed traceparent is left out, and its tracestate
    // with it: passing it on would break the consumer's trace.
    auto trace = [&](std::string_view parent, bool parent_set, std::string_view state, bool state_set) {
        if (!parent_set) return;
        if (!valid_traceparent(parent)) {
            scratch.trace_dropped = true;
            return;
        }
        scratch.headers.push_back({header_traceparent, parent});
        if (state_set && !state.empty()) scratch.headers.push_back({header_tracestate, state});
    };
    if (idx_traceparent_ >= 0) {
        const auto& tp = cols[idx_traceparent_];
        const bool has_state = idx_tracestate_ >= 0 && is_set(cols[idx_tracestate_]);
        trace(tp.value, is_set(tp), has_state ? cols[idx_tracestate_].value : std::string_view(), has_state);
    }
    if (!ctx.extra_headers.empty()) {
        std::string_view parent, state;
        bool parent_set = false, state_set = false;
        for (const header& h : ctx.extra_headers) {
            if (h.name == header_traceparent) {
                parent = h.value;
                parent_set = !h.value_null;
            } else if (h.name == header_tracestate) {
                state = h.value;
                state_set = !h.value_null;
            } else {
                scratch.headers.push_back(h);
            }
        }
        trace(parent, parent_set, state, state_set);
    }

    // The value, per envelope.
    switch (cfg_.envelope) {
        case envelope_kind::raw:
            rec.value = value;
            rec.value_null = value_null;
            break;
        case envelope_kind::json: {
            std::string& out = scratch.value;
            out.clear();
            out.append("{\"payload\":");
            if (value_null) {
                out.append("null");
            } else if (payload_type == pg_oid::json || payload_type == pg_oid::jsonb) {
                out.append(value);
            } else if (payload_type == pg_oid::bytea) {
                out.push_back('"');
                append_base64(out, value);
                out.push_back('"');
            } else {
                append_json_value(out, payload, payload_type);
            }
            for (std::size_t i = 0; i < cfg_.placements.size(); ++i) {
                const placement& p = cfg_.placements[i];
                const int ci = placement_index_[i];
                if (ci < 0 || p.where != placement_kind::envelope) continue;
                out.push_back(',');
                append_json_string(out, p.alias);
                out.push_back(':');
                append_json_value(out, cols[static_cast<std::size_t>(ci)], type_of(ci));
            }
            out.push_back('}');
            rec.value = out;
            break;
        }
        case envelope_kind::cloudevents: {
            // CloudEvents Kafka protocol binding 1.0, binary content mode:
            // attributes as ce_<name> headers, datacontenttype as
            // content-type, the payload as the value.
            auto type = required_text(cols[idx_type_], names.type);
            if (!type) return type.error();
            format_rfc3339(ctx.commit_time_us, scratch.ce_time);
            scratch.headers.push_back({"ce_specversion", "1.0"});
            scratch.headers.push_back({"ce_id", *id});
            scratch.headers.push_back({"ce_source", ce_source_});
            scratch.headers.push_back({"ce_type", *type});
            scratch.headers.push_back({"ce_time", scratch.ce_time});
            if (!rec.key_null) scratch.headers.push_back({"ce_subject", rec.key});
            if (!value_null && !tombstone)
                scratch.headers.push_back(
                    {"content-type", cfg_.ce_content_type.empty() ? content_type_of(payload_type)
                                                                  : std::string_view(cfg_.ce_content_type)});
            rec.value = value;
            rec.value_null = value_null;
            break;
        }
    }
    if (tombstone) {
        rec.value = {};
        rec.value_null = true;
    }
    rec.topic = topic;
    rec.headers = std::span<const header>(scratch.headers.data(), scratch.headers.size());
    return rec;
}

std::pair<std::string, std::string> outbox_mapper::topic_affixes() const {
    std::pair<std::string, std::string> out;
    if (segments_.empty()) return out;
    if (!segments_.front().placeholder) out.first = segments_.front().text;
    if (!has_placeholder_) return out;
    if (!segments_.back().placeholder) out.second = segments_.back().text;
    return out;
}

record outbox_mapper::salvage(const cached_relation& rel, const pgoutput::tuple_data& row, const row_context& ctx,
                              record_scratch& scratch) const {
    record rec;
    scratch.headers.clear();
    scratch.topic.clear();
    auto column = [&](const std::string& name) -> const pgoutput::tuple_column* {
        const int i = rel.column_index(name);
        if (i < 0 || static_cast<std::size_t>(i) >= row.columns.size()) return nullptr;
        const auto& c = row.columns[static_cast<std::size_t>(i)];
        return is_set(c) ? &c : nullptr;
    };
    const outbox_columns& names = cfg_.columns;
    if (const auto* c = column(names.id)) scratch.headers.push_back({header_id, c->value});
    for (const placement& p : cfg_.placements)
        if (p.where == placement_kind::header)
            if (const auto* c = column(p.column)) scratch.headers.push_back({p.alias, c->value});
    for (const header& h : ctx.extra_headers)
        if (!reserved_header_name(h.name)) scratch.headers.push_back(h);
    if (const auto* c = column(names.key))
        rec.key = c->value;
    else
        rec.key_null = true;
    if (const auto* c = column(names.payload)) {
        rec.value = c->value;
        const std::uint32_t type = rel.columns[static_cast<std::size_t>(rel.column_index(names.payload))].type_oid;
        if (c->kind == pgoutput::column_kind::binary && type == pg_oid::jsonb && !rec.value.empty() &&
            rec.value.front() == jsonb_binary_version)
            rec.value.remove_prefix(1);
        else if (c->kind == pgoutput::column_kind::text && type == pg_oid::bytea && decode_bytea_hex(c->value, scratch.bytes))
            rec.value = scratch.bytes;
    } else {
        rec.value_null = true;
    }
    rec.timestamp_ms = ctx.commit_time_us / 1000;
    rec.headers = std::span<const header>(scratch.headers.data(), scratch.headers.size());
    return rec;
}

}  // namespace outbox
