#include "outbox_relay/io/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

namespace outbox::io::log {

void init(std::string_view level) {
    auto logger = spdlog::stderr_logger_mt("outbox-relay");
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ level=%l %v", spdlog::pattern_time_type::utc);
    spdlog::set_default_logger(logger);
    auto lvl = spdlog::level::from_str(std::string(level));
    spdlog::set_level(lvl == spdlog::level::off ? spdlog::level::info : lvl);
    spdlog::flush_on(spdlog::level::info);
}

std::string quote(std::string_view v) {
    bool plain = !v.empty();
    for (char c : v)
        if (c == ' ' || c == '"' || c == '=' || c == '\n' || c == '\t') plain = false;
    if (plain) return std::string(v);
    std::string out = "\"";
    for (char c : v) {
        if (c == '"' || c == '\\') out += '\\';
        if (c == '\n') { out += "\\n"; continue; }
        out += c;
    }
    out += '"';
    return out;
}

}  // namespace outbox::io::log
