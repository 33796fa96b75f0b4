#pragma once
// A minimal blocking HTTP/1.1 GET for tests (the relay's /metrics, /healthz,
// /readyz) on a loopback port. Test-side code: connection failures throw
// std::runtime_error.
#include <chrono>
#include <optional>
#include <string>

namespace outbox::it {

struct http_response {
    int status = 0;
    std::string body;
};

// GET http://host:port<path> with Connection: close; the whole response.
http_response http_get(const std::string& host, int port, const std::string& path,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

// The port the relay logged as "event=metrics_listening port=N", if it did.
std::optional<int> metrics_port_of(const std::string& relay_log);

}  // namespace outbox::it
