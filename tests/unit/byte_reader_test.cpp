#include "outbox_relay/byte_reader.hpp"

#include <doctest/doctest.h>

#include <string>

using outbox::byte_reader;
using outbox::errc;

namespace {
std::string bytes(std::initializer_list<int> v) {
    std::string s;
    for (int b : v) s.push_back(static_cast<char>(b));
    return s;
}
}  // namespace

TEST_CASE("byte_reader_reads_big_endian_unsigned") {
    std::string in = bytes({0xAB, 0x01, 0x02, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 5, 6, 7, 8});
    byte_reader r(in);
    CHECK(*r.u8() == 0xABu);
    CHECK(*r.u16() == 0x0102u);
    CHECK(*r.u32() == 0xDEADBEEFu);
    CHECK(*r.u64() == 0x0102030405060708ull);
    CHECK(r.empty());
    CHECK(r.offset() == in.size());
}

TEST_CASE("byte_reader_signed_reads_are_twos_complement") {
    std::string in = bytes({0xFF, 0xFF, 0xFE, 0x80, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFD});
    byte_reader r(in);
    CHECK(*r.i8() == -1);
    CHECK(*r.i16() == -2);
    CHECK(*r.i32() == INT32_MIN);
    CHECK(*r.i64() == -3);
}

TEST_CASE("byte_reader_truncated_integer_keeps_offset") {
    std::string in = bytes({1, 2, 3});
    byte_reader r(in);
    REQUIRE(r.u8().has_value());
    auto v = r.u32();
    REQUIRE(v.has_error());
    CHECK(v.error() == errc::truncated);
    // The cursor still points at the field that failed, so callers can report it.
    CHECK(r.offset() == 1);
    CHECK(*r.u16() == 0x0203u);
}

TEST_CASE("byte_reader_every_width_truncated_on_empty_input") {
    byte_reader r(std::string_view{});
    CHECK(r.u8().error() == errc::truncated);
    CHECK(r.u16().error() == errc::truncated);
    CHECK(r.u32().error() == errc::truncated);
    CHECK(r.u64().error() == errc::truncated);
    CHECK(r.i64().error() == errc::truncated);
    CHECK(r.offset() == 0);
}

TEST_CASE("byte_reader_cstring_returns_view_without_nul") {
    std::string in("abc\0\0x", 6);
    byte_reader r(in);
    auto s = r.cstring();
    REQUIRE(s.has_value());
    CHECK(*s == "abc");
    CHECK(s->data() == in.data());  // a view, not a copy
    auto empty = r.cstring();
    REQUIRE(empty.has_value());
    CHECK(empty->empty());
    CHECK(r.offset() == 5);
}

TEST_CASE("byte_reader_cstring_without_nul_is_bad_string") {
    std::string in = "abc";
    byte_reader r(in);
    auto s = r.cstring();
    REQUIRE(s.has_error());
    CHECK(s.error() == errc::bad_string);
    CHECK(r.offset() == 0);
}

TEST_CASE("byte_reader_cstring_on_empty_input_is_bad_string") {
    byte_reader r(std::string_view{});
    CHECK(r.cstring().error() == errc::bad_string);
}

TEST_CASE("byte_reader_bytes_exact_and_beyond") {
    std::string in = "hello";
    byte_reader r(in);
    auto too_many = r.bytes(6);
    REQUIRE(too_many.has_error());
    CHECK(too_many.error() == errc::truncated);
    CHECK(r.offset() == 0);
    auto all = r.bytes(5);
    REQUIRE(all.has_value());
    CHECK(*all == "hello");
    CHECK(r.empty());
    auto none = r.bytes(0);
    REQUIRE(none.has_value());
    CHECK(none->empty());
}

TEST_CASE("byte_reader_huge_length_does_not_wrap") {
    std::string in = "ab";
    byte_reader r(in);
    REQUIRE(r.u8().has_value());
    // offset + n would overflow size_t; the check must not be fooled by it.
    CHECK(r.bytes(SIZE_MAX).error() == errc::truncated);
    CHECK(r.skip(SIZE_MAX).error() == errc::truncated);
    CHECK(r.remaining() == 1);
}

TEST_CASE("byte_reader_skip_advances") {
    std::string in = bytes({9, 9, 9, 0x42});
    byte_reader r(in);
    REQUIRE(r.skip(3).has_value());
    CHECK(*r.u8() == 0x42u);
}
