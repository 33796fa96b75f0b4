#include "outbox_relay/cleanup_plan.hpp"
#include "outbox_relay/config.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using outbox::cleanup_mark;
using outbox::cleanup_plan;
using outbox::lsn;

namespace {

const outbox::cleanup_clock::time_point t0{std::chrono::hours(1000)};

cleanup_mark mark(std::uint64_t xmin, std::uint64_t at, std::chrono::milliseconds after_t0) {
    return {xmin, lsn(at), t0 + after_t0};
}

}  // namespace

// ---- the option

TEST_CASE("cleanup_after_parses_units") {
    CHECK(outbox::parse_cleanup_after("90s").value() == 90s);
    CHECK(outbox::parse_cleanup_after("15m").value() == 15min);
    CHECK(outbox::parse_cleanup_after("1h").value() == 1h);
    CHECK(outbox::parse_cleanup_after("2d").value() == 48h);
    CHECK(outbox::parse_cleanup_after("1s").value() == 1s);
    CHECK(outbox::parse_cleanup_after("30d").value() == 720h);
}

TEST_CASE("cleanup_after_off_and_empty_mean_disabled") {
    CHECK(outbox::parse_cleanup_after("").value() == 0ms);
    CHECK(outbox::parse_cleanup_after("off").value() == 0ms);
    CHECK(outbox::format_cleanup_after(0ms).empty());
}

TEST_CASE("cleanup_after_bare_number_refused_naming_the_option") {
    auto r = outbox::parse_cleanup_after("3600");
    REQUIRE(r.has_error());
    CHECK(r.error() == outbox::errc::bad_config);
    CHECK(r.error().field == "cleanup-after");
    CHECK(r.error().message.find("no unit") != std::string::npos);
    CHECK(r.error().message.find("\"3600\"") != std::string::npos);
}

TEST_CASE("cleanup_after_malformed_refused") {
    for (const char* s : {"s", "1x", "1.5h", "-1h", "1 h", "h1", "1hh", "1000000000000s", "0s"}) {
        CAPTURE(s);
        auto r = outbox::parse_cleanup_after(s);
        REQUIRE(r.has_error());
        CHECK(r.error().field == "cleanup-after");
        CHECK_FALSE(r.error().message.empty());
    }
}

TEST_CASE("cleanup_after_out_of_range_refused") {
    CHECK(outbox::parse_cleanup_after("31d").has_error());
    CHECK(outbox::parse_cleanup_after("721h").has_error());
    CHECK(outbox::parse_cleanup_after("720h").has_value());
}

TEST_CASE("cleanup_after_formats_back_to_what_parses") {
    CHECK(outbox::format_cleanup_after(90s) == "90s");
    CHECK(outbox::format_cleanup_after(15min) == "15m");
    CHECK(outbox::format_cleanup_after(36h) == "36h");
    CHECK(outbox::format_cleanup_after(48h) == "2d");
    CHECK(outbox::format_cleanup_after(3s) == "3s");
    for (auto v : {1s, 59s, 61s, 3600s, 86400s * 30}) {
        auto back = outbox::parse_cleanup_after(outbox::format_cleanup_after(v));
        REQUIRE(back.has_value());
        CHECK(*back == v);
    }
}

TEST_CASE("cleanup_tick_is_a_quarter_of_retention_clamped") {
    CHECK(outbox::cleanup_tick(3s) == 1s);
    CHECK(outbox::cleanup_tick(8s) == 2s);
    CHECK(outbox::cleanup_tick(2min) == 30s);
    CHECK(outbox::cleanup_tick(4min) == 60s);
    CHECK(outbox::cleanup_tick(24h) == 60s);
}

TEST_CASE("mark_xid_age_ok_refuses_marks_near_wraparound") {
    CHECK(outbox::mark_xid_age_ok(1000, 1000));
    CHECK(outbox::mark_xid_age_ok(1000, 1000 + 2'000'000'000));
    CHECK_FALSE(outbox::mark_xid_age_ok(1000, 1000 + (std::uint64_t{1} << 31)));
    CHECK_FALSE(outbox::mark_xid_age_ok(1000, 1000 + (std::uint64_t{1} << 31) - (std::uint64_t{1} << 26)));
    CHECK_FALSE(outbox::mark_xid_age_ok(2000, 1000));  // a mark from the future: another server
}

TEST_CASE("mark_xid32_drops_the_epoch") {
    CHECK(mark((std::uint64_t{3} << 32) | 77, 0, 0ms).xid32() == 77u);
}

// ---- which mark is usable

TEST_CASE("mark_not_usable_before_confirmed_reaches_its_lsn") {
    cleanup_plan p(3s);
    p.add(mark(100, 5000, 0ms));
    const auto later = t0 + 10s;  // long past the retention
    CHECK_FALSE(p.usable(lsn(0), later));
    CHECK_FALSE(p.usable(lsn(4999), later));
    auto m = p.usable(lsn(5000), later);
    REQUIRE(m);
    CHECK(m->xmin == 100);
}

TEST_CASE("mark_not_usable_before_the_retention_passed") {
    cleanup_plan p(3s);
    p.add(mark(100, 5000, 0ms));
    const lsn confirmed(1'000'000);  // far past the mark
    CHECK_FALSE(p.usable(confirmed, t0));
    CHECK_FALSE(p.usable(confirmed, t0 + 2999ms));
    CHECK(p.usable(confirmed, t0 + 3000ms));
}

TEST_CASE("newest_usable_mark_wins_and_older_ones_are_dropped") {
    cleanup_plan p(3s);
    p.add(mark(100, 1000, 0ms));
    p.add(mark(110, 2000, 1s));
    p.add(mark(120, 3000, 2s));
    p.add(mark(130, 4000, 3s));
    // At t0+5s marks taken at 0, 1 and 2 s are old enough; confirmed covers all.
    auto m = p.usable(lsn(10'000), t0 + 5s);
    REQUIRE(m);
    CHECK(m->xmin == 120);
    CHECK(p.size() == 2);  // the usable one and the one still too young
    CHECK(p.oldest()->xmin == 120);
    // Asked again it stays the answer until a newer one qualifies.
    CHECK(p.usable(lsn(10'000), t0 + 5s)->xmin == 120);
    CHECK(p.usable(lsn(10'000), t0 + 6s)->xmin == 130);
    CHECK(p.size() == 1);
}

TEST_CASE("confirmed_decides_which_aged_mark_is_usable") {
    cleanup_plan p(3s);
    p.add(mark(100, 1000, 0ms));
    p.add(mark(110, 2000, 1s));
    p.add(mark(120, 3000, 2s));
    // All old enough, but confirmed is between the second and third mark.
    auto m = p.usable(lsn(2500), t0 + 60s);
    REQUIRE(m);
    CHECK(m->xmin == 110);
}

TEST_CASE("kafka_down_confirmed_frozen_no_newer_mark_ever_usable") {
    // Confirmed stops at 1500 (the relay's acks stop). Marks taken after that
    // have at > 1500 and must never become usable, however old they get.
    cleanup_plan p(3s);
    p.add(mark(100, 1000, 0ms));
    for (int i = 1; i <= 20; ++i) p.add(mark(100 + 10 * static_cast<std::uint64_t>(i), 1000 + 1000 * i, i * 1s));
    for (int s = 3; s < 120; ++s) {
        auto m = p.usable(lsn(1500), t0 + s * 1s);
        REQUIRE(m);
        CHECK(m->xmin == 100);
    }
}

TEST_CASE("scan_stops_at_first_unqualified_mark") {
    // Two marks share an LSN (nothing written between them); confirmed is
    // just below it: only the first mark qualifies, however old the rest.
    cleanup_plan p(3s);
    p.add(mark(100, 1000, 0ms));
    p.add(mark(110, 9000, 1s));
    p.add(mark(120, 9000, 2s));
    auto m = p.usable(lsn(8999), t0 + 60s);
    REQUIRE(m);
    CHECK(m->at <= lsn(8999));
    CHECK(m->xmin == 100);
}

TEST_CASE("no_mark_no_answer") {
    cleanup_plan p(3s);
    CHECK_FALSE(p.usable(lsn(1'000'000), t0 + 1h));
    CHECK_FALSE(p.oldest());
}

// ---- the queue bound

TEST_CASE("queue_capacity_is_retention_over_tick_plus_a_few") {
    CHECK(cleanup_plan(3s).capacity() == 3 + 8);
    CHECK(cleanup_plan(1h).capacity() == 60 + 8);
    CHECK(cleanup_plan(10s).capacity() == 4 + 8);  // tick 2.5 s
    CHECK(cleanup_plan(std::chrono::hours(24 * 30)).capacity() == 43'200 + 8);
}

TEST_CASE("full_queue_refuses_the_newest_and_keeps_the_oldest") {
    cleanup_plan p(3s);
    const std::size_t cap = p.capacity();
    for (std::size_t i = 0; i < cap; ++i)
        CHECK(p.add(mark(100 + i, 1000 + i * 100, std::chrono::seconds(i))) == cleanup_plan::add_result::added);
    CHECK(p.size() == cap);
    CHECK(p.add(mark(999, 999'999, std::chrono::seconds(cap))) == cleanup_plan::add_result::refused_full);
    CHECK(p.size() == cap);
    CHECK(p.oldest()->xmin == 100);  // the oldest is still there: usable first once confirmed moves
    // Confirmed moves a little: the oldest marks become usable at once.
    auto m = p.usable(lsn(1000 + 100), t0 + std::chrono::seconds(cap + 10));
    REQUIRE(m);
    CHECK(m->xmin == 101);
    CHECK(p.size() == cap - 1);
    // Room again: a new mark is taken.
    CHECK(p.add(mark(2000, 2'000'000, std::chrono::seconds(cap + 11))) == cleanup_plan::add_result::added);
}

TEST_CASE("queue_stays_bounded_while_confirmed_is_frozen_for_long") {
    cleanup_plan p(3s);
    for (int i = 0; i < 10'000; ++i) {
        p.add(mark(100 + static_cast<std::uint64_t>(i), 1000 + 100 * static_cast<std::uint64_t>(i), i * 1s));
        p.usable(lsn(1000), t0 + i * 1s);
        CHECK(p.size() <= p.capacity());
    }
}

TEST_CASE("steady_state_queue_holds_about_retention_over_tick") {
    cleanup_plan p(1h);  // tick 60 s
    std::size_t max_size = 0;
    for (int i = 0; i < 500; ++i) {
        const auto now = t0 + i * 60s;
        p.add(mark(100 + static_cast<std::uint64_t>(i), 1000 + 100 * static_cast<std::uint64_t>(i), i * 60s));
        p.usable(lsn(1000 + 100 * static_cast<std::uint64_t>(i)), now);  // confirmed keeps up
        max_size = std::max(max_size, p.size());
    }
    CHECK(max_size == 61);
}

TEST_CASE("mark_going_back_resets_the_queue") {
    cleanup_plan p(3s);
    p.add(mark(100, 5000, 0ms));
    p.add(mark(110, 6000, 1s));
    CHECK(p.add(mark(90, 7000, 2s)) == cleanup_plan::add_result::reset);  // xmin went back
    CHECK(p.size() == 1);
    CHECK(p.add(mark(95, 100, 3s)) == cleanup_plan::add_result::reset);  // LSN went back
    CHECK(p.size() == 1);
    CHECK(p.oldest()->xmin == 95);
}

// ---- passes

TEST_CASE("completed_pass_is_not_repeated_for_the_same_xmin") {
    cleanup_plan p(3s);
    const auto a = mark(100, 1000, 0ms);
    CHECK(p.pass_needed(a));
    p.pass_completed(a);
    CHECK_FALSE(p.pass_needed(a));
    CHECK_FALSE(p.pass_needed(mark(100, 2000, 1s)));  // idle database: same xmin, later LSN
    CHECK(p.pass_needed(mark(101, 2000, 1s)));
}

TEST_CASE("reset_forgets_the_completed_pass") {
    cleanup_plan p(3s);
    p.pass_completed(mark(100, 1000, 0ms));
    CHECK(p.add(mark(50, 500, 1s)) == cleanup_plan::add_result::reset);
    CHECK(p.pass_needed(mark(50, 500, 1s)));
}

// ---- the options in the option table

namespace {
using flags_t = std::vector<std::pair<std::string, std::string>>;
outbox::result<outbox::relay_config> build(flags_t extra, std::map<std::string, std::string> env = {},
                                           std::string_view json = {}) {
    flags_t f{{"postgres", "host=db dbname=app"}, {"brokers", "k1:9092"}};
    f.insert(f.end(), extra.begin(), extra.end());
    return outbox::build_config(json, "relay.json", env, f);
}
}  // namespace

TEST_CASE("cleanup_is_off_by_default") {
    auto c = build({});
    REQUIRE(c.has_value());
    CHECK(c->cleanup_after == 0ms);
    CHECK(c->cleanup_batch == 10'000);
}

TEST_CASE("cleanup_options_from_flag_env_and_file") {
    CHECK(build({{"cleanup-after", "15m"}, {"cleanup-batch", "500"}})->cleanup_after == 15min);
    CHECK(build({{"cleanup-batch", "500"}})->cleanup_batch == 500);
    CHECK(build({}, {{"OUTBOX_RELAY_CLEANUP_AFTER", "2d"}})->cleanup_after == 48h);
    CHECK(build({}, {}, R"({"cleanup-after": "90s", "cleanup-batch": 20})")->cleanup_after == 90s);
    CHECK(build({{"cleanup-after", "off"}})->cleanup_after == 0ms);
}

TEST_CASE("bad_cleanup_after_names_option_and_source") {
    auto r = build({{"cleanup-after", "10"}});
    REQUIRE(r.has_error());
    CHECK(r.error().field == "cleanup-after");
    CHECK(r.error().source == "--cleanup-after");
    CHECK(r.error().message.find("unit") != std::string::npos);
    auto e = build({}, {{"OUTBOX_RELAY_CLEANUP_AFTER", "1y"}});
    REQUIRE(e.has_error());
    CHECK(e.error().field == "cleanup-after");
    CHECK(e.error().source == "OUTBOX_RELAY_CLEANUP_AFTER");
}

TEST_CASE("bad_cleanup_batch_names_option") {
    for (const char* v : {"0", "1000001", "-5", "many"}) {
        CAPTURE(v);
        auto r = build({{"cleanup-batch", v}});
        REQUIRE(r.has_error());
        CHECK(r.error().field == "cleanup-batch");
    }
}

TEST_CASE("cleanup_after_shows_what_it_parsed") {
    for (const auto& o : outbox::options()) {
        if (o.name != "cleanup-after") continue;
        outbox::relay_config c;
        CHECK(o.show(c).empty());  // off
        CHECK(o.apply(c, "36h").empty());
        CHECK(o.show(c) == "36h");
        return;
    }
    FAIL("cleanup-after is not in the option table");
}
