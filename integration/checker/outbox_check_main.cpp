// outbox-check: verifies that every row of an outbox table reached Kafka
// exactly once (or at least once), with the right topic, key, value and
// headers, in per-key order. Exit 0: all good; 1: findings; 2: could not run.
#include "checker.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
    outbox::check::check_options o;
    int wait_seconds = 0;
    std::size_t expect = 0;
    CLI::App app{"outbox-check: compare an outbox table with the Kafka records the relay produced"};
    app.add_option("--postgres", o.postgres, "libpq conninfo")->required();
    app.add_option("--brokers", o.brokers, "Kafka bootstrap servers")->required();
    app.add_option("--table", o.table, "outbox table, schema.table")->capture_default_str();
    app.add_option("--topic-template", o.topic_template, "topic template with {column} placeholders")
        ->capture_default_str();
    app.add_option("--order-column", o.order_column, "column whose values must increase per aggregateid in Kafka");
    app.add_flag("--allow-duplicates", o.allow_duplicates, "at-least-once: duplicates do not fail the check");
    app.add_flag("--check-lsn-headers", o.check_lsn_headers,
                 "require outbox-relay.commit-lsn/seq headers, seq 0..n-1 per commit LSN");
    app.add_option("--wait-seconds", wait_seconds, "re-read until nothing is missing or this many seconds passed");
    auto* expect_opt = app.add_option("--expect", expect, "the table must hold exactly this many rows");
    app.add_option("--samples", o.max_samples, "how many problems to print")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    o.wait = std::chrono::seconds(wait_seconds);
    if (*expect_opt) o.expect = expect;
    try {
        auto rep = outbox::check::run_check(o);
        for (const auto& s : rep.samples) std::fprintf(stderr, "outbox-check: %s\n", s.c_str());
        std::printf("%s\n", rep.summary().c_str());
        return rep.ok() ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
}
