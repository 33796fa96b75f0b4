#pragma once
// Reads the golden capture files written by tests/fixtures/capture/capture_pgoutput:
// a sequence of records, each Int32 big-endian length + that many bytes of one
// CopyData payload ('w' or 'k' frame). Test/bench/fuzz side only.
#include <cstdint>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

namespace outbox::test {

// Splits a capture file's bytes into frames; nullopt when a record is cut short
// (a damaged fixture must fail the test, not shrink it silently).
inline std::optional<std::vector<std::string>> split_capture(const std::string& bytes) {
    std::vector<std::string> frames;
    std::size_t pos = 0;
    while (pos < bytes.size()) {
        if (bytes.size() - pos < 4) return std::nullopt;
        std::uint32_t len = 0;
        for (int i = 0; i < 4; ++i) len = (len << 8) | static_cast<unsigned char>(bytes[pos + i]);
        pos += 4;
        if (bytes.size() - pos < len) return std::nullopt;
        frames.emplace_back(bytes.substr(pos, len));
        pos += len;
    }
    return frames;
}

// Reads and splits `path`; nullopt when unreadable or damaged.
inline std::optional<std::vector<std::string>> read_capture(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return split_capture(bytes);
}

}  // namespace outbox::test
