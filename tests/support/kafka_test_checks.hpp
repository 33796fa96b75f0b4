#pragma once
// doctest assertions over kafka_test_support.hpp's results, shared by the
// tail-scanner component and integration tests. Kept apart from
// kafka_test_support.hpp so the bench can use that one without doctest.
// Test thread only.
#include "kafka_test_support.hpp"
#include "outbox_relay/dedupe.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

namespace outbox::test {

// Requires that produce_records created its producer, queued every record,
// flushed in time, and got `produced` successful delivery reports and no failed one.
inline void require_delivered(const produce_outcome& out, std::size_t produced) {
    REQUIRE_MESSAGE(out.error.empty(), out.error);
    REQUIRE(out.flush == RD_KAFKA_RESP_ERR_NO_ERROR);
    REQUIRE(out.failed == 0);
    REQUIRE(out.ok == static_cast<int>(produced));
}

// Checks that `present` holds exactly `want` (same size, every element in).
inline void check_exact(const outbox::position_set& present, const std::vector<record_position>& want) {
    outbox::position_set w;
    for (const auto& p : want) w.insert(p);
    CHECK(present.size() == w.size());
    for (const auto& p : want) {
        CAPTURE(p.commit_lsn.to_string());
        CAPTURE(p.seq);
        CHECK(present.contains(p));
    }
}

}  // namespace outbox::test
