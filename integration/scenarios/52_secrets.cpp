// Scenario 52 (issue 11): secrets stay secret. The relay gets a password and
// an sslpassword inside the conninfo (from the environment), a password file,
// sasl.password from a file (-X prop=@file:PATH) and ssl.key.password from the
// environment. It delivers, and none of the secrets is in its log, its
// /proc/PID/cmdline, /metrics or --print-config (which shows ********).
#include "harness.hpp"
#include "http_get.hpp"
#include "ops_support.hpp"
#include "scenario_support.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

using namespace outbox::it::scn;
namespace ops = outbox::it::ops;

namespace {

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("52_secrets_not_in_log_cmdline_metrics_or_print_config") {
    scenario sc("52_secrets");
    const std::vector<std::string> secrets{"Pw1-conninfo-" + sc.prefix(), "Pw2-sslpass-" + sc.prefix(),
                                           "Pw3-file-" + sc.prefix(), "Pw4-sasl-" + sc.prefix(),
                                           "Pw5-keypass-" + sc.prefix()};
    const auto dir = std::filesystem::path(outbox::it::build_dir()) / "integration" / (sc.prefix() + "_secrets");
    std::filesystem::create_directories(dir);
    { std::ofstream(dir / "pg_password") << secrets[2] << "\n"; }
    { std::ofstream(dir / "sasl_password") << secrets[3] << "\n"; }
    // The stack trusts loopback, so the passwords are sent (or not) and ignored:
    // what is tested is where they show up.
    const std::string conninfo = env().pg + " password=" + secrets[0] + " sslpassword=" + secrets[1];
    const std::vector<std::pair<std::string, std::string>> envs{
        {"OUTBOX_RELAY_POSTGRES", conninfo}, {"OUTBOX_RELAY_KAFKA_SSL_KEY_PASSWORD", secrets[4]}};

    // No --postgres on the command line: it comes from the environment.
    std::vector<std::string> args{"run",           "--brokers",      env().brokers,
                                  "--slot",        sc.slot(),        "--publication",
                                  sc.publication(), "--table",       sc.table(),
                                  "--topic",       sc.topic_template(), "--metrics-listen",
                                  "127.0.0.1:0",   "--postgres-password-file", (dir / "pg_password").string(),
                                  "-X",            "sasl.password=@file:" + (dir / "sasl_password").string(),
                                  "--log-level",   "debug"};

    // --print-config: the effective configuration, redacted.
    {
        auto pc = args;
        pc.push_back("--print-config");
        auto r = ops::run_command(outbox::it::relay_binary(), pc, true, envs);
        INFO("print-config:\n" << r.output);
        CHECK(r.code == 0);
        CHECK(r.output.find("\"sasl.password\": \"********\"") != std::string::npos);
        CHECK(r.output.find("\"ssl.key.password\": \"********\"") != std::string::npos);
        CHECK(r.output.find(sc.slot()) != std::string::npos);
        for (const auto& s : secrets) CHECK_MESSAGE(r.output.find(s) == std::string::npos, s);
    }

    outbox::it::relay_options o;
    o.args = args;
    o.env = envs;
    o.log_path = outbox::it::relay_log_path("52_secrets-relay");
    outbox::it::relay_process relay(std::move(o));
    sc.wait_streaming(relay);
    outbox_writer w(env().pg, sc.table(), "x", 5, 1);
    for (int i = 0; i < 5; ++i) w.write_txn(4);
    auto rep = sc.check(90s, false, 20);
    INFO(rep.summary());
    CHECK(rep.ok());

    const std::string cmdline = read_all("/proc/" + std::to_string(relay.pid()) + "/cmdline");
    REQUIRE(cmdline.find("run") != std::string::npos);
    auto port = outbox::it::metrics_port_of(relay.log_text());
    REQUIRE(port.has_value());
    const std::string metrics = outbox::it::http_get("127.0.0.1", *port, "/metrics").body;
    relay.terminate();
    REQUIRE(relay.wait_exit(clock::now() + 40s).has_value());
    const std::string log = relay.log_text();
    INFO("log tail:\n" << log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
    // The start line names the conninfo, redacted, and the password file's path.
    CHECK(log.find("event=starting") != std::string::npos);
    CHECK(log.find("password=********") != std::string::npos);
    CHECK(log.find("pg_password") != std::string::npos);
    for (const auto& s : secrets) {
        CAPTURE(s);
        CHECK(log.find(s) == std::string::npos);
        CHECK(cmdline.find(s) == std::string::npos);
        CHECK(metrics.find(s) == std::string::npos);
    }
    std::filesystem::remove_all(dir);
}
