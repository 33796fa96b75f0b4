#pragma once
// One line per event: `ts level=info mod=pg/stream event=connected key=value ...`.
// LSNs are formatted X/X by the caller (lsn::to_string); conninfo strings go
// through redact_conninfo first. Thread-safe (spdlog's mt logger), but relay
// code only logs from the loop thread.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <string_view>

namespace outbox::io::log {

// Sets up the stderr logger; `level` is debug|info|warn|error.
void init(std::string_view level);

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

// Quotes a value for key=value logs when it has spaces, quotes or '='.
std::string quote(std::string_view v);

}  // namespace outbox::io::log
