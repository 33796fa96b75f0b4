#include "relay_process.hpp"

#include "harness.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;


namespace outbox::it {

std::string exit_status::describe() const {
    if (code) return "code=" + std::to_string(*code);
    if (signal) return "signal=" + std::to_string(*signal);
    return "unknown";
}

std::filesystem::path relay_log_path(const std::string& stem) {
    static std::atomic<int> counter{0};
    std::filesystem::path dir = build_dir() + "/integration/logs";
    return dir / (stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".log");
}

relay_process::relay_process(relay_options opts) : opts_(std::move(opts)) {
    if (opts_.binary.empty()) {
        // OUTBOX_IT_RELAY_BINARY runs the scenarios against another build of
        // the relay (e.g. the lead's build/ while this tree is half-built).
        const char* over = std::getenv("OUTBOX_IT_RELAY_BINARY");
        opts_.binary = over && *over ? std::string(over) : relay_binary();
    }
    if (opts_.log_path.empty()) opts_.log_path = relay_log_path("relay");
    std::filesystem::create_directories(opts_.log_path.parent_path());

    // Everything the child needs is built before fork: the test process runs
    // librdkafka threads, so between fork and exec only async-signal-safe
    // calls are allowed (no malloc, no setenv).
    std::map<std::string, std::string> env;
    for (char** e = environ; e && *e; ++e) {
        std::string_view kv = *e;
        auto eq = kv.find('=');
        if (eq == std::string_view::npos) continue;
        env[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
    }
    for (const auto& [k, v] : opts_.env) env[k] = v;
    std::vector<std::string> env_strings;
    env_strings.reserve(env.size());
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);

    std::string bin = opts_.binary.string();
    std::vector<std::string> arg_strings;
    arg_strings.push_back(bin);
    for (const auto& a : opts_.args) arg_strings.push_back(a);
    std::vector<char*> argv;
    for (auto& s : arg_strings) argv.push_back(s.data());
    argv.push_back(nullptr);

    int fd = ::open(opts_.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("relay_process: cannot open log " + opts_.log_path.string() + ": " + std::strerror(errno));
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
        int e = errno;
        ::close(fd);
        throw std::runtime_error(std::string("relay_process: fork failed: ") + std::strerror(e));
    }
    if (pid == 0) {
        // Child. If the test binary dies (crash, ctest timeout) the relay must
        // not survive into the next scenario and hold its slot.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(126);
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
        ::execve(argv[0], argv.data(), envp.data());
        static const char msg[] = "relay_process: execve failed\n";
        [[maybe_unused]] auto w = ::write(STDERR_FILENO, msg, sizeof msg - 1);
        ::_exit(127);
    }
    ::close(fd);
    pid_ = pid;
}

relay_process::relay_process(relay_process&& other) noexcept
    : opts_(std::move(other.opts_)), pid_(other.pid_), status_(std::move(other.status_)) {
    other.pid_ = -1;
    other.status_.reset();
}

relay_process::~relay_process() {
    if (pid_ > 0 && !status_) {
        ::kill(pid_, SIGKILL);
        reap(true);
    }
}

bool relay_process::reap(bool block) {
    if (pid_ <= 0) return true;
    if (status_) return true;
    int st = 0;
    pid_t r;
    do {
        r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return false;
    exit_status s;
    if (r < 0) {
        s.code = -1;  // not our child any more; should not happen
    } else if (WIFEXITED(st)) {
        s.code = WEXITSTATUS(st);
    } else if (WIFSIGNALED(st)) {
        s.signal = WTERMSIG(st);
    }
    status_ = s;
    return true;
}

bool relay_process::running() { return pid_ > 0 && !reap(false); }

void relay_process::terminate() {
    if (running()) ::kill(pid_, SIGTERM);
}

void relay_process::signal(int sig) {
    if (running()) ::kill(pid_, sig);
}

void relay_process::kill9() {
    if (running()) ::kill(pid_, SIGKILL);
}

std::optional<exit_status> relay_process::wait_exit(std::chrono::steady_clock::time_point deadline) {
    if (pid_ <= 0) return std::nullopt;
    for (;;) {
        if (reap(false)) return status_;
        if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        // waitpid has no timeout; a short poll keeps this simple and the
        // deadline exact to within 20 ms.
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

std::string relay_process::log_text(std::size_t tail_bytes) const {
    std::ifstream in(opts_.log_path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    if (tail_bytes > 0 && s.size() > tail_bytes) s = "...\n" + s.substr(s.size() - tail_bytes);
    return s;
}

std::optional<long> relay_process::rss_kib() const {
    if (pid_ <= 0 || status_) return std::nullopt;
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return std::nullopt;
}

}  // namespace outbox::it
