#pragma once
// A TCP forwarder on 127.0.0.1 for network fault tests: clients connect to
// port(), each connection is forwarded to the target. blackhole(true) makes
// the path silent the way dropped packets do: nothing is forwarded in either
// direction, nothing is closed, and a close by either side is not passed on
// either, until blackhole(false), when every byte held back (and every
// close) goes through. No root, iptables or network namespace needed.
//
// One thread forwards all connections with non-blocking sockets. Test-side
// code: setup failures throw std::runtime_error.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace outbox::it {

class tcp_proxy {
public:
    // Listens on an ephemeral loopback port; forwards to target_host:target_port
    // (an IPv4 literal).
    tcp_proxy(std::string target_host, int target_port);
    ~tcp_proxy();
    tcp_proxy(const tcp_proxy&) = delete;
    tcp_proxy& operator=(const tcp_proxy&) = delete;

    int port() const noexcept { return port_; }

    // Starts or ends the blackhole; returns once the forwarding thread has
    // seen it (no byte moves after blackhole(true) returns).
    void blackhole(bool on);

    // Drops what clients send (for a replication client: its status
    // updates, so the server never hears what it confirmed), while the
    // server's data still flows. Dropped, not held: ending this mode never
    // delivers them late. Same synchronisation as blackhole().
    void drop_client_bytes(bool on);

    // Connections accepted so far, and bytes forwarded (both directions).
    std::size_t accepted() const noexcept { return accepted_.load(); }
    std::size_t bytes_forwarded() const noexcept { return bytes_.load(); }

private:
    void run();

    std::string host_;
    int target_port_;
    int listen_fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<bool> blackhole_{false};
    std::atomic<bool> hold_up_{false};
    std::atomic<std::size_t> accepted_{0};
    std::atomic<std::size_t> bytes_{0};
    std::atomic<std::uint64_t> rounds_{0};  // forwarding loop iterations
    std::thread thread_;
};

}  // namespace outbox::it
