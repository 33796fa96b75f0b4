#pragma once
// A child `outbox-relay` process for the integration scenarios: spawned with
// fork/exec, its stdout and stderr appended to one log file, stopped with
// SIGTERM or SIGKILL, and reaped with a deadline. Test-side code: it throws
// std::runtime_error on setup failures instead of returning results.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace outbox::it {

// How a child ended. Exactly one of `code` (normal exit) or `signal` is set.
struct exit_status {
    std::optional<int> code;
    std::optional<int> signal;

    bool exited_ok() const noexcept { return code && *code == 0; }
    // "code=0" or "signal=9", for failure messages.
    std::string describe() const;
};

struct relay_options {
    // Arguments after the program name, e.g. {"run", "--postgres", ...}.
    std::vector<std::string> args;
    // Extra environment entries set on top of the test's own environment.
    std::vector<std::pair<std::string, std::string>> env;
    // Where stdout+stderr go (appended; parent directories are created).
    std::filesystem::path log_path;
    // The binary; defaults to $OUTBOX_IT_RELAY_BINARY if set, else harness
    // relay_binary(), the outbox-relay of this build tree.
    std::filesystem::path binary;
};

// Owns one child process. Not copyable; movable. All calls come from the test
// thread. The destructor SIGKILLs and reaps a child still running, so a failed
// REQUIRE never leaks a relay into the next scenario.
class relay_process {
public:
    // Spawns the child at once. Throws std::runtime_error if the log file
    // cannot be opened or fork fails; an exec failure shows up as exit code 127
    // with a line in the log.
    explicit relay_process(relay_options opts);
    relay_process(relay_process&& other) noexcept;
    relay_process& operator=(relay_process&&) = delete;
    relay_process(const relay_process&) = delete;
    relay_process& operator=(const relay_process&) = delete;
    ~relay_process();

    pid_t pid() const noexcept { return pid_; }

    // True while the child has not been reaped (a zombie is reaped here).
    bool running();

    // Sends SIGTERM (graceful drain). No-op when already reaped.
    void terminate();

    // Sends SIGKILL. No-op when already reaped.
    void kill9();

    // Sends `sig` (e.g. SIGSTOP / SIGCONT to freeze and thaw it). No-op when
    // already reaped.
    void signal(int sig);

    // Waits until the child exits or `deadline` passes; returns its status, or
    // nullopt on timeout (the child is left running). Repeated calls after the
    // exit return the same status.
    std::optional<exit_status> wait_exit(std::chrono::steady_clock::time_point deadline);

    // The whole log file so far (for failure messages); `tail_bytes` > 0 keeps
    // only the last bytes.
    std::string log_text(std::size_t tail_bytes = 0) const;

    const std::filesystem::path& log_path() const noexcept { return opts_.log_path; }

    // VmRSS of the child in KiB from /proc/PID/status; nullopt when gone.
    std::optional<long> rss_kib() const;

private:
    bool reap(bool block);

    relay_options opts_;
    pid_t pid_ = -1;
    std::optional<exit_status> status_;
};

// A log path unique to this run under the build directory, e.g.
// <build>/integration/logs/<stem>-<pid>-<n>.log.
std::filesystem::path relay_log_path(const std::string& stem);

}  // namespace outbox::it
