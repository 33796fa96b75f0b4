// outbox-relay: transactional outbox rows from the Postgres WAL to Kafka.
//
//   outbox-relay run --postgres CONNINFO --brokers HOST:PORT[,..] [options]
//
// Options come from flags, then OUTBOX_RELAY_* environment variables, then
// the JSON file given by --config (flags win). The flags and --help come
// from the option table in config.cpp. See README.md.
#include "outbox_relay/config.hpp"
#include "outbox_relay/dedupe.hpp"
#include "outbox_relay/exit_code.hpp"
#include "outbox_relay/io/log.hpp"
#include "outbox_relay/io/outbox_cleanup.hpp"
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

using outbox::exit_code;
using outbox::to_int;

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

// The option's help line: what it does, where else it can be set, its default.
std::string help_of(const outbox::option_spec& o) {
    std::string h(o.help);
    h += " [env " + outbox::env_name_of(o.name) + "]";
    if (o.required) {
        h += " (required)";
    } else {
        const std::string d = o.show(outbox::relay_config{});
        h += d.empty() ? " (default: none)" : " (default: " + d + ")";
    }
    return h;
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
            return to_int(exit_code::usage);
        }
        std::ostringstream ss;
        ss << in.rdbuf();
        file_text = ss.str();
    }
    auto cfg = outbox::build_config(file_text, file_path, env, flags);
    if (!cfg) {
        const auto& e = cfg.error();
        std::fprintf(stderr, "outbox-relay: invalid configuration: %s (from %s): %s\n", e.field.c_str(),
                     e.source.empty() ? "defaults" : e.source.c_str(), e.message.c_str());
        return to_int(exit_code::usage);
    }
    namespace log = outbox::io::log;
    log::init(cfg->log_level);
    std::string tables;
    for (const auto& t : outbox::table_routes(*cfg)) tables += (tables.empty() ? "" : ",") + t.schema + "." + t.table;
    log::info("main",
              "event=starting version={} postgres={} brokers={} slot={} publication={} tables={} message_prefix={}",
              OUTBOX_RELAY_VERSION, log::quote(outbox::redact_conninfo(cfg->postgres)), cfg->brokers, cfg->slot,
              cfg->publication, log::quote(tables), log::quote(cfg->message_prefix));

    // Refused before pg_setup creates anything: a slot made for a refused
    // start would hold WAL.
    if (cfg->cleanup_after.count() > 0) {
        auto c = outbox::io::check_cleanup_tables(outbox::io::cleanup_options_of(*cfg));
        if (c.failure != exit_code::ok) {
            log::error("cleanup", "event=setup_failed exit_code={} reason={}", to_int(c.failure), log::quote(c.message));
            return to_int(c.failure);
        }
    }

    auto setup = outbox::io::prepare_postgres(*cfg);
    if (setup.failure != exit_code::ok) {
        log::error("pg/setup", "event=setup_failed exit_code={} reason={}", to_int(setup.failure),
                   log::quote(setup.message));
        return to_int(setup.failure);
    }

    // Matched by OID from now on too (a renamed table is still the outbox).
    if (cfg->tables.empty()) cfg->tables = outbox::table_routes(*cfg);
    for (std::size_t i = 0; i < cfg->tables.size() && i < setup.table_oids.size(); ++i)
        cfg->tables[i].relid = setup.table_oids[i];
    boost::asio::io_context ioc(1);
    outbox::io::relay relay(ioc, *cfg);
    relay.set_slot_created(setup.slot_created);
    relay.set_transactional_id(outbox::transactional_id_of(setup.system_id, setup.database, cfg->slot));
    try {
        relay.start();
    } catch (const outbox::io::start_error& e) {
        log::error("main", "event=start_failed exit_code={} reason={}", to_int(e.code), log::quote(e.what()));
        return to_int(e.code);
    }
    boost::asio::signal_set signals(ioc, SIGTERM, SIGINT);
    std::function<void(const boost::system::error_code&, int)> on_signal;
    on_signal = [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        log::info("main", "event=signal signal={}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
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

    // Every option of the table is a flag; the table gives name, help and default.
    std::map<std::string, std::string> values;
    std::map<std::string, CLI::Option*> opts;
    for (const auto& spec : outbox::options()) {
        const std::string name(spec.name);
        opts[name] = run_cmd->add_option("--" + name, values[name], help_of(spec));
    }
    std::vector<std::string> kafka_props;
    run_cmd->add_option("-X", kafka_props,
                        "librdkafka property prop=value, repeatable [env OUTBOX_RELAY_KAFKA_<PROP>, JSON \"kafka\"]");
    std::string config_path;
    run_cmd->add_option("--config", config_path, "JSON config file (keys = flag names) [env OUTBOX_RELAY_CONFIG]");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : to_int(exit_code::usage);
    }

    // Only what the user actually passed goes in, in command-line order for -X,
    // so that env and file values are not shadowed by flag defaults.
    std::vector<std::pair<std::string, std::string>> flags;
    for (const auto& spec : outbox::options()) {
        const std::string name(spec.name);
        if (opts[name]->count() > 0) flags.emplace_back(name, values[name]);
    }
    for (const auto& x : kafka_props) flags.emplace_back("X", x);

    // One catch at the root: an exception escaping a handler (descriptors
    // exhausted, memory) ends the process with the documented code 1 and a
    // line saying why, never with std::terminate.
    return outbox::io::run_guarded([&] { return run(flags, config_path); });
}
