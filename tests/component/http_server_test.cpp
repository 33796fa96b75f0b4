// http_server on 127.0.0.1:0, probed by a small Beast client running on the
// same io_context. Every fetch waits for its answer with a deadline.
#include "outbox_relay/io/http_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using outbox::io::http_server;
using outbox::io::http_server_handlers;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

struct reply {
    unsigned status = 0;
    std::string content_type;
    std::string allow;
    std::string body;
};

// Sends each request of `requests` (method, target) in turn on one keep-alive connection.
asio::awaitable<std::vector<reply>> exchange(std::uint16_t port, std::vector<std::pair<http::verb, std::string>> requests) {
    beast::tcp_stream stream(co_await asio::this_coro::executor);
    co_await stream.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), asio::use_awaitable);
    beast::flat_buffer buffer;
    std::vector<reply> out;
    for (const auto& [method, target] : requests) {
        http::request<http::string_body> req{method, target, 11};
        req.set(http::field::host, "127.0.0.1");
        req.keep_alive(true);
        req.prepare_payload();
        co_await http::async_write(stream, req, asio::use_awaitable);
        http::response<http::string_body> res;
        co_await http::async_read(stream, buffer, res, asio::use_awaitable);
        out.push_back({res.result_int(), std::string(res[http::field::content_type]),
                       std::string(res[http::field::allow]), res.body()});
    }
    co_return out;
}

// Runs the loop until the exchange finished (or threw); fails the test after 10 s.
std::vector<reply> run_exchange(asio::io_context& ioc, std::uint16_t port,
                                std::vector<std::pair<http::verb, std::string>> requests) {
    std::optional<std::vector<reply>> result;
    std::exception_ptr error;
    asio::co_spawn(ioc, exchange(port, std::move(requests)), [&](std::exception_ptr e, std::vector<reply> r) {
        error = e;
        result = std::move(r);
    });
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!result && std::chrono::steady_clock::now() < deadline) {
        if (ioc.stopped()) ioc.restart();
        ioc.run_one_for(20ms);
    }
    REQUIRE(result.has_value());
    if (error) std::rethrow_exception(error);
    return *result;
}

reply get(asio::io_context& ioc, std::uint16_t port, std::string target) {
    auto r = run_exchange(ioc, port, {{http::verb::get, std::move(target)}});
    REQUIRE(r.size() == 1);
    return r.front();
}

struct fixture {
    asio::io_context ioc;
    std::string metrics = "# TYPE outbox_relay_records_total counter\noutbox_relay_records_total 42\n";
    bool is_ready = false;
    std::string not_ready_reason = "connecting to postgres";
    int metrics_calls = 0;

    http_server_handlers handlers() {
        http_server_handlers h;
        h.metrics_text = [this] {
            ++metrics_calls;
            return metrics;
        };
        h.ready = [this] { return std::pair<bool, std::string>{is_ready, is_ready ? "" : not_ready_reason}; };
        return h;
    }
};

std::string listen_error(asio::io_context& ioc, std::string listen) {
    try {
        http_server s(ioc, listen, {});
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return {};
}

}  // namespace

TEST_SUITE("http_server") {

TEST_CASE("metrics_returns_prometheus_text") {
    fixture f;
    http_server server(f.ioc, "127.0.0.1:0", f.handlers());
    REQUIRE(server.local_port() != 0);
    auto r = get(f.ioc, server.local_port(), "/metrics");
    CHECK(r.status == 200);
    CHECK(r.content_type.find("text/plain") == 0);
    CHECK(r.content_type.find("version=0.0.4") != std::string::npos);
    CHECK(r.body == f.metrics);
    CHECK(f.metrics_calls == 1);
}

TEST_CASE("healthz_is_ok_while_loop_runs") {
    fixture f;
    http_server server(f.ioc, "127.0.0.1:0", f.handlers());
    auto r = get(f.ioc, server.local_port(), "/healthz");
    CHECK(r.status == 200);
    CHECK(r.body == "ok\n");
}

TEST_CASE("readyz_follows_the_ready_handler") {
    fixture f;
    http_server server(f.ioc, "127.0.0.1:0", f.handlers());
    auto not_ready = get(f.ioc, server.local_port(), "/readyz");
    CHECK(not_ready.status == 503);
    CHECK(not_ready.body.find(f.not_ready_reason) != std::string::npos);
    f.is_ready = true;
    auto ready = get(f.ioc, server.local_port(), "/readyz");
    CHECK(ready.status == 200);
}

TEST_CASE("unknown_path_is_404_and_post_is_405") {
    fixture f;
    http_server server(f.ioc, "127.0.0.1:0", f.handlers());
    CHECK(get(f.ioc, server.local_port(), "/nope").status == 404);
    CHECK(get(f.ioc, server.local_port(), "/").status == 404);
    auto r = run_exchange(f.ioc, server.local_port(), {{http::verb::post, "/metrics"}});
    REQUIRE(r.size() == 1);
    CHECK(r[0].status == 405);
    CHECK(r[0].allow == "GET");
    CHECK(f.metrics_calls == 0);
}

TEST_CASE("query_string_is_ignored") {
    fixture f;
    http_server server(f.ioc, "127.0.0.1:0", f.handlers());
    CHECK(get(f.ioc, server.local_port(), "/metrics?format=text").body == f.metrics);
}

TEST_CASE("keep_alive_serves_several_requests_on_one_connection") {
    fixture f;
    http_server server(f.ioc, "127.0.0.1:0", f.handlers());
    auto r = run_exchange(f.ioc, server.local_port(),
                          {{http::verb::get, "/healthz"}, {http::verb::get, "/metrics"}, {http::verb::get, "/x"}});
    REQUIRE(r.size() == 3);
    CHECK(r[0].status == 200);
    CHECK(r[1].body == f.metrics);
    CHECK(r[2].status == 404);
}

TEST_CASE("throwing_handler_gives_500_and_server_keeps_serving") {
    fixture f;
    http_server_handlers h = f.handlers();
    h.metrics_text = []() -> std::string { throw std::runtime_error("registry broken"); };
    http_server server(f.ioc, "127.0.0.1:0", std::move(h));
    CHECK(get(f.ioc, server.local_port(), "/metrics").status == 500);
    CHECK(get(f.ioc, server.local_port(), "/healthz").status == 200);
}

TEST_CASE("bad_listen_string_names_it") {
    asio::io_context ioc;
    for (std::string bad : {"nonsense", "127.0.0.1:99999", "127.0.0.1:abc", "127.0.0.1:"}) {
        CAPTURE(bad);
        auto err = listen_error(ioc, bad);
        CHECK(err.find(bad) != std::string::npos);
    }
}

TEST_CASE("port_in_use_names_the_address") {
    fixture f;
    http_server first(f.ioc, "127.0.0.1:0", f.handlers());
    std::string taken = "127.0.0.1:" + std::to_string(first.local_port());
    auto err = listen_error(f.ioc, taken);
    CHECK(err.find(taken) != std::string::npos);
}

TEST_CASE("stop_closes_acceptor_and_idle_connections") {
    fixture f;
    http_server server(f.ioc, "127.0.0.1:0", f.handlers());
    // An idle keep-alive connection stays open after its answer.
    tcp::socket idle(f.ioc);
    idle.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.local_port()));
    CHECK(get(f.ioc, server.local_port(), "/healthz").status == 200);
    server.stop();
    // With the acceptor and the idle connection closed the server holds no
    // more work, so the loop runs dry well before the 30 s idle timeout.
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!f.ioc.stopped() && std::chrono::steady_clock::now() < deadline) f.ioc.run_one_for(20ms);
    CHECK(f.ioc.stopped());
    // The server side closed the idle connection: reading it ends with eof.
    char c;
    boost::system::error_code ec;
    idle.read_some(asio::buffer(&c, 1), ec);
    CHECK(ec == asio::error::eof);
    // And nobody listens any more.
    tcp::socket late(f.ioc);
    late.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.local_port()), ec);
    CHECK(ec == asio::error::connection_refused);
}

// Runs the loop until `done` or 5 s.
void run_until(asio::io_context& ioc, const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
        if (ioc.stopped()) ioc.restart();
        ioc.run_one_for(20ms);
    }
}

TEST_CASE("connections_above_the_cap_are_closed_at_once") {
    fixture f;
    outbox::io::http_server_limits lim;
    lim.max_connections = 2;
    http_server server(f.ioc, "127.0.0.1:0", f.handlers(), lim);
    const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), server.local_port());
    tcp::socket a(f.ioc), b(f.ioc), c(f.ioc);
    a.connect(ep);
    b.connect(ep);
    run_until(f.ioc, [&] { return server.open_connections() == 2; });
    CHECK(server.open_connections() == 2);
    c.connect(ep);
    run_until(f.ioc, [&] { return server.refused_connections() == 1; });
    CHECK(server.refused_connections() == 1);
    // The third is closed by the server (reset, not left hanging).
    char ch;
    boost::system::error_code ec;
    c.read_some(asio::buffer(&ch, 1), ec);
    CHECK(ec);
    // Once one of the two goes, a new connection is served again.
    a.close();
    run_until(f.ioc, [&] { return server.open_connections() == 1; });
    CHECK(get(f.ioc, server.local_port(), "/healthz").status == 200);
}

TEST_CASE("an_idle_connection_is_closed_after_the_read_timeout") {
    fixture f;
    outbox::io::http_server_limits lim;
    lim.read_timeout = 200ms;
    http_server server(f.ioc, "127.0.0.1:0", f.handlers(), lim);
    tcp::socket idle(f.ioc);
    idle.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.local_port()));
    run_until(f.ioc, [&] { return server.open_connections() == 1; });
    REQUIRE(server.open_connections() == 1);
    run_until(f.ioc, [&] { return server.open_connections() == 0; });
    CHECK(server.open_connections() == 0);
}

TEST_CASE("a_bare_port_binds_loopback_only") {
    fixture f;
    http_server server(f.ioc, ":0", f.handlers());
    // Served on loopback (config_test checks that "9187" means 127.0.0.1:9187).
    CHECK(get(f.ioc, server.local_port(), "/healthz").status == 200);
}

}  // TEST_SUITE
