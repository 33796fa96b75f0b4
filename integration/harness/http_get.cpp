#include "http_get.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <regex>
#include <stdexcept>

namespace outbox::it {

http_response http_get(const std::string& host, int port, const std::string& path, std::chrono::milliseconds timeout) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("http_get: socket: ") + std::strerror(errno));
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } c{fd};
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        throw std::runtime_error("http_get: connect " + host + ":" + std::to_string(port) + ": " + std::strerror(errno));
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
        throw std::runtime_error("http_get: send failed");
    std::string raw;
    char buf[8192];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            raw.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) break;
        throw std::runtime_error(std::string("http_get: recv: ") + std::strerror(errno));
    }
    http_response r;
    const auto sp = raw.find(' ');
    if (sp == std::string::npos) throw std::runtime_error("http_get: no status line");
    r.status = std::stoi(raw.substr(sp + 1, 3));
    const auto body = raw.find("\r\n\r\n");
    if (body != std::string::npos) r.body = raw.substr(body + 4);
    return r;
}

std::optional<int> metrics_port_of(const std::string& relay_log) {
    std::smatch m;
    if (std::regex_search(relay_log, m, std::regex(R"(event=metrics_listening port=(\d+))"))) return std::stoi(m[1]);
    return std::nullopt;
}

}  // namespace outbox::it
