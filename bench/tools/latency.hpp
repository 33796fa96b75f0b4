#pragma once
// bench_tool latency: commit -> broker append and commit -> consumer receive,
// at a steady rate written by concurrent Postgres clients, plus the first
// record to topics never written before. See latency.cpp for the method.
#include <CLI/CLI.hpp>

#include <string>

namespace outbox::bench {

struct latency_options {
    std::string pg;                        // libpq conninfo of the outbox database
    std::string table;                     // outbox table, schema.table
    std::string brokers;
    std::string topic_prefix;              // topic = topic_prefix + aggregatetype
    std::string aggregatetype = "steady";  // of the steady stream
    std::string probe_prefix = "newtopic";  // aggregatetype of probe i = probe_prefix + i
    double rate = 1000;                    // events (= single-row transactions) per second
    int clients = 4;                       // concurrent writer connections
    double seconds = 60;                   // measured window
    double warmup = 3;                     // written before it, not counted
    int probes = 3;                        // new-topic probes, spread over the window
    int partitions = 3;
    double drain_timeout_s = 30;           // after the last write, wait this long for stragglers
    bool create_time = false;              // topics with CreateTime: the producer's produce() time instead
    bool no_consume = false;               // write only (someone else measures: pg_recvlogical floor)
};

void add_latency_options(CLI::App& app, latency_options& o);

// Runs the measurement and prints its JSON summary. Returns 0 when every
// written record was received once, 7 when some are missing.
int run_latency(const latency_options& o);

}  // namespace outbox::bench
