#include "outbox_relay/log_text.hpp"

#include <nlohmann/json.hpp>

#include <vector>

namespace outbox {
namespace {

bool is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

void append_escaped_control(std::string& out, unsigned char c) {
    switch (c) {
        case '\n': out += "\\n"; return;
        case '\r': out += "\\r"; return;
        case '\t': out += "\\t"; return;
        default: {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        }
    }
}

// Undoes log_quote's escapes inside a quoted value.
void unescape_into(std::string& out, std::string_view s) {
    auto hexval = [](char h) -> int {
        if (h >= '0' && h <= '9') return h - '0';
        if (h >= 'a' && h <= 'f') return h - 'a' + 10;
        if (h >= 'A' && h <= 'F') return h - 'A' + 10;
        return -1;
    };
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\' || i + 1 >= s.size()) {
            out += s[i];
            continue;
        }
        const char n = s[++i];
        switch (n) {
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'x':
                if (i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
                    out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
                    i += 2;
                } else {
                    out += "\\x";
                }
                break;
            default: out += n;  // \" and \\ and anything else: the character itself
        }
    }
}

}  // namespace

std::string log_quote(std::string_view v) {
    bool plain = !v.empty();
    for (unsigned char c : v)
        if (c == ' ' || c == '"' || c == '=' || c == '\\' || is_control(c)) {
            plain = false;
            break;
        }
    if (plain) return std::string(v);
    std::string out;
    out.reserve(v.size() + 2);
    out += '"';
    for (unsigned char c : v) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (is_control(c)) {
            append_escaped_control(out, c);
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
    return out;
}

std::string escape_controls(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (unsigned char c : s) {
        if (is_control(c))
            append_escaped_control(out, c);
        else
            out += static_cast<char>(c);
    }
    return out;
}

std::string json_log_line(std::string_view ts, std::string_view level, std::string_view message) {
    nlohmann::ordered_json j;
    j["ts"] = std::string(ts);
    j["level"] = std::string(level);
    std::string loose;  // tokens that are not key=value
    std::size_t i = 0;
    const std::size_t n = message.size();
    while (i < n) {
        while (i < n && message[i] == ' ') ++i;
        if (i >= n) break;
        const std::size_t start = i;
        // A key: up to '=' or a space.
        while (i < n && message[i] != '=' && message[i] != ' ') ++i;
        const std::string_view key = message.substr(start, i - start);
        if (i < n && message[i] == '=' && !key.empty() && key.find('"') == std::string_view::npos) {
            ++i;  // '='
            std::string value;
            if (i < n && message[i] == '"') {
                ++i;
                const std::size_t vstart = i;
                while (i < n && message[i] != '"') i += (message[i] == '\\' && i + 1 < n) ? 2 : 1;
                unescape_into(value, message.substr(vstart, std::min(i, n) - vstart));
                if (i < n) ++i;  // closing quote
            } else {
                const std::size_t vstart = i;
                while (i < n && message[i] != ' ') ++i;
                value.assign(message.substr(vstart, i - vstart));
            }
            std::string name(key);
            if (name == "ts" || name == "level" || name == "msg") name += "_";
            if (j.contains(name)) {
                for (int k = 2;; ++k) {
                    std::string alt = name + "_" + std::to_string(k);
                    if (!j.contains(alt)) {
                        name = std::move(alt);
                        break;
                    }
                }
            }
            j[name] = std::move(value);
            continue;
        }
        // Not key=value: keep the token (up to the next space) as text.
        while (i < n && message[i] != ' ') ++i;
        if (!loose.empty()) loose += ' ';
        loose.append(message.substr(start, i - start));
    }
    if (!loose.empty()) j["msg"] = std::move(loose);
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace outbox
