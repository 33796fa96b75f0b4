#pragma once
// A tiny HTTP/1.1 server (Boost.Beast) on the relay's io_context for
// Prometheus scraping and orchestrator probes:
//   GET /metrics  200, text/plain; version=0.0.4 (handlers.metrics_text())
//   GET /readyz   200 "ready" or 503 with the reason (handlers.ready())
//   GET /healthz  200 "ok": answered by the loop thread itself, so a reply
//                 proves the loop is running
//   other paths 404; other methods 405 (Allow: GET).
// One coroutine per connection; keep-alive; requests over 8 KiB are dropped.
// Hardened for a port that may be reachable by more than Prometheus:
// at most `max_connections` are open at once (one more is closed as soon as
// it is accepted, before anything is read), and each request must arrive
// whole within `read_timeout` (also the keep-alive idle limit), so slow or
// idle clients cannot pile up. A flood costs the loop one accept and one
// close per connection. Everything runs on the thread that runs the
// io_context; the handlers are called there and must not block.
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace outbox::io {

namespace detail {
struct http_state;  // acceptor, handlers and open connections; shared with the coroutines
}

struct http_server_handlers {
    // Prometheus text exposition of every metric.
    std::function<std::string()> metrics_text;
    // {true, ""} when ready; {false, "why not"} otherwise.
    std::function<std::pair<bool, std::string>()> ready;
};

struct http_server_limits {
    std::size_t max_connections = 64;
    std::chrono::milliseconds read_timeout{10'000};
};

class http_server {
public:
    // Binds and listens on `listen` ("host:port"; host is an IPv4/IPv6
    // literal or a name resolved once, IPv6 may be in brackets; port 0 picks
    // an ephemeral port, see local_port()) and starts accepting on `ioc`.
    // Throws std::runtime_error naming `listen` when it cannot be parsed,
    // resolved or bound. `ioc` must outlive the server. Loop thread only.
    // A host left empty (":9187") binds 127.0.0.1, never every interface.
    http_server(boost::asio::io_context& ioc, std::string_view listen, http_server_handlers handlers,
                http_server_limits limits = {});
    // Stops accepting and closes open connections (see stop()).
    ~http_server();
    http_server(const http_server&) = delete;
    http_server& operator=(const http_server&) = delete;

    // The bound port (useful with port 0).
    std::uint16_t local_port() const noexcept { return port_; }

    // Connections open now, and those closed at once because the cap was reached.
    std::size_t open_connections() const noexcept;
    std::uint64_t refused_connections() const noexcept;

    // Closes the acceptor and every open connection; the coroutines end on
    // their next loop turn, after which the server holds no work on `ioc`.
    // Idempotent. Loop thread only.
    void stop();

private:
    std::shared_ptr<detail::http_state> state_;
    std::uint16_t port_ = 0;
};

}  // namespace outbox::io
