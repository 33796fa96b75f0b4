#include "outbox_relay/io/http_server.hpp"

#include "outbox_relay/io/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <charconv>
#include <stdexcept>
#include <unordered_set>

namespace outbox::io {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::string_view mod = "http";
constexpr std::size_t request_limit = 8 * 1024;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

tcp::endpoint parse_listen(std::string_view listen) {
    auto bad = [&](std::string_view why) {
        return std::runtime_error(fmt::format("http listen address '{}': {}", listen, why));
    };
    auto colon = listen.rfind(':');
    if (colon == std::string_view::npos) throw bad("expected host:port");
    std::string_view host = listen.substr(0, colon);
    std::string_view port_text = listen.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    unsigned port = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (port_text.empty() || ec != std::errc{} || end != port_text.data() + port_text.size() || port > 65535)
        throw bad("port must be a number 0-65535");
    // ":9187" = loopback only; every interface is "0.0.0.0:9187", written out.
    if (host.empty()) return {asio::ip::address_v4::loopback(), static_cast<std::uint16_t>(port)};
    boost::system::error_code aec;
    auto addr = asio::ip::make_address(std::string(host), aec);
    if (!aec) return {addr, static_cast<std::uint16_t>(port)};
    // A host name: resolved once, at startup.
    asio::io_context tmp;
    tcp::resolver resolver(tmp);
    auto results = resolver.resolve(std::string(host), std::string(port_text), aec);
    if (aec || results.empty()) throw bad(fmt::format("cannot resolve host: {}", aec.message()));
    return results.begin()->endpoint();
}

}  // namespace

struct detail::http_state {
    tcp::acceptor acceptor;
    http_server_handlers handlers;
    http_server_limits limits;
    bool stopped = false;
    std::size_t open = 0;        // accepted and not yet closed (sessions starting included)
    std::uint64_t refused = 0;   // closed at once: the cap was reached
    // Open connections, so stop() can close them; each coroutine removes its own.
    std::unordered_set<beast::tcp_stream*> conns;

    http_state(asio::io_context& ioc, http_server_handlers h, http_server_limits l)
        : acceptor(ioc), handlers(std::move(h)), limits(l) {}

    http::response<http::string_body> answer(const http::request<http::string_body>& req) {
        http::response<http::string_body> res{http::status::ok, req.version()};
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.set(http::field::cache_control, "no-store");
        std::string_view target = req.target();
        target = target.substr(0, target.find('?'));
        bool known = target == "/metrics" || target == "/readyz" || target == "/healthz";
        if (!known) {
            res.result(http::status::not_found);
            res.body() = "not found\n";
        } else if (req.method() != http::verb::get) {
            res.result(http::status::method_not_allowed);
            res.set(http::field::allow, "GET");
            res.body() = "method not allowed\n";
        } else if (target == "/healthz") {
            res.body() = "ok\n";
        } else {
            // A throwing handler is a bug in the relay, not in the client: 500 and a log line.
            try {
                if (target == "/metrics") {
                    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
                    res.body() = handlers.metrics_text ? handlers.metrics_text() : std::string();
                } else {
                    auto [ok, reason] = handlers.ready ? handlers.ready() : std::pair<bool, std::string>{true, {}};
                    res.result(ok ? http::status::ok : http::status::service_unavailable);
                    res.body() = ok ? std::string("ready\n") : reason + "\n";
                }
            } catch (const std::exception& e) {
                log::error(mod, "event=handler_failed target={} error={}", log::quote(target), log::quote(e.what()));
                res.result(http::status::internal_server_error);
                res.set(http::field::content_type, "text/plain; charset=utf-8");
                res.body() = "internal error\n";
            }
        }
        res.keep_alive(req.keep_alive());
        res.prepare_payload();
        return res;
    }
};

namespace {

struct conn_registration {
    std::shared_ptr<detail::http_state> st;
    beast::tcp_stream* s = nullptr;
    ~conn_registration() {
        if (s) st->conns.erase(s);
        --st->open;  // counted by the accept loop
    }
};

asio::awaitable<void> session(std::shared_ptr<detail::http_state> st, tcp::socket socket) {
    conn_registration reg{st};
    if (st->stopped) co_return;  // accepted just before stop()
    beast::tcp_stream stream(std::move(socket));
    st->conns.insert(&stream);
    reg.s = &stream;
    beast::flat_buffer buffer;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.header_limit(request_limit);
        parser.body_limit(request_limit);
        // The whole request within the deadline (slow-loris), and idle
        // keep-alive connections go after the same time.
        stream.expires_after(st->limits.read_timeout);
        auto [rec, rn] = co_await http::async_read(stream, buffer, parser, use_tuple);
        if (rec) {
            // eof, idle timeout, oversized or malformed request, or stop():
            // nothing to answer that a probe would read.
            if (rec != http::error::end_of_stream && rec != asio::error::operation_aborted &&
                rec != beast::error::timeout)
                log::debug(mod, "event=read_failed error={}", log::quote(rec.message()));
            break;
        }
        auto req = parser.release();
        auto res = st->answer(req);
        log::debug(mod, "event=request method={} target={} status={}", log::quote(req.method_string()),
                   log::quote(req.target()), res.result_int());
        auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
        if (wec || !res.keep_alive()) break;
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> accept_loop(std::shared_ptr<detail::http_state> st) {
    for (;;) {
        auto [ec, socket] = co_await st->acceptor.async_accept(use_tuple);
        if (st->stopped) co_return;
        if (ec) {
            if (ec == asio::error::operation_aborted) co_return;
            // e.g. EMFILE: back off instead of spinning on the same error.
            log::warn(mod, "event=accept_failed error={}", log::quote(ec.message()));
            asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
            co_await t.async_wait(use_tuple);
            continue;
        }
        if (st->open >= st->limits.max_connections) {
            // Over the cap: closed before anything is read, so a flood of
            // (idle) connections costs an accept and a close each.
            ++st->refused;
            if (st->refused == 1 || st->refused % 1000 == 0)
                log::warn(mod, "event=connection_refused open={} max_connections={} refused_total={}", st->open,
                          st->limits.max_connections, st->refused);
            boost::system::error_code ignored;
            socket.set_option(asio::socket_base::linger(true, 0), ignored);  // RST: no TIME_WAIT pile-up here
            socket.close(ignored);
            continue;
        }
        ++st->open;
        asio::co_spawn(st->acceptor.get_executor(), session(st, std::move(socket)), asio::detached);
    }
}

}  // namespace

http_server::http_server(asio::io_context& ioc, std::string_view listen, http_server_handlers handlers,
                         http_server_limits limits)
    : state_(std::make_shared<detail::http_state>(ioc, std::move(handlers), limits)) {
    tcp::endpoint ep = parse_listen(listen);
    boost::system::error_code ec;
    auto fail = [&](std::string_view what) {
        return std::runtime_error(fmt::format("http listen address '{}': {}: {}", listen, what, ec.message()));
    };
    auto& acc = state_->acceptor;
    if (acc.open(ep.protocol(), ec)) throw fail("open");
    if (acc.set_option(asio::socket_base::reuse_address(true), ec)) throw fail("SO_REUSEADDR");
    if (acc.bind(ep, ec)) throw fail("bind");
    if (acc.listen(asio::socket_base::max_listen_connections, ec)) throw fail("listen");
    port_ = acc.local_endpoint(ec).port();
    if (ec) throw fail("local_endpoint");
    asio::co_spawn(ioc, accept_loop(state_), asio::detached);
    log::info(mod, "event=listening address={} port={}", log::quote(ep.address().to_string()), port_);
}

http_server::~http_server() { stop(); }

std::size_t http_server::open_connections() const noexcept { return state_->open; }
std::uint64_t http_server::refused_connections() const noexcept { return state_->refused; }

void http_server::stop() {
    auto& st = *state_;
    if (st.stopped) return;
    st.stopped = true;
    boost::system::error_code ignored;
    st.acceptor.close(ignored);
    // Closing makes each pending read/write complete with operation_aborted;
    // the coroutines then unregister themselves.
    for (auto* s : st.conns) s->socket().close(ignored);
    log::info(mod, "event=stopped open_connections={}", st.conns.size());
}

}  // namespace outbox::io
