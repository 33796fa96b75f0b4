// Scenario 10: the relay's TCP path to Postgres goes silent mid-stream (a
// blackhole: nothing forwarded either way, nothing closed, as when a firewall
// or a dead link drops the packets). The relay must notice within its
// silence timeout (pg-silence-timeout-ms), drop the connection, reconnect
// once the path is back, and neither lose nor duplicate anything.
//
// The path is a tcp_proxy in this process between the relay and Postgres
// (no root or iptables needed); the writer talks to Postgres directly.
#include "scenario_support.hpp"
#include "tcp_proxy.hpp"

#include <doctest/doctest.h>

#include <regex>

using namespace outbox::it::scn;

namespace {

// host=... port=... of the stack's conninfo, the port replaced.
std::string via_port(const std::string& conninfo, int port) {
    return std::regex_replace(conninfo, std::regex(R"(port=\d+)"), "port=" + std::to_string(port));
}

int pg_port(const std::string& conninfo) {
    std::smatch m;
    if (!std::regex_search(conninfo, m, std::regex(R"(port=(\d+))"))) throw std::runtime_error("no port in " + conninfo);
    return std::stoi(m[1]);
}

}  // namespace

TEST_CASE("10_pg_path_blackholed") {
    scenario sc("10_pg_path_blackholed");
    outbox::it::tcp_proxy proxy("127.0.0.1", pg_port(env().pg));
    const auto silence = 4s;

    // The relay reaches Postgres only through the proxy.
    auto args = sc.relay_args({"--pg-silence-timeout-ms", "4000", "--status-interval-ms", "1000"});
    for (std::size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == "--postgres") args[i + 1] = via_port(env().pg, proxy.port());
    outbox::it::relay_options o;
    o.args = args;
    o.log_path = outbox::it::relay_log_path("10_pg_path_blackholed-relay");
    outbox::it::relay_process relay(std::move(o));
    sc.wait_streaming(relay);
    const int walsender_before = *sc.slot_info().active_pid;
    const auto flush_at_start = sc.slot_info().confirmed_flush.value_or(0);

    outbox_writer w(env().pg, sc.table(), "bh", 20, 3);
    w.start({5, 1, 20}, 10ms, 4000);
    // Streaming for real: rows written and confirmed through the proxy.
    REQUIRE(wait_until(clock::now() + 60s, [&] {
        return w.rows() >= 500 && sc.slot_info().confirmed_flush.value_or(0) > flush_at_start;
    }));

    // Act: the path goes silent.
    proxy.blackhole(true);
    const auto hole_start = clock::now();
    const std::size_t bytes_at_hole = proxy.bytes_forwarded();
    bool noticed = wait_until(hole_start + silence + 6s,
                              [&] { return relay.log_text().find("event=connection_silent") != std::string::npos; },
                              50ms);
    const auto noticed_after = clock::now() - hole_start;
    // Keep the path dead a little longer: reconnect attempts meanwhile go nowhere.
    std::this_thread::sleep_for(3s);
    CHECK(proxy.bytes_forwarded() == bytes_at_hole);  // the blackhole really held
    proxy.blackhole(false);
    const auto hole_s = std::chrono::duration<double>(clock::now() - hole_start).count();

    // The relay streams again under a new walsender, the same process.
    std::optional<int> walsender_after;
    const bool back = wait_until(clock::now() + 60s, [&] {
        walsender_after = sc.slot_info().active_pid;
        return walsender_after && *walsender_after != walsender_before;
    });
    REQUIRE(wait_until(clock::now() + 120s, [&] { return w.background_done(); }));
    REQUIRE(w.stop().empty());
    auto rep = sc.check(120s, /*allow_duplicates=*/false, w.rows());

    INFO("relay log tail:\n" << relay.log_text(5000));
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    MESSAGE("10_pg_path_blackholed noticed_after_ms="
            << std::chrono::duration_cast<std::chrono::milliseconds>(noticed_after).count()
            << " silence_timeout_ms=4000 blackhole_s=" << hole_s << " proxy_connections=" << proxy.accepted()
            << " rows=" << w.rows() << " " << rep.summary());
    CHECK(noticed);
    // Within the silence timeout, plus the timer's and the poll's granularity.
    CHECK(noticed_after <= silence + 1500ms);
    CHECK(noticed_after >= silence - 500ms);  // not before the timeout either
    CHECK(back);
    CHECK(relay.running());
    CHECK(proxy.accepted() >= 2);  // it really reconnected through the path
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);
    CHECK(rep.out_of_order == 0);
    CHECK(rep.mismatched == 0);
}
