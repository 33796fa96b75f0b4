#pragma once
// Bounds-checked big-endian cursor over a byte span, for the wire formats of
// the replication protocol and pgoutput (network byte order throughout).
//
// Every read either returns the value and advances, or returns an error and
// leaves the cursor where it was, so offset() after a failed read is the
// offset of the field that could not be read. No read ever touches a byte
// outside the span. Header-only: the decoder calls these on every field of
// every message, and inlining them is most of the decode rate.
#include "outbox_relay/errc.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace outbox {

class byte_reader {
public:
    // Reads from `data`, which must stay alive while the reader and any view
    // it returned are in use. Any thread; not shared between threads.
    constexpr explicit byte_reader(std::string_view data) noexcept : data_(data) {}

    // Offset of the next byte to read, from the start of the span.
    constexpr std::size_t offset() const noexcept { return pos_; }
    constexpr std::size_t remaining() const noexcept { return data_.size() - pos_; }
    constexpr bool empty() const noexcept { return pos_ == data_.size(); }
    constexpr std::string_view data() const noexcept { return data_; }

    // Fixed-width unsigned integers, big-endian. Error: errc::truncated when
    // fewer than sizeof(T) bytes remain.
    result<std::uint8_t> u8() noexcept { return read_be<std::uint8_t>(); }
    result<std::uint16_t> u16() noexcept { return read_be<std::uint16_t>(); }
    result<std::uint32_t> u32() noexcept { return read_be<std::uint32_t>(); }
    result<std::uint64_t> u64() noexcept { return read_be<std::uint64_t>(); }

    // Signed variants: the same bytes reinterpreted as two's complement.
    result<std::int8_t> i8() noexcept { return as_signed<std::int8_t>(u8()); }
    result<std::int16_t> i16() noexcept { return as_signed<std::int16_t>(u16()); }
    result<std::int32_t> i32() noexcept { return as_signed<std::int32_t>(u32()); }
    result<std::int64_t> i64() noexcept { return as_signed<std::int64_t>(u64()); }

    // A NUL-terminated string; the view excludes the NUL, the cursor moves
    // past it. Error: errc::bad_string when no NUL occurs before the end.
    result<std::string_view> cstring() noexcept {
        // memchr on a null pointer is undefined even for length 0.
        if (empty()) return errc::bad_string;
        const char* begin = data_.data() + pos_;
        const void* nul = std::memchr(begin, '\0', remaining());
        if (nul == nullptr) return errc::bad_string;
        std::size_t len = static_cast<std::size_t>(static_cast<const char*>(nul) - begin);
        pos_ += len + 1;
        return std::string_view(begin, len);
    }

    // The next n bytes as a view into the span. Error: errc::truncated when
    // fewer than n remain.
    result<std::string_view> bytes(std::size_t n) noexcept {
        if (n > remaining()) return errc::truncated;
        std::string_view v = data_.substr(pos_, n);
        pos_ += n;
        return v;
    }

    // Advances past n bytes. Error: errc::truncated when fewer than n remain.
    result<void> skip(std::size_t n) noexcept {
        if (n > remaining()) return errc::truncated;
        pos_ += n;
        return {};
    }

private:
    template <class T>
    result<T> read_be() noexcept {
        if (remaining() < sizeof(T)) return errc::truncated;
        const auto* p = reinterpret_cast<const unsigned char*>(data_.data() + pos_);
        T v = 0;
        for (std::size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>((v << 8) | p[i]);
        pos_ += sizeof(T);
        return v;
    }

    template <class S, class U>
    static result<S> as_signed(result<U> r) noexcept {
        if (!r) return r.error();
        return static_cast<S>(*r);  // modular conversion: well defined since C++20
    }

    std::string_view data_;
    std::size_t pos_ = 0;
};

}  // namespace outbox
