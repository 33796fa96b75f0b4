#include "outbox_relay/io/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <chrono>
#include <memory>

namespace outbox::io::log {

namespace {

// 2026-01-02T03:04:05.123456Z (UTC, microseconds), as the key=value lines
// have always started.
std::string timestamp(spdlog::log_clock::time_point tp) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(tp.time_since_epoch()).count();
    const std::time_t secs = static_cast<std::time_t>(us / 1'000'000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long>(us % 1'000'000));
}

std::string_view level_name(spdlog::level::level_enum l) {
    switch (l) {
        case spdlog::level::trace: return "trace";
        case spdlog::level::debug: return "debug";
        case spdlog::level::info: return "info";
        case spdlog::level::warn: return "warning";
        case spdlog::level::err: return "error";
        case spdlog::level::critical: return "critical";
        default: return "off";
    }
}

// Both formats escape control characters in the message (log injection: row
// data and server messages reach values that a caller may not have quoted).
class line_formatter final : public spdlog::formatter {
public:
    explicit line_formatter(outbox::log_format f) : format_(f) {}

    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        const std::string_view text(msg.payload.data(), msg.payload.size());
        std::string line;
        if (format_ == outbox::log_format::json) {
            line = outbox::json_log_line(timestamp(msg.time), level_name(msg.level), text);
        } else {
            line = timestamp(msg.time);
            line += " level=";
            line += level_name(msg.level);
            line += ' ';
            line += outbox::escape_controls(text);
        }
        line += '\n';
        dest.append(line.data(), line.data() + line.size());
    }

    std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<line_formatter>(format_); }

private:
    outbox::log_format format_;
};

}  // namespace

void init(std::string_view level, outbox::log_format format) {
    spdlog::drop("outbox-relay");
    auto logger = spdlog::stderr_logger_mt("outbox-relay");
    logger->set_formatter(std::make_unique<line_formatter>(format));
    spdlog::set_default_logger(logger);
    auto lvl = spdlog::level::from_str(std::string(level));
    spdlog::set_level(lvl == spdlog::level::off ? spdlog::level::info : lvl);
    spdlog::flush_on(spdlog::level::info);
}

std::string quote(std::string_view v) { return outbox::log_quote(v); }

}  // namespace outbox::io::log
