#include "tcp_proxy.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <list>
#include <stdexcept>
#include <string>
#include <vector>

namespace outbox::it {
namespace {

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

[[noreturn]] void sys_fail(const std::string& what) {
    throw std::runtime_error("tcp_proxy: " + what + ": " + std::strerror(errno));
}

// One direction of a connection: bytes read from `from`, not yet written to `to`.
struct pipe_dir {
    std::string buf;
    bool eof = false;      // `from` closed its side
    bool shut = false;     // we passed the close on (shutdown(to, SHUT_WR))
};

struct conn {
    int down = -1;  // the client
    int up = -1;    // the target
    pipe_dir to_up, to_down;
    bool dead = false;
};

constexpr std::size_t max_buffered = 1 << 20;

// Reads what `from` has into d.buf (bounded). Returns false on a hard error.
bool pull(int from, pipe_dir& d) {
    char chunk[65536];
    while (!d.eof && d.buf.size() < max_buffered) {
        const ssize_t n = ::read(from, chunk, sizeof chunk);
        if (n > 0) {
            d.buf.append(chunk, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            d.eof = true;
            break;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        return false;
    }
    return true;
}

// Writes what d.buf holds to `to`; passes a close on once it is empty.
bool push(int to, pipe_dir& d, std::atomic<std::size_t>& bytes) {
    while (!d.buf.empty()) {
        // MSG_NOSIGNAL: a peer that closed must not SIGPIPE the test.
        const ssize_t n = ::send(to, d.buf.data(), d.buf.size(), MSG_NOSIGNAL);
        if (n > 0) {
            bytes += static_cast<std::size_t>(n);
            d.buf.erase(0, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        if (n < 0 && errno == EINTR) continue;
        return false;
    }
    if (d.eof && !d.shut) {
        ::shutdown(to, SHUT_WR);
        d.shut = true;
    }
    return true;
}

}  // namespace

tcp_proxy::tcp_proxy(std::string target_host, int target_port) : host_(std::move(target_host)), target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) sys_fail("socket");
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) sys_fail("bind");
    if (::listen(listen_fd_, 64) != 0) sys_fail("listen");
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    set_nonblocking(listen_fd_);
    thread_ = std::thread([this] { run(); });
}

tcp_proxy::~tcp_proxy() {
    stop_.store(true);
    thread_.join();
    ::close(listen_fd_);
}

void tcp_proxy::blackhole(bool on) {
    blackhole_.store(on);
    // Two loop rounds later the thread has started a round that read the flag.
    const std::uint64_t r = rounds_.load();
    while (rounds_.load() < r + 2) std::this_thread::yield();
}

void tcp_proxy::drop_client_bytes(bool on) {
    hold_up_.store(on);
    const std::uint64_t r = rounds_.load();
    while (rounds_.load() < r + 2) std::this_thread::yield();
}

void tcp_proxy::run() {
    std::list<conn> conns;
    auto close_conn = [](conn& c) {
        if (c.down >= 0) ::close(c.down);
        if (c.up >= 0) ::close(c.up);
        c.down = c.up = -1;
        c.dead = true;
    };
    while (!stop_.load()) {
        ++rounds_;
        const bool hole = blackhole_.load();
        const bool hold_up = hold_up_.load();
        std::vector<pollfd> fds;
        fds.push_back({listen_fd_, POLLIN, 0});
        // While the path is a blackhole nothing is read or written: the
        // kernels on both ends keep what they have, as with dropped packets.
        if (!hole) {
            for (conn& c : conns) {
                short down_ev = 0, up_ev = 0;
                if (!c.to_up.eof && c.to_up.buf.size() < max_buffered) down_ev |= POLLIN;
                if (!c.to_down.eof && c.to_down.buf.size() < max_buffered) up_ev |= POLLIN;
                if (!c.to_down.buf.empty()) down_ev |= POLLOUT;
                if (!hold_up && !c.to_up.buf.empty()) up_ev |= POLLOUT;
                fds.push_back({c.down, down_ev, 0});
                fds.push_back({c.up, up_ev, 0});
            }
        }
        ::poll(fds.data(), fds.size(), 20);
        if (fds[0].revents & POLLIN) {
            for (;;) {
                int d = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (d < 0) break;
                int u = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                sockaddr_in t{};
                t.sin_family = AF_INET;
                t.sin_port = htons(static_cast<std::uint16_t>(target_port_));
                ::inet_pton(AF_INET, host_.c_str(), &t.sin_addr);
                if (u < 0 || ::connect(u, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
                    if (u >= 0) ::close(u);
                    ::close(d);
                    continue;
                }
                int one = 1;
                ::setsockopt(d, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                ::setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                set_nonblocking(d);
                set_nonblocking(u);
                conns.push_back(conn{d, u, {}, {}, false});
                ++accepted_;
            }
        }
        if (hole) continue;
        for (conn& c : conns) {
            bool ok = pull(c.down, c.to_up) && pull(c.up, c.to_down);
            if (ok && hold_up) c.to_up.buf.clear();  // dropped on the way
            ok = ok && (hold_up || push(c.up, c.to_up, bytes_)) && push(c.down, c.to_down, bytes_);
            // Both sides closed and everything passed on: done.
            if (!ok || (c.to_up.shut && c.to_down.shut)) close_conn(c);
        }
        conns.remove_if([](const conn& c) { return c.dead; });
    }
    for (conn& c : conns) close_conn(c);
}

}  // namespace outbox::it
