// bench_tool latency — how long an outbox row takes from its commit to the
// broker's log and to a consumer, at a steady rate.
//
// Method:
//  * Commit time: each row's payload carries `ts_us`, Postgres'
//    clock_timestamp() (µs, CLOCK_REALTIME) evaluated inside the INSERT of a
//    single-row autocommit transaction, i.e. right before its COMMIT. The
//    commit itself (WAL flush) follows, so figures include Postgres' commit
//    time; the writer reports that part separately (insert_to_commit_ack: from
//    ts_us until the client has the commit acknowledgement).
//  * Broker append: topics are created with message.timestamp.type=
//    LogAppendTime, so every record's timestamp is the broker's append time.
//    It has millisecond resolution: append_us = ts_ms * 1000 + 500 (the middle
//    of the millisecond, unbiased, ±0.5 ms).
//  * Consumer receive: an assign()-only consumer (no group protocol, which
//    librdkafka 2.0.2 cannot speak to Kafka 4) with isolation.level=
//    read_committed takes now_us() when the record is handed to it. If the
//    producer under test ever writes in Kafka transactions, this is when a
//    consumer can see the record.
//  * Rate: `clients` connections, client j writing events n = j, j+C, ... at
//    the open-loop schedule t0 + n / rate (a slow commit delays that client,
//    not the schedule; the achieved rate is reported).
//  * New topics: `probes` rows, spread over the measured window, each with its
//    own aggregatetype, i.e. a topic that exists (created here, empty) but was
//    never written. Their latency is the first-record latency; the steady
//    records committed in the second after each probe are reported apart from
//    the others, to see whether the new topic delayed them.
#include "latency.hpp"

#include "bench_util.hpp"

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <iostream>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace outbox::bench {

namespace {

using json = nlohmann::json;

constexpr std::int64_t probe_base = 1'000'000'000'000;  // n of probe i = probe_base + i

struct written {
    std::int64_t n;
    std::int64_t ts_us;   // clock_timestamp() in the INSERT
    std::int64_t ack_us;  // client has the commit acknowledgement
    std::int64_t lag_us;  // how late against the schedule the statement was sent
};

struct received {
    std::int64_t n;
    std::int64_t ts_us;
    std::int64_t append_us;
    std::int64_t recv_us;
    bool log_append_time;
};

// `"key": <digits>` in the jsonb text Postgres prints ("n": 1, "ts_us": ...).
std::optional<std::int64_t> json_int(std::string_view text, std::string_view key) {
    std::string pat = "\"" + std::string(key) + "\": ";
    auto at = text.find(pat);
    if (at == std::string_view::npos) return std::nullopt;
    std::int64_t v = 0;
    const char* b = text.data() + at + pat.size();
    auto [p, ec] = std::from_chars(b, text.data() + text.size(), v);
    if (ec != std::errc{} || p == b) return std::nullopt;
    return v;
}

PGconn* connect_pg(const std::string& conninfo) {
    PGconn* c = PQconnectdb(conninfo.c_str());
    if (PQstatus(c) != CONNECTION_OK) {
        std::string e = PQerrorMessage(c);
        PQfinish(c);
        throw std::runtime_error("postgres: " + e);
    }
    return c;
}

std::string insert_sql(const std::string& table) {
    // 'pad' gives the ~300-byte payload of the catch-up backlog.
    return "INSERT INTO " + table +
           " (id, aggregatetype, aggregateid, type, payload) VALUES (gen_random_uuid(), $1, $2, 'BenchEvent', "
           "jsonb_build_object('n', $3::bigint, 'ts_us', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, "
           "'pad', repeat('x', 250))) RETURNING (payload->>'ts_us')::bigint";
}

// One insert; false (and the error on stderr, rate-limited by the caller) on failure.
bool insert_one(PGconn* c, const std::string& aggregatetype, std::int64_t n, written& w, std::string& err) {
    std::string key = "agg-" + std::to_string(n % 97);
    std::string ns = std::to_string(n);
    const char* params[] = {aggregatetype.c_str(), key.c_str(), ns.c_str()};
    PGresult* r = PQexecPrepared(c, "ins", 3, params, nullptr, nullptr, 0);
    w.ack_us = now_us();
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok) {
        w.n = n;
        w.ts_us = std::stoll(PQgetvalue(r, 0, 0));
    } else {
        err = PQresultErrorMessage(r);
    }
    PQclear(r);
    return ok;
}

void prepare(PGconn* c, const std::string& table) {
    PGresult* r = PQprepare(c, "ins", insert_sql(table).c_str(), 3, nullptr);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    std::string e = PQresultErrorMessage(r);
    PQclear(r);
    if (!ok) throw std::runtime_error("prepare insert: " + e);
}

json stats_ms(std::vector<double> v_us) {
    if (v_us.empty()) return json{{"n", 0}};
    std::sort(v_us.begin(), v_us.end());
    double sum = std::accumulate(v_us.begin(), v_us.end(), 0.0);
    auto ms = [](double us) { return std::round(us / 10.0) / 100.0; };  // 0.01 ms
    return json{{"n", v_us.size()},
                {"p50", ms(percentile(v_us, 50))},
                {"p90", ms(percentile(v_us, 90))},
                {"p99", ms(percentile(v_us, 99))},
                {"p999", ms(percentile(v_us, 99.9))},
                {"max", ms(v_us.back())},
                {"mean", ms(sum / static_cast<double>(v_us.size()))}};
}

// Quantiles for a CDF plot: [latency_ms, fraction] pairs, dense in the tail.
json cdf_ms(std::vector<double> v_us) {
    json out = json::array();
    if (v_us.empty()) return out;
    std::sort(v_us.begin(), v_us.end());
    std::vector<double> ps;
    for (int i = 1; i <= 99; ++i) ps.push_back(i);
    for (double p : {99.5, 99.9, 99.95, 99.99, 100.0}) ps.push_back(p);
    for (double p : ps) out.push_back({std::round(percentile(v_us, p) / 10.0) / 100.0, p / 100.0});
    return out;
}

}  // namespace

void add_latency_options(CLI::App& app, latency_options& o) {
    app.add_option("--pg", o.pg, "libpq conninfo")->required();
    app.add_option("--table", o.table, "outbox table (schema.table)")->required();
    app.add_option("--brokers", o.brokers)->required();
    app.add_option("--topic-prefix", o.topic_prefix, "topic = prefix + aggregatetype")->required();
    app.add_option("--aggregatetype", o.aggregatetype);
    app.add_option("--probe-prefix", o.probe_prefix);
    app.add_option("--rate", o.rate, "events per second (single-row transactions)");
    app.add_option("--clients", o.clients);
    app.add_option("--seconds", o.seconds, "measured window");
    app.add_option("--warmup", o.warmup, "seconds written before the window, not counted");
    app.add_option("--probes", o.probes, "first records to never-written topics");
    app.add_option("--partitions", o.partitions);
    app.add_option("--drain-timeout-s", o.drain_timeout_s);
    app.add_flag("--create-time", o.create_time,
                 "diagnosis: topics with message.timestamp.type=CreateTime, so 'append' is the producer's "
                 "produce() call (librdkafka stamps it there), not the broker's append");
    app.add_flag("--no-consume", o.no_consume,
                 "only write (no topics, no consumer); prints the schedule and writer figures");
}

int run_latency(const latency_options& o) {
    if (o.rate <= 0 || o.clients <= 0 || o.seconds <= 0) throw std::runtime_error("latency: bad rate/clients/seconds");
    const std::string steady_topic = o.topic_prefix + o.aggregatetype;
    std::vector<std::string> probe_types, topics{steady_topic};
    for (int i = 0; i < o.probes; ++i) {
        probe_types.push_back(o.probe_prefix + std::to_string(i));
        topics.push_back(o.topic_prefix + probe_types.back());
    }
    if (!o.no_consume)
        create_topics(o.brokers, topics, o.partitions,
                      {{"message.timestamp.type", o.create_time ? "CreateTime" : "LogAppendTime"}});

    // ---- consumer: assign() every partition from the beginning (fresh topics).
    rk_ptr rk = o.no_consume ? nullptr : make_handle(RD_KAFKA_CONSUMER, o.brokers,
                            {{"group.id", "bench_latency_" + std::to_string(getpid())},
                             {"enable.auto.commit", "false"},
                             {"enable.auto.offset.store", "false"},
                             {"isolation.level", "read_committed"},
                             {"allow.auto.create.topics", "false"},
                             {"fetch.wait.max.ms", "100"}});
    if (rk) {
        rd_kafka_poll_set_consumer(rk.get());
        rd_kafka_topic_partition_list_t* tpl = rd_kafka_topic_partition_list_new(8);
        for (const auto& t : topics)
            for (int p = 0; p < o.partitions; ++p)
                rd_kafka_topic_partition_list_add(tpl, t.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        auto err = rd_kafka_assign(rk.get(), tpl);
        rd_kafka_topic_partition_list_destroy(tpl);
        if (err) throw std::runtime_error(std::string("assign: ") + rd_kafka_err2str(err));
    }
    std::atomic<bool> stop_consumer{false};
    std::atomic<std::int64_t> n_received{0};
    std::vector<received> got;
    got.reserve(static_cast<std::size_t>(o.rate * (o.seconds + o.warmup)) + 1024);
    std::string consumer_error;
    std::thread consumer([&] {
        while (rk && !stop_consumer.load()) {
            rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 50);
            if (!m) continue;
            const std::int64_t recv = now_us();
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && consumer_error.empty())
                    consumer_error = rd_kafka_message_errstr(m);
                rd_kafka_message_destroy(m);
                continue;
            }
            std::string_view value(static_cast<const char*>(m->payload), m->len);
            rd_kafka_timestamp_type_t tstype = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            std::int64_t ts_ms = rd_kafka_message_timestamp(m, &tstype);
            auto n = json_int(value, "n");
            auto ts = json_int(value, "ts_us");
            if (n && ts)
                got.push_back({*n, *ts, ts_ms * 1000 + 500, recv,
                               tstype == (o.create_time ? RD_KAFKA_TIMESTAMP_CREATE_TIME
                                                        : RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME)});
            else if (consumer_error.empty())
                consumer_error = "record without n/ts_us: " + std::string(value.substr(0, 80));
            n_received.fetch_add(1);
            rd_kafka_message_destroy(m);
        }
    });

    // ---- writers: open-loop schedule from t_start.
    std::vector<PGconn*> conns;
    for (int j = 0; j <= o.clients; ++j) {  // the last one writes the probes
        conns.push_back(connect_pg(o.pg));
        prepare(conns.back(), o.table);
    }
    const std::int64_t t_start = now_us() + 200'000;
    const std::int64_t t_measure = t_start + static_cast<std::int64_t>(o.warmup * 1e6);
    const std::int64_t t_end = t_measure + static_cast<std::int64_t>(o.seconds * 1e6);
    std::vector<std::vector<written>> per_client(static_cast<std::size_t>(o.clients) + 1);
    std::atomic<std::int64_t> write_errors{0};
    std::mutex err_mu;
    std::string first_write_error;
    auto note_error = [&](const std::string& e) {
        write_errors.fetch_add(1);
        std::lock_guard lk(err_mu);
        if (first_write_error.empty()) first_write_error = e;
    };
    std::vector<std::thread> writers;
    for (int j = 0; j < o.clients; ++j) {
        writers.emplace_back([&, j] {
            auto& out = per_client[static_cast<std::size_t>(j)];
            out.reserve(static_cast<std::size_t>(o.rate * (o.seconds + o.warmup) / o.clients) + 16);
            for (std::int64_t k = 0;; ++k) {
                const std::int64_t n = k * o.clients + j;
                const std::int64_t due = t_start + static_cast<std::int64_t>(static_cast<double>(n) * 1e6 / o.rate);
                if (due >= t_end) break;
                sleep_until_us(due);
                written w{};
                w.lag_us = now_us() - due;
                std::string e;
                if (insert_one(conns[static_cast<std::size_t>(j)], o.aggregatetype, n, w, e)) out.push_back(w);
                else note_error(e);
            }
        });
    }
    // Probes: one row to a never-written topic at (i + 0.5) / probes of the window.
    std::thread prober([&] {
        auto& out = per_client.back();
        for (int i = 0; i < o.probes; ++i) {
            const std::int64_t due =
                t_measure + static_cast<std::int64_t>((i + 0.5) / o.probes * static_cast<double>(t_end - t_measure));
            sleep_until_us(due);
            written w{};
            w.lag_us = now_us() - due;
            std::string e;
            if (insert_one(conns.back(), probe_types[static_cast<std::size_t>(i)], probe_base + i, w, e))
                out.push_back(w);
            else
                note_error(e);
        }
    });
    for (auto& w : writers) w.join();
    prober.join();
    for (auto* c : conns) PQfinish(c);
    std::int64_t sent = 0;
    for (const auto& v : per_client) sent += static_cast<std::int64_t>(v.size());

    if (!rk) {
        // Write-only: the caller measures the other end (bench.py's pg_recvlogical floor).
        std::vector<double> commit_ack, lag;
        std::int64_t in_window = 0;
        for (std::size_t j = 0; j + 1 < per_client.size(); ++j)
            for (const auto& w : per_client[j])
                if (w.ts_us >= t_measure && w.ts_us < t_end) {
                    ++in_window;
                    commit_ack.push_back(static_cast<double>(w.ack_us - w.ts_us));
                    lag.push_back(static_cast<double>(w.lag_us));
                }
        json out{{"rate_target", o.rate}, {"clients", o.clients}, {"seconds", o.seconds}, {"warmup_s", o.warmup},
                 {"t_measure_us", t_measure}, {"t_end_us", t_end}, {"sent", sent},
                 {"write_errors", write_errors.load()},
                 {"achieved_rate", static_cast<double>(in_window) / o.seconds},
                 {"insert_to_commit_ack_ms", stats_ms(commit_ack)}, {"writer_lag_ms", stats_ms(lag)}};
        if (!first_write_error.empty()) out["first_write_error"] = first_write_error;
        std::cout << out.dump() << std::endl;
        stop_consumer.store(true);
        consumer.join();
        return write_errors.load() == 0 ? 0 : 7;
    }

    // ---- drain: everything written must arrive (or it is missing).
    const std::int64_t drain_deadline = now_us() + static_cast<std::int64_t>(o.drain_timeout_s * 1e6);
    while (n_received.load() < sent && now_us() < drain_deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const double drain_s = (now_us() - t_end) / 1e6;
    stop_consumer.store(true);
    consumer.join();
    rd_kafka_consumer_close(rk.get());

    // ---- figures
    std::unordered_map<std::int64_t, const received*> by_n;
    std::int64_t duplicates = 0, not_log_append = 0;
    for (const auto& r : got) {
        if (!by_n.emplace(r.n, &r).second) ++duplicates;
        if (!r.log_append_time) ++not_log_append;
    }
    std::int64_t missing = 0;
    std::vector<double> append, recv, commit_ack, lag, around_append, other_append;
    std::int64_t committed_in_window = 0;
    std::vector<std::int64_t> probe_ts;
    json probes = json::array();
    for (const auto& w : per_client.back()) {
        probe_ts.push_back(w.ts_us);
        json p{{"topic", o.topic_prefix + probe_types[static_cast<std::size_t>(w.n - probe_base)]},
               {"insert_to_commit_ack_ms", (w.ack_us - w.ts_us) / 1000.0}};
        auto it = by_n.find(w.n);
        if (it == by_n.end()) {
            ++missing;
            p["missing"] = true;
        } else {
            p["append_ms"] = (it->second->append_us - w.ts_us) / 1000.0;
            p["receive_ms"] = (it->second->recv_us - w.ts_us) / 1000.0;
        }
        probes.push_back(p);
    }
    for (std::size_t j = 0; j < per_client.size() - 1; ++j) {
        for (const auto& w : per_client[j]) {
            auto it = by_n.find(w.n);
            if (it == by_n.end()) {
                ++missing;
                continue;
            }
            if (w.ts_us < t_measure || w.ts_us >= t_end) continue;
            ++committed_in_window;
            double a = static_cast<double>(it->second->append_us - w.ts_us);
            append.push_back(a);
            recv.push_back(static_cast<double>(it->second->recv_us - w.ts_us));
            commit_ack.push_back(static_cast<double>(w.ack_us - w.ts_us));
            lag.push_back(static_cast<double>(w.lag_us));
            bool near_probe = std::any_of(probe_ts.begin(), probe_ts.end(), [&](std::int64_t p) {
                return w.ts_us >= p && w.ts_us < p + 1'000'000;
            });
            (near_probe ? around_append : other_append).push_back(a);
        }
    }
    json out{{"rate_target", o.rate},
             {"clients", o.clients},
             {"seconds", o.seconds},
             {"warmup_s", o.warmup},
             {"t_measure_us", t_measure},
             {"t_end_us", t_end},
             {"topic", steady_topic},
             {"sent", sent},
             {"received", static_cast<std::int64_t>(got.size())},
             {"missing", missing},
             {"duplicates", duplicates},
             {"write_errors", write_errors.load()},
             {"achieved_rate", static_cast<double>(committed_in_window) / o.seconds},
             {"drain_s", drain_s},
             {"commit_to_append_ms", stats_ms(append)},
             {"commit_to_receive_ms", stats_ms(recv)},
             {"insert_to_commit_ack_ms", stats_ms(commit_ack)},
             {"writer_lag_ms", stats_ms(lag)},
             {"cdf_append_ms", cdf_ms(append)},
             {"probes", probes},
             {"steady_within_1s_after_probe_append_ms", stats_ms(around_append)},
             {"steady_other_append_ms", stats_ms(other_append)}};
    if (o.create_time) out["timestamp_type"] = "CreateTime (diagnosis: commit_to_append_ms is commit -> produce())";
    if (not_log_append > 0) out["error"] = std::to_string(not_log_append) + " records with the wrong timestamp type";
    if (!first_write_error.empty()) out["first_write_error"] = first_write_error;
    if (!consumer_error.empty()) out["consumer_error"] = consumer_error;
    std::cout << out.dump() << std::endl;
    if (not_log_append > 0) return 8;
    return missing == 0 && duplicates == 0 && write_errors.load() == 0 ? 0 : 7;
}

}  // namespace outbox::bench
