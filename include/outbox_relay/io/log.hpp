#pragma once
// One line per event: `ts level=info mod=pg/stream event=connected key=value ...`,
// or with --log-format json one object per line with the same keys
// ({"ts":..,"level":..,"mod":..,"event":..,...}; outbox/log_text.hpp).
// LSNs are formatted X/X by the caller (lsn::to_string); conninfo strings go
// through redact_conninfo first; values that may hold anything go through
// quote(). Whatever a caller forgets, the formatter escapes every control
// character of the whole message, so one event is always one line.
// Thread-safe (spdlog's mt logger; librdkafka's log callback logs from its
// threads), but relay code only logs from the loop thread.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "outbox_relay/log_text.hpp"

#include <string_view>

namespace outbox::io::log {

// Sets up the stderr logger; `level` is debug|info|warn|error. Calling it
// again replaces the logger (main sets the level and format once the
// configuration is known).
void init(std::string_view level, outbox::log_format format = outbox::log_format::keyvalue);

template <class... Args>
void debug(std::string_view mod, fmt::format_string<Args...> f, Args&&... args) {
    if (spdlog::should_log(spdlog::level::debug))
        spdlog::debug("mod={} {}", mod, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void info(std::string_view mod, fmt::format_string<Args...> f, Args&&... args) {
    spdlog::info("mod={} {}", mod, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void warn(std::string_view mod, fmt::format_string<Args...> f, Args&&... args) {
    spdlog::warn("mod={} {}", mod, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void error(std::string_view mod, fmt::format_string<Args...> f, Args&&... args) {
    spdlog::error("mod={} {}", mod, fmt::format(f, std::forward<Args>(args)...));
}

// Quotes a value for key=value logs when it has spaces, quotes, '=', '\\'
// or control characters (outbox::log_quote).
std::string quote(std::string_view v);

}  // namespace outbox::io::log
