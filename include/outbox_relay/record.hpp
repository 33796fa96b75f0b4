#pragma once
// The one shape of a Kafka record inside the relay, from the outbox mapper
// through the relay session to the Kafka sink:
//
//   mapper (outbox.hpp) -> record (views into the decoded tuple + scratch)
//   session             -> adds the position headers (dedupe.hpp), produces it,
//                          or parks an owned_record copy while its topic is scanned
//   sink (io)           -> copies it into librdkafka
//
// A `record` only views bytes; whoever hands one out says how long they live.
// An `owned_record` holds its own copy and hands out records viewing it.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace outbox {

struct header {
    std::string_view name;
    std::string_view value;    // empty view with value_null = true for a null header value
    bool value_null = false;
};

// No partition chosen: the producer's partitioner picks one from the key.
inline constexpr std::int32_t any_partition = -1;

struct record {
    std::string_view topic;
    std::string_view key;      // empty view with key_null = true for a null key
    bool key_null = false;
    std::string_view value;    // empty view with value_null = true for a null value (tombstone)
    bool value_null = false;
    std::span<const header> headers;
    std::int32_t partition = any_partition;  // a placement column can choose it
    std::int64_t timestamp_ms = 0;           // Kafka record timestamp (ms since the Unix epoch); 0 = the producer's clock

    // The measure of backpressure: key + value + header names and values.
    // (librdkafka's own queue limit counts less, so it never fills first.)
    std::size_t bytes() const noexcept {
        std::size_t n = key.size() + value.size();
        for (const header& h : headers) n += h.name.size() + h.value.size();
        return n;
    }

    // The first header called `name`, or nullptr.
    const header* find(std::string_view name) const noexcept {
        for (const header& h : headers)
            if (h.name == name) return &h;
        return nullptr;
    }
};

// A record with its own storage: one heap buffer holding every byte, and the
// views into it. Moving keeps the views valid (the buffer does not move).
class owned_record {
public:
    explicit owned_record(const record& r);
    owned_record(owned_record&&) noexcept = default;
    owned_record& operator=(owned_record&&) noexcept = default;
    owned_record(const owned_record&) = delete;
    owned_record& operator=(const owned_record&) = delete;

    // Valid as long as this object (or the one it is moved into) lives.
    const record& get() const noexcept { return rec_; }

private:
    std::unique_ptr<char[]> buf_;
    std::vector<header> headers_;
    record rec_;
};

// Whether Kafka accepts `name` as a topic: 1-249 characters of
// [a-zA-Z0-9._-], and not "." or ".." (Kafka's Topic.validate).
bool valid_topic_name(std::string_view name) noexcept;

}  // namespace outbox
