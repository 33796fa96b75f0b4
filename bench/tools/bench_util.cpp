#include "bench_util.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unistd.h>

namespace outbox::bench {

std::int64_t now_us() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

void sleep_until_us(std::int64_t t_us) noexcept {
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(t_us / 1'000'000);
    ts.tv_nsec = static_cast<long>((t_us % 1'000'000) * 1000);
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
}

rk_ptr make_handle(rd_kafka_type_t type, const std::string& brokers,
                   const std::vector<std::pair<std::string, std::string>>& props,
                   void (*setup)(rd_kafka_conf_t*, void*), void* setup_arg) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](const std::string& k, const std::string& v) {
        if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            throw std::runtime_error("kafka property " + k + "=" + v + ": " + err);
        }
    };
    set("bootstrap.servers", brokers);
    set("log_level", "3");  // errors only: the tools print JSON on stdout, logs on stderr
    for (const auto& [k, v] : props) set(k, v);
    if (setup) setup(conf, setup_arg);
    rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error(std::string("rd_kafka_new: ") + err);
    }
    return rk_ptr{rk};
}

namespace {

struct queue_deleter {
    void operator()(rd_kafka_queue_t* q) const noexcept { rd_kafka_queue_destroy(q); }
};
struct event_deleter {
    void operator()(rd_kafka_event_t* e) const noexcept { rd_kafka_event_destroy(e); }
};
using queue_ptr = std::unique_ptr<rd_kafka_queue_t, queue_deleter>;
using event_ptr = std::unique_ptr<rd_kafka_event_t, event_deleter>;

const rd_kafka_metadata_t* metadata(rd_kafka_t* rk, rd_kafka_topic_t* rkt, int timeout_ms) {
    const rd_kafka_metadata_t* md = nullptr;
    auto err = rd_kafka_metadata(rk, rkt == nullptr ? 1 : 0, rkt, &md, timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md) rd_kafka_metadata_destroy(md);
        return nullptr;
    }
    return md;
}

}  // namespace

void create_topics(const std::string& brokers, const std::vector<std::string>& topics, int partitions,
                   const std::map<std::string, std::string>& configs) {
    if (topics.empty()) return;
    rk_ptr rk = make_handle(RD_KAFKA_PRODUCER, brokers, {});
    char err[512];
    std::vector<rd_kafka_NewTopic_t*> nts;
    for (const auto& t : topics) {
        rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(t.c_str(), partitions, 1, err, sizeof err);
        if (!nt) throw std::runtime_error("NewTopic " + t + ": " + err);
        for (const auto& [k, v] : configs) rd_kafka_NewTopic_set_config(nt, k.c_str(), v.c_str());
        nts.push_back(nt);
    }
    queue_ptr q{rd_kafka_queue_new(rk.get())};
    rd_kafka_CreateTopics(rk.get(), nts.data(), nts.size(), nullptr, q.get());
    event_ptr ev{rd_kafka_queue_poll(q.get(), 60000)};
    rd_kafka_NewTopic_destroy_array(nts.data(), nts.size());
    if (!ev) throw std::runtime_error("CreateTopics: no answer within 60 s");
    if (rd_kafka_event_error(ev.get()))
        throw std::runtime_error(std::string("CreateTopics: ") + rd_kafka_event_error_string(ev.get()));
    std::size_t n = 0;
    const rd_kafka_topic_result_t** res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev.get()), &n);
    for (std::size_t i = 0; i < n; ++i)
        if (rd_kafka_topic_result_error(res[i]) != RD_KAFKA_RESP_ERR_NO_ERROR)
            throw std::runtime_error(std::string("CreateTopics ") + rd_kafka_topic_result_name(res[i]) + ": " +
                                     rd_kafka_topic_result_error_string(res[i]));
    // The controller answered; the broker may not have loaded the partitions yet.
    auto deadline = now_us() + 60'000'000;
    for (const auto& t : topics) {
        for (;;) {
            rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk.get(), t.c_str(), nullptr);
            const rd_kafka_metadata_t* md = metadata(rk.get(), rkt, 5000);
            rd_kafka_topic_destroy(rkt);
            bool ready = md && md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                         md->topics[0].partition_cnt == partitions;
            if (ready)
                for (int p = 0; p < md->topics[0].partition_cnt; ++p)
                    ready = ready && md->topics[0].partitions[p].leader >= 0 &&
                            md->topics[0].partitions[p].err == RD_KAFKA_RESP_ERR_NO_ERROR;
            if (md) rd_kafka_metadata_destroy(md);
            if (ready) break;
            if (now_us() > deadline) throw std::runtime_error("topic " + t + ": no leaders within 60 s");
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
}

int delete_topics_with_prefix(const std::string& brokers, const std::string& prefix) {
    if (prefix.empty()) throw std::runtime_error("delete-topics: empty prefix");
    rk_ptr rk = make_handle(RD_KAFKA_PRODUCER, brokers, {});
    const rd_kafka_metadata_t* md = metadata(rk.get(), nullptr, 10000);
    if (!md) throw std::runtime_error("delete-topics: metadata request failed");
    std::vector<rd_kafka_DeleteTopic_t*> dts;
    for (int i = 0; i < md->topic_cnt; ++i) {
        std::string name = md->topics[i].topic;
        if (name.rfind(prefix, 0) == 0) dts.push_back(rd_kafka_DeleteTopic_new(name.c_str()));
    }
    rd_kafka_metadata_destroy(md);
    if (dts.empty()) return 0;
    queue_ptr q{rd_kafka_queue_new(rk.get())};
    rd_kafka_DeleteTopics(rk.get(), dts.data(), dts.size(), nullptr, q.get());
    event_ptr ev{rd_kafka_queue_poll(q.get(), 60000)};
    int n = static_cast<int>(dts.size());
    rd_kafka_DeleteTopic_destroy_array(dts.data(), dts.size());
    if (!ev) throw std::runtime_error("DeleteTopics: no answer within 60 s");
    if (rd_kafka_event_error(ev.get()))
        throw std::runtime_error(std::string("DeleteTopics: ") + rd_kafka_event_error_string(ev.get()));
    return n;
}

int partition_count(rd_kafka_t* rk, const std::string& topic) {
    for (int attempt = 0; attempt < 50; ++attempt) {
        rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
        const rd_kafka_metadata_t* md = metadata(rk, rkt, 5000);
        rd_kafka_topic_destroy(rkt);
        int n = -1;
        if (md && md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            n = md->topics[0].partition_cnt;
        if (md) rd_kafka_metadata_destroy(md);
        if (n > 0) return n;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw std::runtime_error("topic " + topic + " does not exist (create it first)");
}

void watermarks(rd_kafka_t* rk, const std::string& topic, int partition, std::int64_t* lo, std::int64_t* hi) {
    // A partition just created may answer NOT_LEADER for a moment after the
    // metadata already lists its leader: retry, bounded.
    const auto deadline = now_us() + 15'000'000;
    for (;;) {
        auto err = rd_kafka_query_watermark_offsets(rk, topic.c_str(), partition, lo, hi, 5000);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return;
        if (now_us() > deadline)
            throw std::runtime_error("watermarks " + topic + "/" + std::to_string(partition) + ": " +
                                     rd_kafka_err2str(err));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

std::int64_t sum_high_watermarks(rd_kafka_t* rk, const std::vector<std::string>& topics,
                                 const std::vector<int>& parts) {
    std::int64_t sum = 0;
    for (std::size_t t = 0; t < topics.size(); ++t) {
        for (int p = 0; p < parts[t]; ++p) {
            std::int64_t lo = 0, hi = 0;
            watermarks(rk, topics[t], p, &lo, &hi);
            sum += hi;
        }
    }
    return sum;
}

std::optional<proc_sample> sample_process(int pid) {
    proc_sample s;
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    if (!status) return std::nullopt;
    std::string line;
    bool zombie = false;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) s.rss_kib = std::stoll(line.substr(6));
        else if (line.rfind("VmHWM:", 0) == 0) s.hwm_kib = std::stoll(line.substr(6));
        else if (line.rfind("State:", 0) == 0) zombie = line.find('Z') != std::string::npos;
    }
    if (zombie) return std::nullopt;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    // Fields after the command name, which is in parentheses and may hold spaces.
    auto close = all.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream rest(all.substr(close + 2));
    std::vector<std::string> f;
    for (std::string x; rest >> x;) f.push_back(x);
    // stat(5): field 3 is state; utime is field 14, stime 15 -> indexes 11, 12 here.
    if (f.size() < 13) return std::nullopt;
    static const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
    s.cpu_s = (std::stod(f[11]) + std::stod(f[12])) / tick;
    return s;
}

double percentile(const std::vector<double>& sorted, double p) {
    if (sorted.empty()) throw std::runtime_error("percentile of nothing");
    if (p <= 0) return sorted.front();
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
    rank = std::clamp<std::size_t>(rank, 1, sorted.size());
    return sorted[rank - 1];
}

std::optional<std::string> copy_unescape(const std::string& field) {
    if (field == "\\N") return std::nullopt;
    std::string out;
    out.reserve(field.size());
    for (std::size_t i = 0; i < field.size(); ++i) {
        char c = field[i];
        if (c != '\\' || i + 1 == field.size()) {
            out += c;
            continue;
        }
        char e = field[++i];
        switch (e) {
            case 't': out += '\t'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'v': out += '\v'; break;
            default: out += e; break;
        }
    }
    return out;
}

}  // namespace outbox::bench
