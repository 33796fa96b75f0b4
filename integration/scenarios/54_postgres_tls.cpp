// Scenario 54 (issue 11): Postgres over TLS. The test makes a CA and a server
// certificate for "localhost" with openssl, turns ssl=on in the stack's
// Postgres (ALTER SYSTEM + reload; reset at the end), and starts relays with
// sslmode=verify-full: with the right CA the relay streams over TLS (the
// walsender's pg_stat_ssl row says so) and delivers; with another CA, or a
// host name the certificate does not name, it exits 10 with a log line that
// names the cause.
#include "harness.hpp"
#include "ops_support.hpp"
#include "scenario_support.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>

using namespace outbox::it::scn;
namespace ops = outbox::it::ops;
namespace fs = std::filesystem;

namespace {

void sh(const std::string& cmd) {
    auto r = ops::run_command("/bin/sh", {"-c", cmd}, true);
    if (r.code != 0) throw std::runtime_error("failed (" + std::to_string(r.code) + "): " + cmd + "\n" + r.output);
}

// CA + server certificate (SAN DNS:localhost) + an unrelated CA, in `dir`.
void make_certs(const fs::path& dir) {
    const std::string d = dir.string();
    sh("cd " + d + " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=outbox-it-ca' "
       "-keyout ca.key -out ca.crt 2>&1");
    sh("cd " + d + " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=outbox-it-other-ca' "
       "-keyout other.key -out other.crt 2>&1");
    sh("cd " + d + " && openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' -keyout server.key "
       "-out server.csr 2>&1 && printf 'subjectAltName=DNS:localhost\\n' > san.ext && "
       "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext "
       "-out server.crt 2>&1");
    // Postgres (the postgres OS user when the test runs as root) must own its key, mode 0600.
    if (::geteuid() == 0) sh("chown postgres " + d + "/server.key " + d + "/server.crt && chmod 755 " + d);
    sh("chmod 600 " + d + "/server.key");
}

}  // namespace

TEST_CASE("54_postgres_verify_full") {
    scenario sc("54_pg_tls");
    pg& db = sc.admin();
    const fs::path dir = fs::path("/tmp") / (sc.prefix() + "_tls");
    fs::create_directories(dir);
    make_certs(dir);

    struct ssl_off {
        pg& db;
        fs::path dir;
        ~ssl_off() {
            try {
                db.exec("ALTER SYSTEM RESET ssl");
                db.exec("ALTER SYSTEM RESET ssl_cert_file");
                db.exec("ALTER SYSTEM RESET ssl_key_file");
                db.exec("SELECT pg_reload_conf()");
            } catch (...) {
            }
            std::error_code ec;
            fs::remove_all(dir, ec);
        }
    } reset{db, dir};
    db.exec("ALTER SYSTEM SET ssl_cert_file = '" + (dir / "server.crt").string() + "'");
    db.exec("ALTER SYSTEM SET ssl_key_file = '" + (dir / "server.key").string() + "'");
    db.exec("ALTER SYSTEM SET ssl = on");
    db.exec("SELECT pg_reload_conf()");
    const std::string tls = env().pg + " hostaddr=127.0.0.1 sslmode=verify-full";
    const std::string good = tls + " host=localhost sslrootcert=" + (dir / "ca.crt").string();
    REQUIRE_MESSAGE(wait_until(clock::now() + 20s,
                               [&] {
                                   pg probe(good);
                                   return probe.scalar("SELECT ssl::text FROM pg_stat_ssl WHERE pid = "
                                                       "pg_backend_pid()") == std::optional<std::string>("true");
                               }),
                    "Postgres did not start serving TLS after the reload");

    // The right CA and host name: streams over TLS and delivers.
    auto& relay = sc.start_relay_via(good, "verify-full");
    sc.wait_streaming(relay);
    const auto pid = sc.slot_info().active_pid;
    REQUIRE(pid.has_value());
    CHECK(db.scalar("SELECT ssl::text FROM pg_stat_ssl WHERE pid = " + std::to_string(*pid)) ==
          std::optional<std::string>("true"));
    outbox_writer w(env().pg, sc.table(), "t", 4, 1);
    for (int i = 0; i < 5; ++i) w.write_txn(4);
    auto rep = sc.check(90s, false, 20);
    INFO(rep.summary());
    CHECK(rep.ok());
    relay.terminate();
    REQUIRE(relay.wait_exit(clock::now() + 40s).has_value());

    // A CA that did not sign the server's certificate: refused, exit 10, cause named.
    auto& wrong_ca = sc.start_relay_via(tls + " host=localhost sslrootcert=" + (dir / "other.crt").string(),
                                        "wrong-ca");
    auto st = wrong_ca.wait_exit(clock::now() + 60s);
    REQUIRE(st.has_value());
    INFO("wrong CA log:\n" << wrong_ca.log_text(3000));
    CHECK(st->code == std::optional<int>(10));
    CHECK(wrong_ca.log_text().find("certificate verify failed") != std::string::npos);

    // A host name the certificate does not name: refused, exit 10, cause named.
    auto& wrong_host = sc.start_relay_via(tls + " host=wrong-host.invalid sslrootcert=" + (dir / "ca.crt").string(),
                                          "wrong-host");
    st = wrong_host.wait_exit(clock::now() + 60s);
    REQUIRE(st.has_value());
    INFO("wrong host log:\n" << wrong_host.log_text(3000));
    CHECK(st->code == std::optional<int>(10));
    const std::string wl = wrong_host.log_text();
    CHECK(wl.find("does not match host name") != std::string::npos);
    CHECK(wl.find("wrong-host.invalid") != std::string::npos);
}
