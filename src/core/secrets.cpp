#include "outbox_relay/secrets.hpp"

#include <algorithm>
#include <array>

namespace outbox {
namespace {

constexpr std::string_view mask = redaction_mask;

// libpq's secret keywords (https://www.postgresql.org/docs/current/libpq-connect.html):
// the password, and the passphrase of the client key (sslpassword).
constexpr std::array<std::string_view, 2> conninfo_secrets = {"password", "sslpassword"};

// librdkafka 2.0.2 CONFIGURATION.md, every property whose value is a
// credential or key material. sasl.oauthbearer.config may carry a secret in
// its key=value text; ssl_key is the C API's name of ssl.key.pem.
constexpr std::array<std::string_view, 7> kafka_secrets = {
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl.key.pem",
    "ssl_key",
};

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

bool icontains(std::string_view s, std::string_view needle) {
    if (needle.size() > s.size()) return false;
    for (std::size_t i = 0; i + needle.size() <= s.size(); ++i)
        if (iequals(s.substr(i, needle.size()), needle)) return true;
    return false;
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
        if (eq != std::string_view::npos && is_secret_conninfo_keyword(param.substr(0, eq))) {
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
        if (is_secret_conninfo_keyword(key))
            out.append(mask);
        else
            out.append(s.substr(value_start, i - value_start));
    }
    return out;
}

}  // namespace

std::span<const std::string_view> secret_conninfo_keywords() noexcept { return conninfo_secrets; }

bool is_secret_conninfo_keyword(std::string_view keyword) noexcept {
    return std::any_of(conninfo_secrets.begin(), conninfo_secrets.end(),
                       [&](std::string_view k) { return iequals(k, keyword); });
}

std::span<const std::string_view> secret_kafka_properties() noexcept { return kafka_secrets; }

bool is_secret_kafka_property(std::string_view name) noexcept {
    if (std::any_of(kafka_secrets.begin(), kafka_secrets.end(), [&](std::string_view k) { return iequals(k, name); }))
        return true;
    return icontains(name, "password") || icontains(name, "secret");
}

std::string shown_kafka_value(std::string_view name, std::string_view value) {
    if (value.empty() || !is_secret_kafka_property(name)) return std::string(value);
    return std::string(mask);
}

std::string redact_conninfo(std::string_view conninfo) {
    for (std::string_view scheme : {"postgresql://", "postgres://"})
        if (conninfo.starts_with(scheme)) return redact_uri(conninfo, scheme.size());
    return redact_keyword_value(conninfo);
}

std::optional<std::string_view> file_reference(std::string_view value) noexcept {
    constexpr std::string_view prefix = "@file:";
    if (!value.starts_with(prefix) || value.size() == prefix.size()) return std::nullopt;
    return value.substr(prefix.size());
}

std::string secret_from_file_content(std::string_view content) {
    if (content.ends_with("\r\n"))
        content.remove_suffix(2);
    else if (content.ends_with('\n'))
        content.remove_suffix(1);
    return std::string(content);
}

}  // namespace outbox
