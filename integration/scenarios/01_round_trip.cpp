// Scenario 1: round trip. 10,000 events in transactions of 1, 10, 100 and
// 1000 rows over 5 aggregate types reach their 5 topics with exact key, value
// bytes and headers; seq runs 0..n-1 per commit LSN; per-key order holds.
#include "scenario_support.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>

using namespace outbox::it::scn;

TEST_CASE("01_round_trip") {
    // Arrange: a relay streaming on a fresh slot.
    scenario sc("01_round_trip");
    auto& relay = sc.start_relay();
    sc.wait_streaming(relay);

    // 4 x 1000 + 40 x 100 + 150 x 10 + 500 x 1 = 10,000 rows in 694
    // transactions, shuffled with a fixed seed so sizes interleave.
    std::vector<std::size_t> sizes;
    sizes.insert(sizes.end(), 4, 1000);
    sizes.insert(sizes.end(), 40, 100);
    sizes.insert(sizes.end(), 150, 10);
    sizes.insert(sizes.end(), 500, 1);
    std::shuffle(sizes.begin(), sizes.end(), std::mt19937(20240601));
    std::size_t total = 0;
    for (auto s : sizes) total += s;
    REQUIRE(total == 10'000);

    // Act: one writer, 50 aggregates over 5 types.
    outbox_writer w(env().pg, sc.table(), "order", 50, 5);
    auto wall0 = std::chrono::system_clock::now();
    auto t0 = clock::now();
    for (auto s : sizes) w.write_txn(s);
    auto t_written = clock::now();

    // Check: everything, exactly once, in order, with consistent LSN headers.
    auto rep = sc.check(120s, /*allow_duplicates=*/false, total);
    auto t_checked = clock::now();
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    INFO(rep.summary());
    INFO("relay log " << relay.log_path().string() << ":\n" << relay.log_text(3000));
    CHECK(rep.ok());
    CHECK(rep.delivered == total);
    CHECK(rep.duplicated == 0);
    CHECK(rep.transactions == sizes.size());
    CHECK(relay.running());

    using ms = std::chrono::duration<double, std::milli>;
    double write_ms = ms(t_written - t0).count();
    double e2e_ms = ms(t_checked - t0).count();
    double start_ms = std::chrono::duration_cast<std::chrono::milliseconds>(wall0.time_since_epoch()).count();
    double produce_span_ms = rep.max_timestamp_ms > 0 ? rep.max_timestamp_ms - start_ms : 0;
    // Two figures: first insert -> newest record timestamp (the relay's
    // produce time, ~ack time on a local broker), and first insert -> the
    // checker's verdict (an upper bound: it includes the checker's own
    // consumer start-up and 500 ms re-read rounds).
    MESSAGE("01_round_trip events=" << total << " txns=" << sizes.size() << " write_ms=" << write_ms
            << " first_insert_to_last_record_ms=" << produce_span_ms
            << " events_per_s=" << (produce_span_ms > 0 ? total / (produce_span_ms / 1000.0) : 0)
            << " first_insert_to_checker_ok_ms=" << e2e_ms
            << " events_per_s_checker_bound=" << (total / (e2e_ms / 1000.0)));

    // A clean stop ends the scenario: SIGTERM drains and exits 0.
    relay.terminate();
    auto st = relay.wait_exit(clock::now() + 40s);
    REQUIRE(st.has_value());
    CHECK(st->exited_ok());
}

// A metrics port already in use is its own exit code (26), named in one log
// line, not the Kafka-configuration code it used to share (issue 8, defect 6).
TEST_CASE("01_metrics_listen_in_use_exits_26") {
    scenario sc("01_metrics_port_busy");
    // Hold a loopback port.
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 1) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    const std::string listen = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));

    auto& relay = sc.start_relay("busy-port", {"--metrics-listen", listen});
    auto st = relay.wait_exit(clock::now() + 60s);
    ::close(fd);
    REQUIRE(st.has_value());
    INFO("relay log:\n" << relay.log_text(3000));
    CHECK(st->code == std::optional<int>(26));
    CHECK(relay.log_text().find("event=start_failed exit_code=26") != std::string::npos);
    CHECK(relay.log_text().find(listen) != std::string::npos);
}
