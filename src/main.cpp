// outbox-relay: transactional outbox rows from the Postgres WAL to Kafka.
//
//   outbox-relay run --postgres CONNINFO --brokers HOST:PORT[,..] [options] [--print-config]
//   outbox-relay status [options] [--json]        one screen for an operator (exit codes: admin.hpp)
//   outbox-relay setup [options] [--role NAME] [--apply]   SQL for table, publication, slot, role
//
// Options come from flags, then OUTBOX_RELAY_* environment variables, then
// the JSON file given by --config (flags win). The flags and --help come
// from the option table in config.cpp. See README.md.
#include "outbox_relay/config.hpp"
#include "outbox_relay/dedupe.hpp"
#include "outbox_relay/exit_code.hpp"
#include "outbox_relay/io/admin.hpp"
#include "outbox_relay/io/log.hpp"
#include "outbox_relay/io/outbox_cleanup.hpp"
#include "outbox_relay/io/pg_setup.hpp"
#include "outbox_relay/io/relay.hpp"
#include "outbox_relay/secrets.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
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

// Reads a secret from a file: its content with one trailing newline removed.
// The error names the option and the path, never the content.
bool read_secret_file(const std::string& path, const std::string& what, std::string& out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        std::fprintf(stderr, "outbox-relay: invalid configuration: %s: cannot read %s\n", what.c_str(), path.c_str());
        return false;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    out = outbox::secret_from_file_content(ss.str());
    if (out.empty()) {
        std::fprintf(stderr, "outbox-relay: invalid configuration: %s: %s is empty\n", what.c_str(), path.c_str());
        return false;
    }
    return true;
}

// Secrets kept out of argv: --postgres-password-file, and -X prop=@file:PATH
// (also from the environment or the JSON file) for any librdkafka property.
bool resolve_secrets(outbox::relay_config& cfg) {
    if (!cfg.postgres_password_file.empty() &&
        !read_secret_file(cfg.postgres_password_file, "postgres-password-file", cfg.postgres_password))
        return false;
    for (auto& [prop, value] : cfg.kafka) {
        if (auto path = outbox::file_reference(value)) {
            std::string v;
            if (!read_secret_file(std::string(*path), "kafka property " + prop, v)) return false;
            value = std::move(v);
        }
    }
    return true;
}

// The configuration from file < env < flags, secrets read; nullopt after
// printing why (exit 2).
std::optional<outbox::relay_config> load_config(const std::vector<std::pair<std::string, std::string>>& flags,
                                                const std::string& config_path) {
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
            return std::nullopt;
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
        return std::nullopt;
    }
    if (!resolve_secrets(*cfg)) return std::nullopt;
    return std::move(*cfg);
}

int run(const std::vector<std::pair<std::string, std::string>>& flags, const std::string& config_path,
        bool print_config) {
    auto cfg = load_config(flags, config_path);
    if (!cfg) return to_int(exit_code::usage);
    if (print_config) {
        std::printf("%s\n", outbox::effective_config_json(*cfg).c_str());
        return 0;
    }
    namespace log = outbox::io::log;
    log::init(cfg->log_level, cfg->log_fmt);
    std::string tables;
    for (const auto& t : outbox::table_routes(*cfg)) tables += (tables.empty() ? "" : ",") + t.schema + "." + t.table;
    log::info("main",
              "event=starting version={} commit={} postgres={} password_file={} brokers={} slot={} publication={} "
              "tables={} message_prefix={}",
              OUTBOX_RELAY_VERSION, OUTBOX_RELAY_COMMIT, log::quote(outbox::redact_conninfo(cfg->postgres)),
              log::quote(cfg->postgres_password_file), cfg->brokers, cfg->slot, cfg->publication, log::quote(tables),
              log::quote(cfg->message_prefix));

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

// The option table as flags of `cmd`: name, help and default from the table.
struct table_flags {
    std::map<std::string, std::string> values;
    std::map<std::string, CLI::Option*> opts;
    std::vector<std::string> kafka_props;
    std::string config_path;

    void add_to(CLI::App* cmd) {
        for (const auto& spec : outbox::options()) {
            const std::string name(spec.name);
            opts[name] = cmd->add_option("--" + name, values[name], help_of(spec));
        }
        cmd->add_option("-X", kafka_props,
                        "librdkafka property prop=value, repeatable; prop=@file:PATH reads the value from a file "
                        "[env OUTBOX_RELAY_KAFKA_<PROP>, JSON \"kafka\"]");
        cmd->add_option("--config", config_path, "JSON config file (keys = flag names) [env OUTBOX_RELAY_CONFIG]");
    }

    // Only what the user actually passed goes in, in command-line order for -X,
    // so that env and file values are not shadowed by flag defaults.
    std::vector<std::pair<std::string, std::string>> given() {
        std::vector<std::pair<std::string, std::string>> flags;
        for (const auto& spec : outbox::options()) {
            const std::string name(spec.name);
            if (opts[name]->count() > 0) flags.emplace_back(name, values[name]);
        }
        for (const auto& x : kafka_props) flags.emplace_back("X", x);
        return flags;
    }
};

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"outbox-relay: transactional outbox rows from the Postgres WAL to Kafka"};
    app.set_version_flag("--version",
                         std::string("outbox-relay ") + OUTBOX_RELAY_VERSION + " (commit " + OUTBOX_RELAY_COMMIT + ")");
    app.require_subcommand(1);
    auto* run_cmd = app.add_subcommand("run", "stream the outbox table to Kafka");
    table_flags run_flags;
    run_flags.add_to(run_cmd);
    bool print_config = false;
    run_cmd->add_flag("--print-config", print_config,
                      "print the effective configuration (JSON, secrets redacted) and exit 0");

    // Same option table, same layering (file < env < flags) as run; options
    // a subcommand does not use are accepted and ignored.
    auto* status_cmd = app.add_subcommand(
        "status", "one screen for an operator: slot, lag, retained WAL, publication, newest record per topic; "
                  "exit 0 when healthy (codes in README)");
    table_flags status_flags;
    status_flags.add_to(status_cmd);
    bool status_json = false;
    status_cmd->add_flag("--json", status_json, "one JSON object instead of the text screen");

    auto* setup_cmd = app.add_subcommand(
        "setup", "print the SQL for the outbox table, publication, slot and a least-privilege role; --apply runs it");
    table_flags setup_flags;
    setup_flags.add_to(setup_cmd);
    bool apply = false;
    std::string role = "outbox_relay";
    setup_cmd->add_flag("--apply", apply, "run the statements (idempotent: a second --apply changes nothing)");
    setup_cmd->add_option("--role", role, "login role to create and grant (empty: none) (default: outbox_relay)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : to_int(exit_code::usage);
    }

    // One catch at the root: an exception escaping a handler (descriptors
    // exhausted, memory) ends the process with the documented code 1 and a
    // line saying why, never with std::terminate.
    if (*status_cmd)
        return outbox::io::run_guarded([&] {
            auto cfg = load_config(status_flags.given(), status_flags.config_path);
            if (!cfg) return to_int(exit_code::usage);
            outbox::io::log::init("error", cfg->log_fmt);  // librdkafka's complaints only; the report is stdout
            return outbox::io::run_status(*cfg, status_json, stdout);
        });
    if (*setup_cmd)
        return outbox::io::run_guarded([&] {
            auto cfg = load_config(setup_flags.given(), setup_flags.config_path);
            if (!cfg) return to_int(exit_code::usage);
            return outbox::io::run_setup(*cfg, role, apply, stdout);
        });
    return outbox::io::run_guarded(
        [&] { return run(run_flags.given(), run_flags.config_path, print_config); });
}
