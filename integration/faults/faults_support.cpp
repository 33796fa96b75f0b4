#include "faults_support.hpp"

#include "http_get.hpp"

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace outbox::it::faults {

namespace {

// Value of `key=` in one key=value log line; empty if absent.
std::string field(const std::string& line, const std::string& key) {
    std::string needle = " " + key + "=";
    auto p = line.find(needle);
    if (p == std::string::npos) return {};
    p += needle.size();
    auto e = line.find(' ', p);
    return line.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

// ---- librdkafka admin plumbing

struct rk_deleter {
    void operator()(rd_kafka_t* rk) const noexcept { rd_kafka_destroy(rk); }
};
using rk_ptr = std::unique_ptr<rd_kafka_t, rk_deleter>;
struct queue_deleter {
    void operator()(rd_kafka_queue_t* q) const noexcept { rd_kafka_queue_destroy(q); }
};
using queue_ptr = std::unique_ptr<rd_kafka_queue_t, queue_deleter>;
struct event_deleter {
    void operator()(rd_kafka_event_t* e) const noexcept { rd_kafka_event_destroy(e); }
};
using event_ptr = std::unique_ptr<rd_kafka_event_t, event_deleter>;
struct options_deleter {
    void operator()(rd_kafka_AdminOptions_t* o) const noexcept { rd_kafka_AdminOptions_destroy(o); }
};
using options_ptr = std::unique_ptr<rd_kafka_AdminOptions_t, options_deleter>;
struct resource_deleter {
    void operator()(rd_kafka_ConfigResource_t* r) const noexcept { rd_kafka_ConfigResource_destroy(r); }
};
using resource_ptr = std::unique_ptr<rd_kafka_ConfigResource_t, resource_deleter>;

rk_ptr admin_client(const std::string& brokers) {
    char errstr[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error(std::string("admin client: ") + errstr);
    }
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error(std::string("admin client: ") + errstr);
    }
    return rk_ptr(rk);
}

options_ptr admin_options(rd_kafka_t* rk, rd_kafka_admin_op_t op) {
    options_ptr o(rd_kafka_AdminOptions_new(rk, op));
    char errstr[256];
    rd_kafka_AdminOptions_set_request_timeout(o.get(), 20000, errstr, sizeof errstr);
    return o;
}

// Waits for the one admin result event on `q`; throws on a request-level error.
event_ptr await_result(rd_kafka_queue_t* q, const std::string& what) {
    event_ptr ev(rd_kafka_queue_poll(q, 30000));
    if (!ev) throw std::runtime_error(what + ": no admin result within 30 s");
    if (rd_kafka_event_error(ev.get()))
        throw std::runtime_error(what + ": " + rd_kafka_event_error_string(ev.get()));
    return ev;
}

void wait_leaders(rd_kafka_t* rk, const std::string& topic, int partitions) {
    bool ok = wait_until(clock::now() + 30s, [&] {
        const rd_kafka_metadata_t* md = nullptr;
        rd_kafka_topic_t* t = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
        auto err = rd_kafka_metadata(rk, 0, t, &md, 5000);
        rd_kafka_topic_destroy(t);
        if (err) return false;
        bool good = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                    md->topics[0].partition_cnt == partitions;
        for (int i = 0; good && i < md->topics[0].partition_cnt; ++i)
            good = md->topics[0].partitions[i].leader >= 0 && md->topics[0].partitions[i].err == 0;
        rd_kafka_metadata_destroy(md);
        return good;
    }, 100ms);
    if (!ok) throw std::runtime_error("topic " + topic + ": partitions without leader after 30 s");
}

}  // namespace

replay_figures replay_figures_of(const std::string& log) {
    replay_figures f;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);) {
        if (line.find("event=replay_window_scanned") != std::string::npos) {
            ++f.scans;
            auto v = field(line, "present");
            if (!v.empty()) f.present += std::stoull(v);
        } else if (line.find("event=producer_restart") != std::string::npos) {
            ++f.producer_restarts;
        } else if (line.find("event=fatal ") != std::string::npos) {
            ++f.fatal_lines;
        }
    }
    return f;
}

std::optional<std::chrono::system_clock::time_point> log_time_of(const std::string& log, const std::string& needle) {
    auto hit = log.find(needle);
    if (hit == std::string::npos) return std::nullopt;
    auto bol = log.rfind('\n', hit);
    bol = bol == std::string::npos ? 0 : bol + 1;
    // 2026-11-26T18:08:58.384268Z
    std::tm tm{};
    unsigned micros = 0;
    if (std::sscanf(log.c_str() + bol, "%4d-%2d-%2dT%2d:%2d:%2d.%6u", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                    &tm.tm_min, &tm.tm_sec, &micros) != 7)
        return std::nullopt;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return std::chrono::system_clock::from_time_t(timegm(&tm)) + std::chrono::microseconds(micros);
}

std::optional<double> metric_value(const std::string& text, const std::string& name) {
    std::istringstream in(text);
    std::optional<double> sum;
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        if (line.compare(0, name.size(), name) != 0) continue;
        char next = line.size() > name.size() ? line[name.size()] : '\0';
        if (next != ' ' && next != '{') continue;
        auto sp = line.rfind(' ');
        sum = sum.value_or(0) + std::stod(line.substr(sp + 1));
    }
    return sum;
}

std::uint64_t pick_seed() {
    if (const char* s = std::getenv("OUTBOX_FAULTS_SEED"); s && *s) return std::stoull(s);
    auto t = static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    return t ? t : 1;
}

std::vector<std::size_t> random_sizes(std::mt19937_64& rng, std::size_t n, std::size_t lo, std::size_t hi) {
    std::uniform_int_distribution<std::size_t> d(lo, hi);
    std::vector<std::size_t> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

bool wait_new_walsender(scenario& sc, relay_process& r, std::optional<int> old_pid, clock::time_point deadline) {
    bool ok = wait_until(deadline, [&] {
        if (!r.running()) return true;
        auto s = sc.slot_info();
        return s.active_pid && (!old_pid || *s.active_pid != *old_pid);
    });
    if (!r.running()) {
        auto st = r.wait_exit(clock::now());
        throw std::runtime_error("relay exited before streaming (" + (st ? st->describe() : std::string("?")) +
                                 "), log " + r.log_path().string() + ":\n" + r.log_text(4000));
    }
    return ok;
}

std::optional<double> relay_metric(const relay_process& r, const std::string& name) {
    const auto port = outbox::it::metrics_port_of(r.log_text());
    if (!port) return std::nullopt;
    try {
        const auto resp = outbox::it::http_get("127.0.0.1", *port, "/metrics");
        if (resp.status != 200) return std::nullopt;
        return metric_value(resp.body, name);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

bool exactly_once(const check::check_report& r) {
    return r.ok() && r.missing == 0 && r.duplicated == 0 && r.out_of_order == 0 && r.mismatched == 0 &&
           r.unexpected == 0 && r.lsn_header_errors == 0;
}

void create_topic_with_config(const std::string& brokers, const std::string& topic, int partitions,
                              const std::map<std::string, std::string>& configs) {
    auto rk = admin_client(brokers);
    queue_ptr q(rd_kafka_queue_new(rk.get()));
    char errstr[512];
    rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, errstr, sizeof errstr);
    if (!nt) throw std::runtime_error("create topic " + topic + ": " + errstr);
    for (const auto& [k, v] : configs) rd_kafka_NewTopic_set_config(nt, k.c_str(), v.c_str());
    auto opts = admin_options(rk.get(), RD_KAFKA_ADMIN_OP_CREATETOPICS);
    char oerr[256];
    rd_kafka_AdminOptions_set_operation_timeout(opts.get(), 20000, oerr, sizeof oerr);
    rd_kafka_CreateTopics(rk.get(), &nt, 1, opts.get(), q.get());
    rd_kafka_NewTopic_destroy(nt);
    auto ev = await_result(q.get(), "create topic " + topic);
    size_t cnt = 0;
    const rd_kafka_topic_result_t** res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev.get()), &cnt);
    if (cnt != 1) throw std::runtime_error("create topic " + topic + ": no topic result");
    if (rd_kafka_topic_result_error(res[0]))
        throw std::runtime_error("create topic " + topic + ": " + rd_kafka_topic_result_error_string(res[0]));
    wait_leaders(rk.get(), topic, partitions);
}

std::size_t delete_topics_with_prefix(const std::string& brokers, const std::string& prefix) {
    if (prefix.empty()) return 0;
    try {
        auto rk = admin_client(brokers);
        const rd_kafka_metadata_t* md = nullptr;
        if (rd_kafka_metadata(rk.get(), 1, nullptr, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) return 0;
        std::vector<rd_kafka_DeleteTopic_t*> del;
        const std::string want = prefix + ".";
        for (int i = 0; i < md->topic_cnt; ++i)
            if (std::string(md->topics[i].topic).rfind(want, 0) == 0)
                del.push_back(rd_kafka_DeleteTopic_new(md->topics[i].topic));
        rd_kafka_metadata_destroy(md);
        if (del.empty()) return 0;
        queue_ptr q(rd_kafka_queue_new(rk.get()));
        auto opts = admin_options(rk.get(), RD_KAFKA_ADMIN_OP_DELETETOPICS);
        rd_kafka_DeleteTopics(rk.get(), del.data(), del.size(), opts.get(), q.get());
        rd_kafka_DeleteTopic_destroy_array(del.data(), del.size());
        event_ptr ev(rd_kafka_queue_poll(q.get(), 30000));
        return del.size();
    } catch (const std::exception&) {
        return 0;
    }
}

topic_cleanup::~topic_cleanup() {
    if (const char* keep = std::getenv("OUTBOX_IT_KEEP"); keep && std::string(keep) == "1") return;
    try {
        delete_topics_with_prefix(env().brokers, prefix);
    } catch (...) {
    }
}

std::string describe_topic_config(const std::string& brokers, const std::string& topic, const std::string& name) {
    auto rk = admin_client(brokers);
    queue_ptr q(rd_kafka_queue_new(rk.get()));
    resource_ptr res(rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str()));
    auto opts = admin_options(rk.get(), RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_ConfigResource_t* arr[] = {res.get()};
    rd_kafka_DescribeConfigs(rk.get(), arr, 1, opts.get(), q.get());
    auto ev = await_result(q.get(), "describe configs of " + topic);
    size_t cnt = 0;
    const rd_kafka_ConfigResource_t** rs =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev.get()), &cnt);
    if (cnt != 1) throw std::runtime_error("describe configs of " + topic + ": no resource");
    if (rd_kafka_ConfigResource_error(rs[0]))
        throw std::runtime_error("describe configs of " + topic + ": " + rd_kafka_ConfigResource_error_string(rs[0]));
    size_t n = 0;
    const rd_kafka_ConfigEntry_t** entries = rd_kafka_ConfigResource_configs(rs[0], &n);
    for (size_t i = 0; i < n; ++i)
        if (name == rd_kafka_ConfigEntry_name(entries[i])) {
            const char* v = rd_kafka_ConfigEntry_value(entries[i]);
            return v ? v : "";
        }
    throw std::runtime_error("describe configs of " + topic + ": no entry " + name);
}

void alter_topic_config(const std::string& brokers, const std::string& topic,
                        const std::map<std::string, std::string>& configs) {
    {
        auto rk = admin_client(brokers);
        queue_ptr q(rd_kafka_queue_new(rk.get()));
        resource_ptr res(rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str()));
        for (const auto& [k, v] : configs) rd_kafka_ConfigResource_set_config(res.get(), k.c_str(), v.c_str());
        auto opts = admin_options(rk.get(), RD_KAFKA_ADMIN_OP_ALTERCONFIGS);
        rd_kafka_ConfigResource_t* arr[] = {res.get()};
        rd_kafka_AlterConfigs(rk.get(), arr, 1, opts.get(), q.get());
        auto ev = await_result(q.get(), "alter configs of " + topic);
        size_t cnt = 0;
        const rd_kafka_ConfigResource_t** rs =
            rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev.get()), &cnt);
        if (cnt != 1) throw std::runtime_error("alter configs of " + topic + ": no resource");
        if (rd_kafka_ConfigResource_error(rs[0]))
            throw std::runtime_error("alter configs of " + topic + ": " + rd_kafka_ConfigResource_error_string(rs[0]));
    }
    // The broker applies a topic config change asynchronously (metadata log).
    bool applied = wait_until(clock::now() + 30s, [&] {
        for (const auto& [k, v] : configs)
            if (describe_topic_config(brokers, topic, k) != v) return false;
        return true;
    }, 200ms);
    if (!applied) throw std::runtime_error("alter configs of " + topic + ": not applied within 30 s");
}

}  // namespace outbox::it::faults
