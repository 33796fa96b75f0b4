// outbox-relay: transactional outbox rows from the Postgres WAL to Kafka.
//
//   outbox-relay run --postgres CONNINFO --brokers HOST:PORT[,..] [options]
//
// Options come from flags, then OUTBOX_RELAY_* environment variables, then
// the JSON file given by --config (flags win). See README.md.
#include "outbox_relay/config.hpp"
#include "outbox_relay/io/log.hpp"
#include "outbox_relay/io/pg_setup.hpp"
#include "outbox_relay/io/relay.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

using outbox::io::relay_exit;

// Options that take a value, by flag name (also the JSON key); help text.
struct option_spec {
    const char* name;
    const char* help;
};

constexpr option_spec value_options[] = {
    {"postgres", "libpq conninfo or URI of the database holding the outbox (replication rights needed)"},
    {"brokers", "Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]"},
    {"slot", "logical replication slot (default outbox_relay)"},
    {"publication", "publication of the outbox table (default outbox_relay_pub)"},
    {"table", "outbox table as schema.table (default public.outbox)"},
    {"topic", "topic template with {column} placeholders (default outbox.event.{aggregatetype})"},
    {"id-column", "column holding the event id (default id)"},
    {"aggregatetype-column", "column holding the aggregate type (default aggregatetype)"},
    {"aggregateid-column", "column used as the Kafka key (default aggregateid)"},
    {"type-column", "column holding the event type (default type)"},
    {"payload-column", "column used as the Kafka value (default payload)"},
    {"delivery", "exactly-once | at-least-once (default exactly-once)"},
    {"max-inflight-records", "stop reading the WAL above this many unacked records (default 100000)"},
    {"max-inflight-bytes", "stop reading the WAL above this many unacked bytes (default 268435456)"},
    {"status-interval-ms", "status update interval to Postgres, ms (default 10000)"},
    {"drain-timeout-ms", "how long SIGTERM waits for Kafka acks, ms (default 30000)"},
    {"reconnect-backoff-max-ms", "cap of the reconnect backoff, ms (default 10000)"},
    {"metrics-listen", "HOST:PORT for /metrics, /healthz, /readyz (default off)"},
    {"log-level", "debug | info | warn | error (default info)"},
    {"create-slot", "create the publication and slot when missing: true | false (default true)"},
};

std::map<std::string, std::string> environment() {
    std::map<std::string, std::string> env;
    for (char** e = environ; e && *e; ++e) {
        std::string kv(*e);
        auto eq = kv.find('=');
        if (eq == std::string::npos) continue;
        if (kv.compare(0, 13, "OUTBOX_RELAY_") != 0) continue;
        env.emplace(kv.substr(0, eq), kv.substr(eq + 1));
    }
    return env;
}

int run(const std::vector<std::pair<std::string, std::string>>& flags, const std::string& config_path) {
    auto env = environment();
    std::string file_path = config_path;
    if (file_path.empty()) {
        if (auto it = env.find("OUTBOX_RELAY_CONFIG"); it != env.end()) file_path = it->second;
    }
    std::string file_text;
    if (!file_path.empty()) {
        std::ifstream in(file_path);
        if (!in) {
            std::fprintf(stderr, "outbox-relay: cannot read config file %s (--config)\n", file_path.c_str());
            return static_cast<int>(relay_exit::usage);
        }
        std::ostringstream ss;
        ss << in.rdbuf();
        file_text = ss.str();
    }
    outbox::config_error err;
    auto cfg = outbox::build_config(file_text, file_path, env, flags, &err);
    if (!cfg) {
        std::fprintf(stderr, "outbox-relay: invalid configuration: %s (from %s): %s\n", err.key.c_str(),
                     err.source.c_str(), err.message.c_str());
        return static_cast<int>(relay_exit::usage);
    }
    outbox::io::log::init(cfg->log_level);
    outbox::io::log::info("main", "event=starting version={} postgres={} brokers={} slot={} publication={} table={}.{}",
                          OUTBOX_RELAY_VERSION, outbox::io::log::quote(outbox::redact_conninfo(cfg->postgres)),
                          cfg->brokers, cfg->slot, cfg->publication, cfg->routing.schema, cfg->routing.table);

    auto setup = outbox::io::prepare_postgres(*cfg);
    if (setup.failure != outbox::io::setup_failure::none) {
        outbox::io::log::error("pg/setup", "event=setup_failed exit_code={} reason={}", static_cast<int>(setup.failure),
                               outbox::io::log::quote(setup.message));
        return static_cast<int>(setup.failure);
    }

    boost::asio::io_context ioc(1);
    outbox::io::relay relay(ioc, *cfg);
    try {
        relay.start();
    } catch (const std::exception& e) {
        outbox::io::log::error("main", "event=start_failed reason={}", outbox::io::log::quote(e.what()));
        return static_cast<int>(relay_exit::kafka_config);
    }
    boost::asio::signal_set signals(ioc, SIGTERM, SIGINT);
    std::function<void(const boost::system::error_code&, int)> on_signal;
    on_signal = [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        outbox::io::log::info("main", "event=signal signal={}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        relay.shutdown();
        signals.async_wait(on_signal);  // a second signal is absorbed; drain is bounded
    };
    signals.async_wait(on_signal);

    // The relay holds work (timers, sockets) until it has stopped; then the
    // signal wait is the only thing left.
    while (ioc.run_one() > 0) {
        if (relay.stopped()) break;
    }
    signals.cancel();
    ioc.poll();
    return relay.exit_code();
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"outbox-relay: transactional outbox rows from the Postgres WAL to Kafka"};
    app.set_version_flag("--version", std::string("outbox-relay ") + OUTBOX_RELAY_VERSION);
    app.require_subcommand(1);
    auto* run_cmd = app.add_subcommand("run", "stream the outbox table to Kafka");

    std::map<std::string, std::string> values;
    std::map<std::string, CLI::Option*> opts;
    for (const auto& spec : value_options) {
        opts[spec.name] = run_cmd->add_option(std::string("--") + spec.name, values[spec.name], spec.help);
    }
    std::vector<std::string> kafka_props;
    run_cmd->add_option("-X", kafka_props, "librdkafka property prop=value (repeatable)");
    std::string config_path;
    run_cmd->add_option("--config", config_path, "JSON config file (keys = flag names)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : static_cast<int>(relay_exit::usage);
    }

    // Only what the user actually passed goes in, in command-line order for -X,
    // so that env and file values are not shadowed by flag defaults.
    std::vector<std::pair<std::string, std::string>> flags;
    for (const auto& spec : value_options)
        if (opts[spec.name]->count() > 0) flags.emplace_back(spec.name, values[spec.name]);
    for (const auto& x : kafka_props) flags.emplace_back("X", x);
    return run(flags, config_path);
}
