// Scenario 53 (issue 11): a flood of idle HTTP connections on metrics-listen.
// 1,000 connections are opened and kept idle; the relay keeps at most
// metrics-max-connections of them (100 here) and closes the rest at once; it
// delivers every row written meanwhile; once the flood is gone /metrics
// answers again and counts the refused connections.
#include "harness.hpp"
#include "http_get.hpp"
#include "ops_support.hpp"
#include "scenario_support.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace outbox::it::scn;
namespace ops = outbox::it::ops;

TEST_CASE("53_idle_http_flood_does_not_stop_delivery") {
    // 1,000 sockets in this process, plus librdkafka's and libpq's.
    rlimit rl{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < 4096) {
        rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 4096);
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &rl) == 0);
    }
    REQUIRE(rl.rlim_cur >= 1100);

    scenario sc("53_http_flood");
    auto& relay = sc.start_relay("relay", {"--metrics-listen", "127.0.0.1:0", "--metrics-max-connections", "100"});
    sc.wait_streaming(relay);
    std::optional<int> port;
    REQUIRE(wait_until(clock::now() + 30s,
                       [&] { return (port = outbox::it::metrics_port_of(relay.log_text())).has_value(); }));

    // Act: 1,000 idle connections (connected, nothing sent).
    std::vector<int> fds;
    struct closer {
        std::vector<int>& fds;
        ~closer() {
            for (int fd : fds) ::close(fd);
        }
    } close_all{fds};
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(*port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < 1000; ++i) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(fd >= 0);
        fds.push_back(fd);
        REQUIRE_MESSAGE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "connect " << i);
    }

    // Rows written while the flood holds the port reach Kafka.
    outbox_writer w(env().pg, sc.table(), "f", 10, 2);
    for (int i = 0; i < 20; ++i) w.write_txn(10);
    auto rep = sc.check(90s, false, 200);
    INFO(rep.summary());
    CHECK(rep.ok());
    CHECK(relay.running());

    // Check: exactly the connections above the cap were closed by the relay
    // (EOF or reset), the 100 it keeps are still open (read deadline 10 s).
    auto closed_count = [&] {
        std::vector<pollfd> p;
        for (int fd : fds) p.push_back({fd, POLLIN, 0});
        ::poll(p.data(), p.size(), 0);
        int closed = 0;
        for (const auto& e : p)
            if (e.revents & (POLLIN | POLLHUP | POLLERR)) ++closed;
        return closed;
    };
    int closed = 0;
    bool settled = wait_until(clock::now() + 5s, [&] { return (closed = closed_count()) >= 900; });
    CHECK_MESSAGE(settled, "closed=" << closed);
    CHECK(closed == 900);

    // The flood goes; /metrics answers again and says what happened.
    for (int fd : fds) ::close(fd);
    fds.clear();
    ops::exposition m;
    bool answered = wait_until(clock::now() + 15s, [&] {
        m = ops::scrape(*port);
        return m.value("outbox_relay_http_connections_open").value_or(99) <= 1.0;
    });
    CHECK(answered);
    CHECK(m.value("outbox_relay_http_connections_refused_total") == 900.0);
    CHECK(m.value("outbox_relay_records_acked_total") == 200.0);
    CHECK(relay.log_text().find("event=connection_refused") != std::string::npos);

    relay.terminate();
    auto st = relay.wait_exit(clock::now() + 40s);
    REQUIRE(st.has_value());
    CHECK(st->exited_ok());
}
