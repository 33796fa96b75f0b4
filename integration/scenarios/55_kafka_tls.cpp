// Scenario 55 (issue 11): Kafka over TLS. The test makes a CA and a broker
// certificate (SAN IP:127.0.0.1) with openssl, packs them into a PKCS12
// keystore, and runs a broker of its own (the stack's Kafka jars, KRaft, one
// node) with an SSL listener; the default stack is untouched. A relay with
// -X security.protocol=ssl and the CA delivers every row exactly once over
// it; a relay trusting another CA delivers nothing and logs the cause
// (certificate verify failed), and /readyz says it has no broker connection.
#include "harness.hpp"
#include "http_get.hpp"
#include "ops_support.hpp"
#include "scenario_support.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

using namespace outbox::it::scn;
namespace ops = outbox::it::ops;
namespace fs = std::filesystem;

namespace {

void sh(const std::string& cmd) {
    auto r = ops::run_command("/bin/sh", {"-c", cmd}, true);
    if (r.code != 0) throw std::runtime_error("failed (" + std::to_string(r.code) + "): " + cmd + "\n" + r.output);
}

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

// The stack's Kafka jars (integration/stack.sh resolves them at `up`).
std::string kafka_libs() {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    const char* ver = std::getenv("OUTBOX_TEST_KAFKA_VERSION");
    const std::string root = xdg && *xdg ? xdg : std::string(home ? home : "/root") + "/.cache";
    const std::string dir = root + "/outbox-relay/kafka-" + (ver && *ver ? ver : "3.9.1") + "/libs";
    if (!fs::exists(dir)) throw std::runtime_error("Kafka jars not found at " + dir + " (run stack.sh up)");
    return dir;
}

}  // namespace

TEST_CASE("55_kafka_ssl_listener") {
    scenario sc("55_kafka_tls");
    const fs::path dir = fs::path(outbox::it::build_dir()) / "integration" / (sc.prefix() + "_ktls");
    fs::create_directories(dir / "data");
    const std::string d = dir.string();
    const std::string ks_pass = "ks-" + sc.prefix();
    sh("cd " + d + " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=outbox-it-kafka-ca' "
       "-keyout ca.key -out ca.crt 2>&1 && "
       "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=outbox-it-other-ca' "
       "-keyout other.key -out other.crt 2>&1 && "
       "openssl req -newkey rsa:2048 -nodes -subj '/CN=127.0.0.1' -keyout broker.key -out broker.csr 2>&1 && "
       "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && "
       "openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext "
       "-out broker.crt 2>&1 && "
       "openssl pkcs12 -export -name broker -in broker.crt -inkey broker.key -certfile ca.crt "
       "-passout pass:" + ks_pass + " -out broker.p12 2>&1");

    // A one-node KRaft broker: SSL for clients, PLAINTEXT between its own broker and controller.
    const int ssl_port = free_port(), internal_port = free_port(), controller_port = free_port();
    {
        std::ofstream p(dir / "server.properties");
        p << "process.roles=broker,controller\nnode.id=1\n"
          << "controller.quorum.voters=1@127.0.0.1:" << controller_port << "\n"
          << "listeners=SSL://127.0.0.1:" << ssl_port << ",INTERNAL://127.0.0.1:" << internal_port
          << ",CONTROLLER://127.0.0.1:" << controller_port << "\n"
          << "advertised.listeners=SSL://127.0.0.1:" << ssl_port << ",INTERNAL://127.0.0.1:" << internal_port << "\n"
          << "listener.security.protocol.map=SSL:SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
          << "inter.broker.listener.name=INTERNAL\ncontroller.listener.names=CONTROLLER\n"
          << "ssl.keystore.type=PKCS12\nssl.keystore.location=" << d << "/broker.p12\n"
          << "ssl.keystore.password=" << ks_pass << "\nssl.key.password=" << ks_pass << "\n"
          << "log.dirs=" << d << "/data\nauto.create.topics.enable=true\nnum.partitions=1\n"
          << "default.replication.factor=1\noffsets.topic.replication.factor=1\noffsets.topic.num.partitions=1\n"
          << "transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n"
          << "transaction.state.log.num.partitions=1\ngroup.initial.rebalance.delay.ms=0\n";
    }
    const std::string cp = kafka_libs() + "/*";
    sh("java -Xmx256m -cp '" + cp + "' kafka.tools.StorageTool format -t " +
       "b3V0Ym94LXJlbGF5LXRscw -c " + d + "/server.properties > " + d + "/format.log 2>&1");
    outbox::it::relay_options bo;
    bo.binary = "/usr/bin/java";
    bo.args = {"-Xmx384m", "-Xms64m", "-XX:+UseG1GC", "-Djava.awt.headless=true", "-Dkafka.logs.dir=" + d,
               "-cp", cp, "kafka.Kafka", d + "/server.properties"};
    bo.log_path = dir / "broker.log";
    outbox::it::relay_process broker(std::move(bo));
    struct stop_broker {
        outbox::it::relay_process& b;
        fs::path dir;
        ~stop_broker() {
            b.terminate();
            if (!b.wait_exit(std::chrono::steady_clock::now() + 30s)) b.kill9();
            std::error_code ec;
            if (!std::getenv("OUTBOX_IT_KEEP")) fs::remove_all(dir, ec);
        }
    } stop{broker, dir};

    const std::string brokers = "127.0.0.1:" + std::to_string(ssl_port);
    const std::vector<std::string> kcat_tls{"-b", brokers, "-X", "security.protocol=ssl", "-X",
                                            "ssl.ca.location=" + d + "/ca.crt"};
    // Ready = a metadata request over TLS, verified against the CA, lists broker 1.
    bool up = wait_until(clock::now() + 120s, [&] {
        if (!broker.running()) return true;
        auto a = kcat_tls;
        a.insert(a.begin(), "-L");
        a.insert(a.end(), {"-m", "5"});
        return ops::run_command("/usr/bin/kcat", a, true).output.find("broker 1 at") != std::string::npos;
    }, 1000ms);
    INFO("broker log:\n" << broker.log_text(3000));
    REQUIRE(broker.running());
    REQUIRE(up);

    // The relay over TLS, checking the broker's certificate against the CA.
    auto args = sc.relay_args({"-X", "security.protocol=ssl", "-X", "ssl.ca.location=" + d + "/ca.crt",
                               "--metrics-listen", "127.0.0.1:0"});
    for (std::size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == "--brokers") args[i + 1] = brokers;
    outbox::it::relay_options ro;
    ro.args = args;
    ro.log_path = outbox::it::relay_log_path("55_kafka_tls-relay");
    outbox::it::relay_process relay(std::move(ro));
    sc.wait_streaming(relay);
    outbox_writer w(env().pg, sc.table(), "k", 6, 1);
    for (int i = 0; i < 10; ++i) w.write_txn(5);

    // Every id arrives, once, read back over TLS.
    std::set<std::string> want;
    for (const auto& row : sc.admin().query("SELECT id::text FROM " + sc.table())) want.insert(*row[0]);
    REQUIRE(want.size() == 50);
    std::multiset<std::string> got;
    bool all = wait_until(clock::now() + 90s, [&] {
        auto a = kcat_tls;
        a.insert(a.begin(), "-C");
        a.insert(a.end(), {"-t", sc.topic("type0"), "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed",
                           "-f", "%h\\n"});
        auto r = ops::run_command("/usr/bin/kcat", a);
        got.clear();
        std::size_t pos = 0;
        // Headers print as id=<uuid>,type=...,...: keep the id.
        while ((pos = r.output.find("id=", pos)) != std::string::npos) {
            if (pos > 0 && r.output[pos - 1] != '\n' && r.output[pos - 1] != ',') { pos += 3; continue; }
            got.insert(r.output.substr(pos + 3, 36));
            pos += 3;
        }
        return got.size() >= want.size();
    }, 1000ms);
    INFO("relay log:\n" << relay.log_text(3000));
    CHECK(all);
    CHECK(got.size() == want.size());
    CHECK(std::set<std::string>(got.begin(), got.end()) == want);
    relay.terminate();
    auto st = relay.wait_exit(clock::now() + 40s);
    REQUIRE(st.has_value());
    CHECK(st->exited_ok());

    // Trusting another CA: nothing is delivered, the log names the cause, not ready.
    for (std::size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == "-X" && args[i + 1].rfind("ssl.ca.location=", 0) == 0)
            args[i + 1] = "ssl.ca.location=" + d + "/other.crt";
    outbox::it::relay_options wo;
    wo.args = args;
    wo.log_path = outbox::it::relay_log_path("55_kafka_tls-wrong-ca");
    outbox::it::relay_process wrong(std::move(wo));
    bool named = wait_until(clock::now() + 60s, [&] {
        return wrong.log_text().find("certificate verify failed") != std::string::npos;
    });
    INFO("wrong-CA relay log:\n" << wrong.log_text(3000));
    CHECK(named);
    auto port = outbox::it::metrics_port_of(wrong.log_text());
    REQUIRE(port.has_value());
    std::string why;
    bool unready = wait_until(clock::now() + 30s, [&] {
        auto r = outbox::it::http_get("127.0.0.1", *port, "/readyz");
        why = r.body;
        return r.status == 503;
    });
    CHECK_MESSAGE(unready, why);
    wrong.terminate();
    wrong.wait_exit(clock::now() + 40s);
}
