#include "outbox_relay/walsender.hpp"

#include "../support/pgoutput_encoder.hpp"

#include <doctest/doctest.h>

using namespace outbox;
using namespace outbox::walsender;

TEST_CASE("walsender_parse_xlog_data") {
    std::string frame = test::enc_xlog_data(0x1600000010ull, 0x1600000020ull, 123456789, "Bpayload");
    auto r = parse_copy_data(frame);
    REQUIRE(r.has_value());
    const auto* x = std::get_if<xlog_data>(&*r);
    REQUIRE(x != nullptr);
    CHECK(x->data_start == lsn{0x1600000010ull});
    CHECK(x->wal_end == lsn{0x1600000020ull});
    CHECK(x->send_time == 123456789);
    CHECK(x->payload == "Bpayload");
    CHECK(x->payload.data() == frame.data() + 25);  // a view into the frame
}

TEST_CASE("walsender_xlog_data_with_empty_payload") {
    std::string frame = test::enc_xlog_data(1, 2, 3, "");
    auto r = parse_copy_data(frame);
    REQUIRE(r.has_value());
    CHECK(std::get<xlog_data>(*r).payload.empty());
}

TEST_CASE("walsender_parse_keepalive") {
    for (bool reply : {false, true}) {
        std::string frame = test::enc_keepalive(0xABCDEF01ull, -5, reply);
        auto r = parse_copy_data(frame);
        REQUIRE(r.has_value());
        const auto* k = std::get_if<keepalive>(&*r);
        REQUIRE(k != nullptr);
        CHECK(k->wal_end == lsn{0xABCDEF01ull});
        CHECK(k->send_time == -5);
        CHECK(k->reply_requested == reply);
    }
}

TEST_CASE("walsender_keepalive_any_nonzero_reply_byte_requests_reply") {
    std::string frame = test::enc_keepalive(1, 1, false);
    frame.back() = 7;
    CHECK(std::get<keepalive>(*parse_copy_data(frame)).reply_requested);
}

TEST_CASE("walsender_keepalive_trailing_bytes") {
    std::string frame = test::enc_keepalive(1, 2, true) + "x";
    auto r = parse_copy_data(frame);
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::trailing_bytes);
}

TEST_CASE("walsender_empty_frame_is_truncated") {
    auto r = parse_copy_data("");
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::truncated);
}

TEST_CASE("walsender_unknown_tag") {
    auto r = parse_copy_data(std::string("r") + std::string(33, '\0'));
    REQUIRE(r.has_error());
    CHECK(r.error() == errc::unknown_tag);
}

TEST_CASE("walsender_every_truncation_of_headers_is_an_error") {
    std::string w = test::enc_xlog_data(1, 2, 3, "");
    for (std::size_t n = 0; n < w.size(); ++n) {
        CAPTURE(n);
        auto r = parse_copy_data(std::string_view(w).substr(0, n));
        REQUIRE(r.has_error());
        CHECK(r.error() == errc::truncated);
    }
    std::string k = test::enc_keepalive(1, 2, true);
    for (std::size_t n = 0; n < k.size(); ++n) {
        CAPTURE(n);
        auto r = parse_copy_data(std::string_view(k).substr(0, n));
        REQUIRE(r.has_error());
        CHECK(r.error() == errc::truncated);
    }
}

TEST_CASE("walsender_encode_status_update_layout") {
    status_update s{lsn{0x0102030405060708ull}, lsn{0x1112131415161718ull}, lsn{0},
                    static_cast<std::int64_t>(0x2122232425262728ll), true};
    auto out = encode_status_update(s);
    REQUIRE(out.size() == 34u);
    std::string expect = test::bytes_builder{}
                             .ch('r')
                             .u64(0x0102030405060708ull)
                             .u64(0x1112131415161718ull)
                             .u64(0)
                             .i64(0x2122232425262728ll)
                             .u8(1)
                             .take();
    CHECK(std::string(out.data(), out.size()) == expect);
    s.reply_requested = false;
    CHECK(encode_status_update(s)[33] == 0);
}

TEST_CASE("walsender_pg_epoch_conversion") {
    using namespace std::chrono;
    // 2000-01-01 00:00:00 UTC is 946684800 s after the Unix epoch.
    system_clock::time_point pg_epoch{seconds(946'684'800)};
    CHECK(to_pg_time(pg_epoch) == 0);
    CHECK(to_pg_time(pg_epoch + microseconds(1'500'000)) == 1'500'000);
    CHECK(to_pg_time(system_clock::time_point{}) == -pg_epoch_offset_us);
    CHECK(from_pg_time(0) == pg_epoch);
    auto now = time_point_cast<microseconds>(system_clock::now());
    CHECK(from_pg_time(to_pg_time(now)) == now);
}

TEST_CASE("walsender_from_pg_time_clamps_instead_of_overflowing") {
    // sendTime comes off the wire; a corrupt value must not be UB.
    auto hi = walsender::from_pg_time(INT64_MAX);
    auto lo = walsender::from_pg_time(INT64_MIN);
    CHECK(hi > std::chrono::system_clock::now());
    CHECK(lo < std::chrono::system_clock::time_point{});
}
