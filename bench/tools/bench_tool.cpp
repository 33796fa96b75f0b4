// bench_tool: the measuring side of bench/run.sh. Every subcommand prints one
// JSON object on stdout (logs and errors on stderr) and exits non-zero when
// it could not measure what it was asked to (a record missing, a process
// gone). It never judges a timing: that is the reader's business.
//
//   bench_tool create-topics --brokers B --topic T... [--partitions 3] [--log-append-time]
//   bench_tool delete-topics --brokers B --prefix P
//   bench_tool wait    --brokers B --topic T... --count N [--pid PID] [--t0 EPOCH_S] [--timeout-s S]
//   bench_tool ingest  --brokers B --rows FILE --topic-prefix P [--txn-size N] [-X prop=value]...
//   bench_tool verify  --brokers B --topic T... --expect N
//   bench_tool stream-stamp --pg CONNINFO --slot S --publication P --out FILE
//   bench_tool latency ... (see latency.cpp)
//
// All times are CLOCK_REALTIME (bench_util.hpp), the clock Postgres'
// clock_timestamp() and the broker's LogAppendTime are taken on.
#include "bench_util.hpp"
#include "latency.hpp"

#include <CLI/CLI.hpp>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <csignal>
#include <poll.h>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <unistd.h>
#include <vector>

namespace {

using namespace outbox::bench;
using json = nlohmann::json;

void print(const json& j) { std::cout << j.dump() << std::endl; }

// ---------------------------------------------------------------- wait

// Counts the records a read_committed consumer receives from the topics
// (assign() only, from the beginning) until `count` have arrived, sampling the
// process under test meanwhile. Committed records, not high watermarks: a
// transactional producer's commit markers take offsets too, so a high
// watermark reaches N before N records are readable. The same measure for
// every producer (with or without transactions), from outside.
struct committed_counter {
    rk_ptr rk;
    explicit committed_counter(const std::string& brokers, const std::vector<std::string>& topics)
        : rk(make_handle(RD_KAFKA_CONSUMER, brokers,
                         {{"group.id", "bench_wait_" + std::to_string(getpid())},
                          {"enable.auto.commit", "false"},
                          {"enable.auto.offset.store", "false"},
                          {"isolation.level", "read_committed"},
                          {"allow.auto.create.topics", "false"},
                          {"fetch.wait.max.ms", "10"}})) {
        rd_kafka_poll_set_consumer(rk.get());
        rd_kafka_topic_partition_list_t* tpl = rd_kafka_topic_partition_list_new(8);
        for (const auto& t : topics) {
            const int n = partition_count(rk.get(), t);
            for (int p = 0; p < n; ++p)
                rd_kafka_topic_partition_list_add(tpl, t.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        }
        rd_kafka_assign(rk.get(), tpl);
        rd_kafka_topic_partition_list_destroy(tpl);
    }
    ~committed_counter() { rd_kafka_consumer_close(rk.get()); }
    // Counts what arrives within `wait_ms`.
    std::int64_t poll(int wait_ms) {
        std::int64_t n = 0;
        const std::int64_t until = now_us() + wait_ms * 1000;
        while (now_us() < until) {
            rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 1);
            if (!m) continue;
            if (!m->err) ++n;
            rd_kafka_message_destroy(m);
        }
        return n;
    }
};

int run_wait(const std::string& brokers, const std::vector<std::string>& topics, std::int64_t count, int pid,
             double t0_s, double timeout_s, int poll_ms) {
    committed_counter counter(brokers, topics);
    const std::int64_t t0 = t0_s > 0 ? static_cast<std::int64_t>(t0_s * 1e6) : now_us();
    const std::int64_t deadline = now_us() + static_cast<std::int64_t>(timeout_s * 1e6);
    std::int64_t t_first = 0, t_done = 0, n = 0, polls = 0;
    proc_sample first{}, done{};
    std::int64_t rss_max = 0;
    json out{{"topics", topics}, {"expected", count}, {"t0", t0 / 1e6}};
    for (;;) {
        std::optional<proc_sample> s;
        if (pid > 0) {
            s = sample_process(pid);
            if (!s) {
                out["error"] = "process " + std::to_string(pid) + " exited with " + std::to_string(n) + " of " +
                               std::to_string(count) + " records appended";
                out["count"] = n;
                print(out);
                return 3;
            }
            rss_max = std::max(rss_max, s->rss_kib);
        }
        n += counter.poll(poll_ms);
        ++polls;
        auto now = now_us();
        if (n > 0 && t_first == 0) {
            t_first = now;
            if (s) first = *s;
        }
        if (n >= count) {
            t_done = now;
            if (pid > 0) {
                // The sample at completion, not the one before the poll.
                if (auto s2 = sample_process(pid)) done = *s2;
                else if (s) done = *s;
                rss_max = std::max(rss_max, done.rss_kib);
            }
            break;
        }
        if (now > deadline) {
            out["error"] = "timed out after " + std::to_string(timeout_s) + " s with " + std::to_string(n) + " of " +
                           std::to_string(count) + " records appended";
            out["count"] = n;
            print(out);
            return 4;
        }
    }
    out["count"] = n;
    out["t_first"] = t_first / 1e6;
    out["t_done"] = t_done / 1e6;
    out["wall_s"] = (t_done - t0) / 1e6;
    out["stream_s"] = (t_done - t_first) / 1e6;
    out["polls"] = polls;
    if (pid > 0) {
        out["rss_max_kib"] = rss_max;
        out["hwm_kib"] = done.hwm_kib;
        out["cpu_s_first"] = first.cpu_s;
        out["cpu_s_done"] = done.cpu_s;
    }
    print(out);
    return 0;
}

// ---------------------------------------------------------------- ingest

struct ingest_state {
    std::atomic<std::int64_t> delivered{0};
    std::atomic<std::int64_t> failed{0};
    std::atomic<std::int64_t> last_dr_us{0};
};

// The broker's own ingest rate for the backlog's records: the rows exported
// from the outbox table, produced with the relay's producer settings and the
// same key, value and headers (id, type, commit-lsn, seq), timed from the
// first produce() to the last delivery report.
int run_ingest(const std::string& brokers, const std::string& rows_file, const std::string& topic_prefix,
               int txn_size, const std::vector<std::string>& extra) {
    struct row {
        std::string topic, id, key, type, value, lsn, seq;
    };
    std::vector<row> rows;
    {
        std::ifstream in(rows_file);
        if (!in) throw std::runtime_error("ingest: cannot read " + rows_file);
        std::string line;
        std::uint64_t lsn = 0x1A000000;
        while (std::getline(in, line)) {
            std::vector<std::string> f;
            std::size_t start = 0;
            for (std::size_t i = 0; i <= line.size(); ++i)
                if (i == line.size() || line[i] == '\t') {
                    f.push_back(line.substr(start, i - start));
                    start = i + 1;
                }
            if (f.size() != 5) throw std::runtime_error("ingest: expected 5 tab-separated columns: " + line);
            std::size_t idx = rows.size();
            if (idx % static_cast<std::size_t>(txn_size) == 0) lsn += 0x40000;
            char lsnbuf[32];
            std::snprintf(lsnbuf, sizeof lsnbuf, "%X/%X", static_cast<unsigned>(lsn >> 32),
                          static_cast<unsigned>(lsn & 0xffffffffu));
            rows.push_back({topic_prefix + copy_unescape(f[1]).value_or(""), copy_unescape(f[0]).value_or(""),
                            copy_unescape(f[2]).value_or(""), copy_unescape(f[3]).value_or(""),
                            copy_unescape(f[4]).value_or(""), lsnbuf,
                            std::to_string(idx % static_cast<std::size_t>(txn_size))});
        }
    }
    if (rows.empty()) throw std::runtime_error("ingest: no rows in " + rows_file);

    ingest_state st;
    // The relay's settings (README "Configuration"): idempotent, acks=all, no
    // message timeout, linger.ms=5, lz4, queue sized above max-inflight.
    std::vector<std::pair<std::string, std::string>> props{
        {"enable.idempotence", "true"},           {"acks", "all"},
        {"message.timeout.ms", "0"},              {"linger.ms", "5"},
        {"compression.type", "lz4"},              {"queue.buffering.max.messages", "110000"},
        {"queue.buffering.max.kbytes", "327680"},
    };
    for (const auto& x : extra) {
        auto eq = x.find('=');
        if (eq == std::string::npos) throw std::runtime_error("-X wants prop=value: " + x);
        props.emplace_back(x.substr(0, eq), x.substr(eq + 1));
    }
    rk_ptr rk = make_handle(
        RD_KAFKA_PRODUCER, brokers, props,
        [](rd_kafka_conf_t* c, void* arg) {
            rd_kafka_conf_set_opaque(c, arg);
            rd_kafka_conf_set_dr_msg_cb(c, [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
                auto* s = static_cast<ingest_state*>(opaque);
                if (m->err) s->failed.fetch_add(1);
                s->delivered.fetch_add(1);
                s->last_dr_us.store(now_us());
            });
        },
        &st);
    std::set<std::string> topics;
    for (const auto& r : rows) topics.insert(r.topic);
    for (const auto& t : topics) partition_count(rk.get(), t);  // metadata cached before timing

    std::int64_t bytes = 0;
    const std::int64_t t_start = now_us();
    for (const auto& r : rows) {
        rd_kafka_headers_t* h = rd_kafka_headers_new(4);
        rd_kafka_header_add(h, "id", -1, r.id.data(), static_cast<ssize_t>(r.id.size()));
        rd_kafka_header_add(h, "type", -1, r.type.data(), static_cast<ssize_t>(r.type.size()));
        rd_kafka_header_add(h, "outbox-relay.commit-lsn", -1, r.lsn.data(), static_cast<ssize_t>(r.lsn.size()));
        rd_kafka_header_add(h, "outbox-relay.seq", -1, r.seq.data(), static_cast<ssize_t>(r.seq.size()));
        for (;;) {
            auto err = rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(r.topic.c_str()),
                                         RD_KAFKA_V_KEY(r.key.data(), r.key.size()),
                                         RD_KAFKA_V_VALUE(const_cast<char*>(r.value.data()), r.value.size()),
                                         RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                         RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                rd_kafka_headers_destroy(h);
                throw std::runtime_error(std::string("produce: ") + rd_kafka_err2str(err));
            }
            rd_kafka_poll(rk.get(), 1);
        }
        bytes += static_cast<std::int64_t>(r.key.size() + r.value.size() + r.id.size() + r.type.size() +
                                           r.lsn.size() + r.seq.size());
        rd_kafka_poll(rk.get(), 0);
    }
    while (st.delivered.load() < static_cast<std::int64_t>(rows.size())) rd_kafka_poll(rk.get(), 10);
    const std::int64_t t_end = st.last_dr_us.load();
    double s = (t_end - t_start) / 1e6;
    print(json{{"records", rows.size()},
               {"bytes", bytes},
               {"failed", st.failed.load()},
               {"seconds", s},
               {"rate", static_cast<double>(rows.size()) / s}});
    return st.failed.load() == 0 ? 0 : 5;
}

// ---------------------------------------------------------------- verify

// Reads the topics to their current end (assign() only, read_committed) and
// checks that they hold exactly `expect` records with `expect` distinct "id"
// headers: nothing missing, nothing twice.
int run_verify(const std::string& brokers, const std::vector<std::string>& topics, std::int64_t expect,
               double timeout_s) {
    rk_ptr rk = make_handle(RD_KAFKA_CONSUMER, brokers,
                            {{"group.id", "bench_verify_" + std::to_string(getpid())},
                             {"enable.auto.commit", "false"},
                             {"enable.auto.offset.store", "false"},
                             {"isolation.level", "read_committed"},
                             {"allow.auto.create.topics", "false"},
                             {"enable.partition.eof", "true"}});
    rd_kafka_poll_set_consumer(rk.get());
    rd_kafka_topic_partition_list_t* tpl = rd_kafka_topic_partition_list_new(8);
    std::map<std::pair<std::string, int>, std::int64_t> ends;  // partition -> high watermark
    for (const auto& t : topics) {
        int n = partition_count(rk.get(), t);
        for (int p = 0; p < n; ++p) {
            std::int64_t lo = 0, hi = 0;
            watermarks(rk.get(), t, p, &lo, &hi);
            if (hi > lo) {
                ends[{t, p}] = hi;
                rd_kafka_topic_partition_list_add(tpl, t.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            }
        }
    }
    rd_kafka_assign(rk.get(), tpl);
    rd_kafka_topic_partition_list_destroy(tpl);
    std::int64_t records = 0;
    std::unordered_set<std::string> ids;
    std::int64_t no_id = 0;
    std::size_t done = 0;
    const std::int64_t deadline = now_us() + static_cast<std::int64_t>(timeout_s * 1e6);
    std::map<std::pair<std::string, int>, bool> finished;
    while (done < ends.size()) {
        if (now_us() > deadline) throw std::runtime_error("verify: timed out reading the topics");
        rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 200);
        if (!m) continue;
        if (m->err) {
            const bool eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
            std::string e = rd_kafka_message_errstr(m);
            // The end of a partition (its last offsets may be transaction
            // markers, which a consumer never receives).
            if (eof && m->rkt) {
                std::pair<std::string, int> key{rd_kafka_topic_name(m->rkt), m->partition};
                if (ends.count(key) && m->offset >= ends[key] && !finished[key]) {
                    finished[key] = true;
                    ++done;
                }
            }
            rd_kafka_message_destroy(m);
            if (!eof) std::cerr << "verify: consumer error: " << e << "\n";
            continue;
        }
        std::pair<std::string, int> key{rd_kafka_topic_name(m->rkt), m->partition};
        if (m->offset < ends[key]) {
            ++records;
            rd_kafka_headers_t* h = nullptr;
            const void* v = nullptr;
            std::size_t sz = 0;
            if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                rd_kafka_header_get_last(h, "id", &v, &sz) == RD_KAFKA_RESP_ERR_NO_ERROR && v)
                ids.emplace(static_cast<const char*>(v), sz);
            else
                ++no_id;
        }
        if (m->offset + 1 >= ends[key] && !finished[key]) {
            finished[key] = true;
            ++done;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk.get());
    auto distinct = static_cast<std::int64_t>(ids.size());
    bool ok = records == expect && distinct == expect && no_id == 0;
    print(json{{"topics", topics},
               {"expected", expect},
               {"records", records},
               {"distinct_ids", distinct},
               {"without_id", no_id},
               {"missing", std::max<std::int64_t>(0, expect - distinct)},
               {"duplicates", records - distinct},
               {"ok", ok}});
    return ok ? 0 : 6;
}

// ---------------------------------------------------------------- stream-stamp

std::atomic<bool> g_stop{false};

// Writes one "n ts_us recv_us" line per {"n": N, ..., "ts_us": T} in `data`.
std::int64_t stamp_rows(std::string_view data, std::int64_t now, std::FILE* out) {
    std::int64_t rows = 0;
    for (std::size_t at = data.find("{\"n\": "); at != std::string_view::npos; at = data.find("{\"n\": ", at + 1)) {
        auto close = data.find('}', at);
        if (close == std::string_view::npos) break;
        auto obj = data.substr(at, close - at + 1);
        auto pn = obj.find("\"n\": "), pt = obj.find("\"ts_us\": ");
        if (pn == std::string_view::npos || pt == std::string_view::npos) continue;
        std::int64_t nv = 0, ts = 0;
        std::from_chars(obj.data() + pn + 5, obj.data() + obj.size(), nv);
        std::from_chars(obj.data() + pt + 9, obj.data() + obj.size(), ts);
        std::fprintf(out, "%lld %lld %lld\n", static_cast<long long>(nv), static_cast<long long>(ts),
                     static_cast<long long>(now));
        ++rows;
    }
    return rows;
}

void put_be64(char* p, std::uint64_t v) {
    for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
std::uint64_t get_be64(const char* p) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
    return v;
}

// The latency floor's client: a bare libpq logical replication connection
// (pgoutput proto 1, the relay's publication) that only receives, stamps each
// row's arrival (when PQgetCopyData handed it over) and confirms what it got
// every 100 ms, as the relay confirms promptly. One process, no pipe: the
// fewest hops a client of the walsender can have. Runs until SIGTERM/SIGINT.
int run_stream_stamp(const std::string& pg, const std::string& slot, const std::string& publication,
                     const std::string& out_path) {
    std::signal(SIGTERM, [](int) { g_stop = true; });
    std::signal(SIGINT, [](int) { g_stop = true; });
    std::string conninfo = pg + " replication=database";
    PGconn* c = PQconnectdb(conninfo.c_str());
    if (PQstatus(c) != CONNECTION_OK) throw std::runtime_error(std::string("stream-stamp: ") + PQerrorMessage(c));
    std::string q = "START_REPLICATION SLOT " + slot + " LOGICAL 0/0 (proto_version '1', publication_names '" +
                    publication + "')";
    PGresult* r = PQexec(c, q.c_str());
    if (PQresultStatus(r) != PGRES_COPY_BOTH) {
        std::string e = PQresultErrorMessage(r);
        PQclear(r);
        PQfinish(c);
        throw std::runtime_error("stream-stamp: START_REPLICATION: " + e);
    }
    PQclear(r);
    std::FILE* out = std::fopen(out_path.c_str(), "w");
    if (!out) throw std::runtime_error("stream-stamp: cannot write " + out_path);
    std::uint64_t received = 0;
    std::int64_t rows = 0, last_status = 0;
    auto send_status = [&] {
        char msg[34];
        msg[0] = 'r';
        put_be64(msg + 1, received);
        put_be64(msg + 9, received);
        put_be64(msg + 17, received);
        put_be64(msg + 25, static_cast<std::uint64_t>(now_us() - 946684800LL * 1'000'000));  // since 2000-01-01
        msg[33] = 0;
        PQputCopyData(c, msg, sizeof msg);
        PQflush(c);
        last_status = now_us();
    };
    while (!g_stop) {
        char* buf = nullptr;
        int n = PQgetCopyData(c, &buf, 1);
        if (n == 0) {
            std::fflush(out);  // only when idle: the file is read while we run
            if (now_us() - last_status > 100'000) send_status();
            pollfd pfd{PQsocket(c), POLLIN, 0};
            ::poll(&pfd, 1, 100);
            if (pfd.revents & POLLIN) PQconsumeInput(c);
            continue;
        }
        if (n < 0) break;  // -1 end of copy, -2 error
        const std::int64_t now = now_us();
        if (buf[0] == 'w' && n > 25) {
            received = std::max(received, get_be64(buf + 9));  // walEnd
            rows += stamp_rows(std::string_view(buf + 25, static_cast<std::size_t>(n - 25)), now, out);
        } else if (buf[0] == 'k' && n >= 18) {
            received = std::max(received, get_be64(buf + 1));
            if (buf[17]) send_status();
        }
        PQfreemem(buf);
    }
    std::fclose(out);
    PQfinish(c);
    print(json{{"rows", rows}});
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench_tool: measurements for bench/run.sh (JSON on stdout)"};
    app.require_subcommand(1);
    std::string brokers;
    std::vector<std::string> topics;

    auto* ct = app.add_subcommand("create-topics", "create fresh topics and wait for their leaders");
    int partitions = 3;
    bool log_append = false;
    ct->add_option("--brokers", brokers)->required();
    ct->add_option("--topic", topics)->required();
    ct->add_option("--partitions", partitions);
    ct->add_flag("--log-append-time", log_append, "message.timestamp.type=LogAppendTime");

    auto* dt = app.add_subcommand("delete-topics", "delete the topics whose name starts with a prefix");
    std::string prefix;
    dt->add_option("--brokers", brokers)->required();
    dt->add_option("--prefix", prefix)->required();

    auto* wt = app.add_subcommand("wait", "poll high watermarks until N records are appended");
    std::int64_t count = 0;
    int pid = 0, poll_ms = 10;
    double t0 = 0, timeout_s = 600;
    wt->add_option("--brokers", brokers)->required();
    wt->add_option("--topic", topics)->required();
    wt->add_option("--count", count)->required();
    wt->add_option("--pid", pid, "process under test: sampled from /proc, must stay alive");
    wt->add_option("--t0", t0, "start time of the process under test (epoch seconds)");
    wt->add_option("--timeout-s", timeout_s);
    wt->add_option("--poll-ms", poll_ms);

    auto* it = app.add_subcommand("ingest", "produce exported outbox rows like the relay does");
    std::string rows;
    int txn_size = 1000;
    std::vector<std::string> extra;
    it->add_option("--brokers", brokers)->required();
    it->add_option("--rows", rows, "psql \\copy text: id, aggregatetype, aggregateid, type, payload")->required();
    it->add_option("--topic-prefix", prefix)->required();
    it->add_option("--txn-size", txn_size, "rows per transaction, for the seq header");
    it->add_option("-X", extra, "extra producer property prop=value");

    auto* vt = app.add_subcommand("verify", "every record there exactly once (distinct id headers)");
    std::int64_t expect = 0;
    vt->add_option("--brokers", brokers)->required();
    vt->add_option("--topic", topics)->required();
    vt->add_option("--expect", expect)->required();
    vt->add_option("--timeout-s", timeout_s);

    std::string stamp_out;
    auto* ss = app.add_subcommand("stream-stamp", "bare logical replication client stamping row arrivals");
    std::string ss_pg, ss_slot, ss_pub;
    ss->add_option("--pg", ss_pg)->required();
    ss->add_option("--slot", ss_slot)->required();
    ss->add_option("--publication", ss_pub)->required();
    ss->add_option("--out", stamp_out)->required();

    outbox::bench::latency_options lo;
    auto* lt = app.add_subcommand("latency", "steady writers + read_committed consumer: commit -> append/receive");
    outbox::bench::add_latency_options(*lt, lo);

    CLI11_PARSE(app, argc, argv);
    try {
        if (*ct) {
            std::map<std::string, std::string> cfg;
            if (log_append) cfg["message.timestamp.type"] = "LogAppendTime";
            create_topics(brokers, topics, partitions, cfg);
            print(json{{"created", topics}});
            return 0;
        }
        if (*dt) {
            print(json{{"deleted", delete_topics_with_prefix(brokers, prefix)}});
            return 0;
        }
        if (*wt) return run_wait(brokers, topics, count, pid, t0, timeout_s, poll_ms);
        if (*it) return run_ingest(brokers, rows, prefix, txn_size, extra);
        if (*vt) return run_verify(brokers, topics, expect, timeout_s);
        if (*ss) return run_stream_stamp(ss_pg, ss_slot, ss_pub, stamp_out);
        if (*lt) return outbox::bench::run_latency(lo);
    } catch (const std::exception& e) {
        std::cerr << "bench_tool: error: " << e.what() << "\n";
        print(json{{"error", e.what()}});
        return 2;
    }
    return 2;
}
