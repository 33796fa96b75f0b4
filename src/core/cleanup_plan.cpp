#include "outbox_relay/cleanup_plan.hpp"

#include <algorithm>
#include <charconv>

namespace outbox {
namespace {

constexpr std::string_view option_name = "cleanup-after";

error bad(std::string message) {
    error e(errc::bad_config, option_name);
    e.message = std::move(message);
    return e;
}

struct unit {
    char suffix;
    std::int64_t ms;
};
// Largest first: format_cleanup_after picks the first that divides.
constexpr unit units[] = {{'d', 86'400'000}, {'h', 3'600'000}, {'m', 60'000}, {'s', 1'000}};

}  // namespace

result<std::chrono::milliseconds> parse_cleanup_after(std::string_view text) {
    if (text.empty() || text == "off") return std::chrono::milliseconds{0};
    std::string shown(1, '"');  // (not "\"" + text: GCC 12 warns falsely, -Wrestrict)
    shown.append(text).push_back('"');
    const std::string expect = "must be a whole number with a unit s, m, h or d (e.g. 90s, 15m, 1h, 2d), or off";
    const char last = text.back();
    const unit* u = nullptr;
    for (const unit& x : units)
        if (x.suffix == last) u = &x;
    const std::string_view digits = text.substr(0, text.size() - 1);
    if (u == nullptr) {
        if (std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return bad(expect + ": a bare number has no unit, got " + shown);
        return bad(expect + ", got " + shown);
    }
    if (digits.empty() || digits.size() > 12 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return bad(expect + ", got " + shown);
    std::int64_t n = 0;
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc{} || p != digits.data() + digits.size()) return bad(expect + ", got " + shown);
    const std::chrono::milliseconds v{n * u->ms};  // n < 10^12, so no overflow
    if (v < cleanup_after_min || v > cleanup_after_max)
        return bad("must be from 1s to 30d (longer retention: partition the outbox and drop old partitions), got " +
                   shown);
    return v;
}

std::string format_cleanup_after(std::chrono::milliseconds retention) {
    if (retention.count() <= 0) return {};
    for (const unit& u : units)
        if (retention.count() % u.ms == 0) return std::to_string(retention.count() / u.ms) + u.suffix;
    // Not a whole number of seconds: cannot come from parse_cleanup_after;
    // round up so reading it back never shortens the retention.
    return std::to_string(retention.count() / 1000 + 1) + "s";
}

std::chrono::milliseconds cleanup_tick(std::chrono::milliseconds retention) noexcept {
    return std::clamp(retention / 4, std::chrono::milliseconds{1'000}, std::chrono::milliseconds{60'000});
}

bool mark_xid_age_ok(std::uint64_t mark_xmin, std::uint64_t next_xid) noexcept {
    constexpr std::uint64_t limit = (std::uint64_t{1} << 31) - (std::uint64_t{1} << 26);
    return mark_xmin <= next_xid && next_xid - mark_xmin < limit;
}

// ---------------------------------------------------------------------------

cleanup_plan::cleanup_plan(std::chrono::milliseconds retention)
    : retention_(retention),
      tick_(cleanup_tick(retention)),
      capacity_(static_cast<std::size_t>((retention.count() + tick_.count() - 1) / tick_.count()) + 8) {}

cleanup_plan::add_result cleanup_plan::add(const cleanup_mark& m) {
    add_result r = add_result::added;
    if (!marks_.empty()) {
        const cleanup_mark& b = marks_.back();
        if (m.at < b.at || m.xmin < b.xmin || m.taken < b.taken) {
            clear();
            r = add_result::reset;
        }
    } else if (completed_ && (m.at < completed_->at || m.xmin < completed_->xmin)) {
        clear();
        r = add_result::reset;
    }
    if (marks_.size() >= capacity_) return add_result::refused_full;
    marks_.push_back(m);
    return r;
}

std::optional<cleanup_mark> cleanup_plan::usable(lsn confirmed, cleanup_clock::time_point now) {
    const auto aged = now - retention_;
    std::size_t n = 0;  // marks qualifying, from the front
    while (n < marks_.size() && marks_[n].at <= confirmed && marks_[n].taken <= aged) ++n;
    if (n == 0) return std::nullopt;
    marks_.erase(marks_.begin(), marks_.begin() + static_cast<std::ptrdiff_t>(n - 1));
    return marks_.front();
}

std::optional<cleanup_mark> cleanup_plan::oldest() const {
    if (marks_.empty()) return std::nullopt;
    return marks_.front();
}

bool cleanup_plan::pass_needed(const cleanup_mark& m) const noexcept {
    // Same xmin, same rows: `at` only decides when a mark becomes usable.
    return !completed_ || m.xmin > completed_->xmin;
}

void cleanup_plan::pass_completed(const cleanup_mark& m) noexcept { completed_ = m; }

void cleanup_plan::clear() noexcept {
    marks_.clear();
    completed_.reset();
}

}  // namespace outbox
