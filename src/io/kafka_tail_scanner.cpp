#include "outbox_relay/io/kafka_tail_scanner.hpp"

#include "outbox_relay/io/log.hpp"
#include "outbox_relay/outbox.hpp"

#include <boost/asio/post.hpp>
#include <librdkafka/rdkafka.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace outbox::io {
namespace {

using steady = std::chrono::steady_clock;
constexpr std::string_view mod = "kafka/scan";

// Doubling stops here: 2^40 records per partition is more than any topic holds,
// and it keeps end - n far from overflow.
constexpr std::int64_t max_chunk = std::int64_t{1} << 40;

// Values of these properties never appear in an error message or log.
bool is_secret(std::string_view name) noexcept {
    return name.find("password") != std::string_view::npos || name.find("secret") != std::string_view::npos ||
           name.find("sasl.oauthbearer.config") != std::string_view::npos ||
           name.find("ssl.key.pem") != std::string_view::npos;
}

// The user's -X settings are written for the producer; a consumer rejects the
// producer-only ones (acks, linger.ms, ...). Only what is needed to reach and
// authenticate to the cluster is passed on.
bool is_connection_property(std::string_view name) noexcept {
    for (std::string_view prefix : {"security.", "sasl.", "ssl.", "socket."})
        if (name.starts_with(prefix)) return true;
    return name == "client.id" || name == "broker.address.family" || name == "enable.ssl.certificate.verification";
}

struct conf_deleter {
    void operator()(rd_kafka_conf_t* c) const noexcept { rd_kafka_conf_destroy(c); }
};
using conf_ptr = std::unique_ptr<rd_kafka_conf_t, conf_deleter>;

struct tpl_deleter {
    void operator()(rd_kafka_topic_partition_list_t* l) const noexcept { rd_kafka_topic_partition_list_destroy(l); }
};
using tpl_ptr = std::unique_ptr<rd_kafka_topic_partition_list_t, tpl_deleter>;

struct msg_deleter {
    void operator()(rd_kafka_message_t* m) const noexcept { rd_kafka_message_destroy(m); }
};
using msg_ptr = std::unique_ptr<rd_kafka_message_t, msg_deleter>;

struct topic_deleter {
    void operator()(rd_kafka_topic_t* t) const noexcept { rd_kafka_topic_destroy(t); }
};
using topic_ptr = std::unique_ptr<rd_kafka_topic_t, topic_deleter>;

struct metadata_deleter {
    void operator()(const rd_kafka_metadata_t* m) const noexcept { rd_kafka_metadata_destroy(m); }
};
using metadata_ptr = std::unique_ptr<const rd_kafka_metadata_t, metadata_deleter>;

// Closes and destroys the consumer. Nothing was subscribed or committed, so the
// close only drops the assignment and does not wait for a group coordinator.
struct consumer_deleter {
    void operator()(rd_kafka_t* rk) const noexcept {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
};
using consumer_ptr = std::unique_ptr<rd_kafka_t, consumer_deleter>;

void set_prop(rd_kafka_conf_t* conf, const std::string& name, const std::string& value) {
    char errstr[512];
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        throw tail_scan_error(fmt::format("kafka tail scan: property {}={}: {}", name,
                                          is_secret(name) ? std::string("********") : value, errstr),
                              true);
}

// librdkafka logs from its own threads; spdlog's logger is thread-safe. A scan
// is short, so only warnings and errors (e.g. connection refused) reach info.
void log_cb(const rd_kafka_t*, int level, const char* fac, const char* buf) {
    if (level <= 4)
        log::warn(mod, "event=rdkafka_log fac={} msg={}", fac, log::quote(buf));
    else
        log::debug(mod, "event=rdkafka_log fac={} msg={}", fac, log::quote(buf));
}

// Errors librdkafka reports outside a message (served by consumer_poll on the
// calling thread, so no locking). Kept for the timeout message.
struct error_state {
    rd_kafka_resp_err_t permanent = RD_KAFKA_RESP_ERR_NO_ERROR;
    std::string last;
};

void error_cb(rd_kafka_t*, int err, const char* reason, void* opaque) {
    auto* st = static_cast<error_state*>(opaque);
    const auto e = static_cast<rd_kafka_resp_err_t>(err);
    st->last = fmt::format("{} ({})", reason, rd_kafka_err2name(e));
    if (e == RD_KAFKA_RESP_ERR__AUTHENTICATION || e == RD_KAFKA_RESP_ERR__FATAL) st->permanent = e;
    log::debug(mod, "event=rdkafka_error err={} reason={}", rd_kafka_err2name(e), log::quote(reason));
}

// Errors that waiting cannot cure.
bool is_permanent(rd_kafka_resp_err_t e) noexcept {
    switch (e) {
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR__SSL:
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:     // a name the brokers refuse
    case RD_KAFKA_RESP_ERR_INVALID_REQUEST:
        return true;
    default:
        return false;
    }
}

std::string unique_group_id() {
    // Never joined or committed; unique anyway so that a mistake could not
    // disturb a real group.
    static std::atomic<std::uint64_t> counter{0};
    return fmt::format("outbox-relay-tail-scan-{}-{}-{}", ::getpid(),
                       steady::now().time_since_epoch().count(), counter.fetch_add(1));
}

consumer_ptr make_consumer(const tail_scan_options& opts, error_state& errs) {
    conf_ptr conf{rd_kafka_conf_new()};
    set_prop(conf.get(), "client.id", "outbox-relay-tail-scan");
    for (const auto& [name, value] : opts.properties)
        if (is_connection_property(name)) set_prop(conf.get(), name, value);
    set_prop(conf.get(), "bootstrap.servers", opts.brokers);
    set_prop(conf.get(), "group.id", unique_group_id());
    set_prop(conf.get(), "enable.auto.commit", "false");
    set_prop(conf.get(), "enable.auto.offset.store", "false");
    set_prop(conf.get(), "isolation.level", "read_committed");
    set_prop(conf.get(), "enable.partition.eof", "true");
    // The scan must not create the topic it looks at: a missing topic means
    // nothing was produced, and creating it would pick default partitioning.
    set_prop(conf.get(), "allow.auto.create.topics", "false");
    // A chunk start below the log start (retention ran meanwhile) moves to the
    // first record still there instead of failing the partition.
    set_prop(conf.get(), "auto.offset.reset", "earliest");
    // EOF is only signalled by a fetch AT the high watermark, which the broker
    // holds for fetch.wait.max.ms when no data comes: keep that short.
    set_prop(conf.get(), "fetch.wait.max.ms", "10");
    set_prop(conf.get(), "fetch.error.backoff.ms", "100");
    rd_kafka_conf_set_log_cb(conf.get(), &log_cb);
    rd_kafka_conf_set_error_cb(conf.get(), &error_cb);
    rd_kafka_conf_set_opaque(conf.get(), &errs);

    char errstr[512];
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), errstr, sizeof errstr);
    if (!rk) throw tail_scan_error(fmt::format("kafka tail scan: cannot create consumer: {}", errstr), true);
    conf.release();  // owned by rk now
    // Logs and errors are then served by consumer_poll on this thread.
    rd_kafka_poll_set_consumer(rk);
    return consumer_ptr{rk};
}

struct partition_state {
    std::int32_t id = 0;
    std::int64_t lo = 0;
    std::int64_t hi = 0;
    std::int64_t start = 0;   // chunk [start, end) of the current round
    std::int64_t end = 0;
    bool done = false;
    bool reached = false;     // the current chunk has been read to its end
    bool saw_below = false;   // the current chunk held a record with commit LSN < from
};

class scanner {
public:
    scanner(const tail_scan_options& opts, const std::string& topic, lsn from)
        : opts_(opts), topic_(topic), from_(from), t0_(steady::now()), deadline_(t0_ + opts.deadline) {}

    tail_scan_result run() {
        rk_ = make_consumer(opts_, errs_);
        rkt_.reset(rd_kafka_topic_new(rk_.get(), topic_.c_str(), nullptr));
        if (!rkt_)
            throw tail_scan_error(fmt::format("kafka tail scan of topic {}: cannot create topic handle: {}", topic_,
                                              rd_kafka_err2str(rd_kafka_last_error())),
                                  true);
        std::vector<std::int32_t> ids = partitions();
        res_.partitions = ids.size();
        if (!ids.empty()) watermarks(ids);
        for (std::size_t i = 0; i < parts_.size(); ++i) index_[parts_[i].id] = i;

        std::int64_t chunk = std::max<std::int64_t>(1, opts_.first_chunk);
        while (std::any_of(parts_.begin(), parts_.end(), [](const partition_state& p) { return !p.done; })) {
            if (opts_.max_rounds > 0 && res_.rounds >= opts_.max_rounds) break;
            round(chunk);
            chunk = std::min(chunk * 2, max_chunk);
        }
        rkt_.reset();
        rk_.reset();
        res_.took = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0_);
        log::info(mod,
                  "event=tail_scanned topic={} from={} partitions={} rounds={} records_read={} present={} "
                  "without_position={} foreign={} other_timeline={} own_seen={} newest_own={} took_ms={}",
                  topic_, from_.to_string(), res_.partitions, res_.rounds, res_.records_read, res_.present.size(),
                  res_.records_without_position, res_.foreign_records, res_.other_timeline, res_.own_records_seen,
                  res_.newest_own.to_string(), res_.took.count());
        return std::move(res_);
    }

private:
    // Milliseconds left before the deadline, at least 1 so librdkafka calls do
    // not treat 0 as "don't wait at all" before we got to check the deadline.
    int remaining_ms() const {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - steady::now());
        return static_cast<int>(std::clamp<std::int64_t>(left.count(), 1, 1 << 30));
    }
    bool cancelled() const { return opts_.cancel != nullptr && opts_.cancel->load(std::memory_order_relaxed); }
    bool expired() const { return steady::now() >= deadline_ || cancelled(); }

    [[noreturn]] void fail(std::string_view what, std::string_view cause, bool permanent = false) const {
        throw tail_scan_error(
            fmt::format("kafka tail scan of topic {} failed after {} ms {}: {}", topic_,
                        std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0_).count(), what,
                        cancelled()      ? std::string_view("cancelled")
                        : cause.empty() ? std::string_view("no answer from the brokers")
                                        : cause),
            permanent);
    }
    void check_permanent(std::string_view what) const {
        if (errs_.permanent != RD_KAFKA_RESP_ERR_NO_ERROR) fail(what, errs_.last, true);
    }
    // Short pause between retries that still serves logs and error callbacks.
    void backoff() { msg_ptr{rd_kafka_consumer_poll(rk_.get(), std::min(100, remaining_ms()))}; }

    // Partition ids of the topic; empty when the topic does not exist.
    std::vector<std::int32_t> partitions() {
        for (;;) {
            check_permanent("reading metadata");
            if (expired()) fail("reading metadata", errs_.last);
            const rd_kafka_metadata_t* raw = nullptr;
            const auto err = rd_kafka_metadata(rk_.get(), 0, rkt_.get(), &raw, remaining_ms());
            metadata_ptr md{raw};
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                errs_.last = fmt::format("metadata: {}", rd_kafka_err2str(err));
                backoff();
                continue;
            }
            const rd_kafka_metadata_topic_t* t = nullptr;
            for (int i = 0; i < md->topic_cnt; ++i)
                if (topic_ == md->topics[i].topic) t = &md->topics[i];
            if (!t) {
                errs_.last = "metadata: topic missing from the answer";
                backoff();
                continue;
            }
            if (t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return {};
            if (is_permanent(t->err)) fail("reading metadata", rd_kafka_err2str(t->err), true);
            // LEADER_NOT_AVAILABLE right after creation, or a partition list
            // still empty: the cluster is settling, ask again.
            if (t->err != RD_KAFKA_RESP_ERR_NO_ERROR || t->partition_cnt == 0) {
                errs_.last = fmt::format("metadata: {}", rd_kafka_err2str(t->err));
                backoff();
                continue;
            }
            std::vector<std::int32_t> ids;
            for (int i = 0; i < t->partition_cnt; ++i) ids.push_back(t->partitions[i].id);
            std::sort(ids.begin(), ids.end());
            return ids;
        }
    }

    // Low and high watermarks of every partition, batched: ListOffsets for
    // "earliest" (-2) and "latest" (-1), one request per partition leader
    // each (rd_kafka_offsets_for_times), instead of two per partition. With
    // read_committed, "latest" is the last stable offset: what can be read.
    void watermarks(const std::vector<std::int32_t>& ids) {
        std::vector<std::int64_t> lo = offsets_at(ids, RD_KAFKA_OFFSET_BEGINNING);
        std::vector<std::int64_t> hi = offsets_at(ids, RD_KAFKA_OFFSET_END);
        for (std::size_t i = 0; i < ids.size(); ++i) {
            partition_state p;
            p.id = ids[i];
            p.lo = lo[i];
            p.hi = std::max(hi[i], lo[i]);
            p.end = p.hi;
            // Nothing to read: an empty partition is done before any round.
            p.done = p.hi <= p.lo;
            parts_.push_back(p);
        }
    }

    std::vector<std::int64_t> offsets_at(const std::vector<std::int32_t>& ids, std::int64_t which) {
        for (;;) {
            check_permanent("reading watermarks");
            if (expired()) fail("reading watermarks", errs_.last);
            tpl_ptr l{rd_kafka_topic_partition_list_new(static_cast<int>(ids.size()))};
            for (std::int32_t id : ids) rd_kafka_topic_partition_list_add(l.get(), topic_.c_str(), id)->offset = which;
            const auto err = rd_kafka_offsets_for_times(rk_.get(), l.get(), std::min(remaining_ms(), 5000));
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
                std::vector<std::int64_t> out(ids.size(), -1);
                bool all = true;
                for (int i = 0; i < l->cnt; ++i) {
                    const auto& e = l->elems[i];
                    const auto at = std::find(ids.begin(), ids.end(), e.partition);
                    if (at == ids.end()) continue;
                    if (e.err != RD_KAFKA_RESP_ERR_NO_ERROR || e.offset < 0) {
                        if (is_permanent(e.err))
                            fail(fmt::format("reading watermarks of partition {}", e.partition),
                                 rd_kafka_err2str(e.err), true);
                        errs_.last = fmt::format("watermarks of partition {}: {}", e.partition,
                                                 rd_kafka_err2str(e.err));
                        all = false;
                        continue;
                    }
                    out[static_cast<std::size_t>(at - ids.begin())] = e.offset;
                }
                if (all && std::find(out.begin(), out.end(), -1) == out.end()) return out;
            } else {
                if (is_permanent(err)) fail("reading watermarks", rd_kafka_err2str(err), true);
                errs_.last = fmt::format("watermarks: {}", rd_kafka_err2str(err));
            }
            backoff();
        }
    }

    void pause(partition_state& p) {
        tpl_ptr l{rd_kafka_topic_partition_list_new(1)};
        rd_kafka_topic_partition_list_add(l.get(), topic_.c_str(), p.id);
        // A failed pause only costs fetching data we then ignore.
        (void)rd_kafka_pause_partitions(rk_.get(), l.get());
    }

    // Marks the chunk of `p` as read to its end.
    void reach(partition_state& p, std::size_t& pending) {
        if (p.reached) return;
        p.reached = true;
        --pending;
        pause(p);
    }

    void collect(const rd_kafka_message_t& m, partition_state& p) {
        ++res_.records_read;
        rd_kafka_headers_t* hdrs = nullptr;
        const void* lsn_v = nullptr;
        const void* seq_v = nullptr;
        std::size_t lsn_n = 0, seq_n = 0;
        // header_get_last: if a record somehow carries a header twice, the
        // value written last is the one the relay meant. The header names are
        // string literals, so .data() is NUL-terminated.
        if (rd_kafka_message_headers(&m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            rd_kafka_header_get_last(hdrs, header_commit_lsn.data(), &lsn_v, &lsn_n) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            rd_kafka_header_get_last(hdrs, header_seq.data(), &seq_v, &seq_n) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            !lsn_v || !seq_v) {
            ++res_.records_without_position;
            return;
        }
        auto pos = parse_position({static_cast<const char*>(lsn_v), lsn_n}, {static_cast<const char*>(seq_v), seq_n});
        if (!pos) {
            ++res_.records_without_position;
            return;
        }
        if (!opts_.source.empty()) {
            const void* src_v = nullptr;
            std::size_t src_n = 0;
            std::optional<source_id> src;
            if (rd_kafka_header_get_last(hdrs, header_source.data(), &src_v, &src_n) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                src_v)
                if (auto parsed = source_id::parse({static_cast<const char*>(src_v), src_n})) src = std::move(*parsed);
            if (!src || !src->same_origin(opts_.source)) {
                ++res_.foreign_records;
                return;
            }
            res_.own_records_seen = true;
            res_.newest_own = std::max(res_.newest_own, pos->commit_lsn);
            if (pos->commit_lsn < from_) {
                p.saw_below = true;
            } else if (src->timeline == opts_.source.timeline) {
                res_.present.insert(*pos);
            } else {
                ++res_.other_timeline;
            }
            return;
        }
        if (pos->commit_lsn < from_)
            p.saw_below = true;
        else
            res_.present.insert(*pos);
    }

    void round(std::int64_t chunk) {
        ++res_.rounds;
        tpl_ptr assignment{rd_kafka_topic_partition_list_new(static_cast<int>(parts_.size()))};
        std::size_t pending = 0;
        for (auto& p : parts_) {
            if (p.done) continue;
            p.start = std::max(p.lo, p.end - chunk);
            p.reached = false;
            p.saw_below = false;
            rd_kafka_topic_partition_list_add(assignment.get(), topic_.c_str(), p.id)->offset = p.start;
            ++pending;
        }
        // The pause of a partition that reached its chunk end outlives
        // assign() (it is a flag on librdkafka's partition object), so lift it.
        (void)rd_kafka_resume_partitions(rk_.get(), assignment.get());
        // assign() replaces the previous round's assignment; librdkafka drops
        // messages still queued from it.
        if (const auto err = rd_kafka_assign(rk_.get(), assignment.get()); err != RD_KAFKA_RESP_ERR_NO_ERROR)
            fail("assigning partitions", rd_kafka_err2str(err), true);

        while (pending > 0) {
            check_permanent("fetching");
            if (expired())
                fail(fmt::format("fetching (round {}, {} partitions not read to their chunk end)", res_.rounds,
                                 pending),
                     errs_.last);
            msg_ptr m{rd_kafka_consumer_poll(rk_.get(), std::min(100, remaining_ms()))};
            if (!m) continue;
            const auto it = m->rkt && topic_ == rd_kafka_topic_name(m->rkt) ? index_.find(m->partition) : index_.end();
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                // The log ends here, so nothing of the chunk is still to come.
                if (it != index_.end() && !parts_[it->second].done) reach(parts_[it->second], pending);
                continue;
            }
            if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                if (is_permanent(m->err)) fail("fetching", rd_kafka_err2str(m->err), true);
                // Transient (leader moved, broker gone): librdkafka retries by
                // itself; the deadline bounds how long we let it.
                errs_.last = fmt::format("fetch partition {}: {}", m->partition, rd_kafka_err2str(m->err));
                log::debug(mod, "event=fetch_error topic={} partition={} err={}", topic_, m->partition,
                           rd_kafka_err2name(m->err));
                continue;
            }
            if (it == index_.end()) continue;
            partition_state& p = parts_[it->second];
            if (p.done || p.reached) continue;  // fetched before the pause took effect
            if (m->offset >= p.start && m->offset < p.end) collect(*m, p);
            // A record at or past end-1 means everything before end was
            // delivered (offsets only grow within a partition); past end also
            // covers an end-1 that is a control record or was compacted away.
            if (m->offset >= p.end - 1) reach(p, pending);
        }

        for (auto& p : parts_) {
            if (p.done) continue;
            if (p.saw_below || p.start <= p.lo)
                p.done = true;
            else
                p.end = p.start;
        }
    }

    const tail_scan_options& opts_;
    const std::string& topic_;
    const lsn from_;
    const steady::time_point t0_;
    const steady::time_point deadline_;
    error_state errs_;
    consumer_ptr rk_;
    topic_ptr rkt_;
    std::vector<partition_state> parts_;
    std::unordered_map<std::int32_t, std::size_t> index_;
    tail_scan_result res_;
};

}  // namespace

tail_scan_result scan_topic_tail(const tail_scan_options& opts, const std::string& topic, outbox::lsn from) {
    return scanner(opts, topic, from).run();
}

tail_scan_pool::tail_scan_pool(boost::asio::io_context& ioc, tail_scan_options base, std::size_t max_parallel)
    : ioc_(ioc), base_(std::move(base)) {
    base_.cancel = &cancel_;
    for (std::size_t i = 0; i < std::max<std::size_t>(1, max_parallel); ++i) workers_.emplace_back([this] { work(); });
}

tail_scan_pool::~tail_scan_pool() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
        queue_.clear();
    }
    cancel_.store(true);
    cv_.notify_all();
    for (auto& t : workers_) t.join();
}

void tail_scan_pool::submit_probe(topic_affixes affixes, outbox::source_id source, probe_done_fn done) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(job{{}, outbox::lsn{}, std::move(source), {}, std::move(affixes), std::move(done)});
    }
    cv_.notify_one();
}

void tail_scan_pool::submit(std::string topic, outbox::lsn from, outbox::source_id source, done_fn done) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(job{std::move(topic), from, std::move(source), std::move(done), {}, {}});
    }
    cv_.notify_one();
}

void tail_scan_pool::work() {
    for (;;) {
        job j;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (stopping_) return;
            j = std::move(queue_.front());
            queue_.pop_front();
        }
        if (j.probe_done) {
            std::optional<gap_probe_result> result;
            std::optional<tail_scan_error> error;
            try {
                tail_scan_options o = base_;
                o.source = std::move(j.source);
                result = probe_own_records(o, j.affixes);
            } catch (const tail_scan_error& e) {
                error = e;
            } catch (const std::exception& e) {
                error = tail_scan_error(fmt::format("gap probe: {}", e.what()), false);
            }
            boost::asio::post(ioc_, [w = std::weak_ptr<int>(alive_), done = std::move(j.probe_done),
                                     result = std::move(result), error = std::move(error)]() mutable {
                if (w.expired()) return;
                done(std::move(result), std::move(error));
            });
            continue;
        }
        std::optional<tail_scan_result> result;
        std::optional<tail_scan_error> error;
        try {
            tail_scan_options o = base_;
            o.source = std::move(j.source);
            result = scan_topic_tail(o, j.topic, j.from);
        } catch (const tail_scan_error& e) {
            error = e;
        } catch (const std::exception& e) {
            // std::bad_alloc and the like: worth another try later.
            error = tail_scan_error(fmt::format("kafka tail scan of topic {}: {}", j.topic, e.what()), false);
        }
        // The completion runs on the loop, and only while the pool lives.
        boost::asio::post(ioc_, [w = std::weak_ptr<int>(alive_), done = std::move(j.done), result = std::move(result),
                                 error = std::move(error)]() mutable {
            if (w.expired()) return;
            done(std::move(result), std::move(error));
        });
    }
}

gap_probe_result probe_own_records(const tail_scan_options& opts, const topic_affixes& affixes) {
    gap_probe_result out;
    tail_scan_options o = opts;
    o.max_rounds = 1;  // the newest records of each partition only
    // The topic names: one metadata request for all of them.
    error_state errs;
    consumer_ptr rk = make_consumer(o, errs);
    const rd_kafka_metadata_t* raw = nullptr;
    const auto err = rd_kafka_metadata(rk.get(), 1, nullptr, &raw, static_cast<int>(o.deadline.count()));
    metadata_ptr md{raw};
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        throw tail_scan_error(fmt::format("gap probe: cannot list topics: {}", rd_kafka_err2str(err)), false);
    std::vector<std::string> names;
    for (int i = 0; i < md->topic_cnt; ++i) {
        const std::string_view t = md->topics[i].topic;
        const bool reachable = std::any_of(affixes.begin(), affixes.end(), [&](const auto& a) {
            return t.size() >= a.first.size() + a.second.size() && t.starts_with(a.first) && t.ends_with(a.second);
        });
        if (!reachable) continue;
        if (t.starts_with("__")) continue;  // Kafka's own
        names.emplace_back(t);
    }
    md.reset();
    rk.reset();
    for (const std::string& t : names) {
        ++out.topics_probed;
        // Every record of this origin is below LSN max: the first chunk decides.
        auto r = scan_topic_tail(o, t, lsn{~std::uint64_t{0}});
        if (r.own_records_seen && (!out.found || r.newest_own > out.newest_own)) {
            out.found = true;
            out.newest_own = r.newest_own;
            out.topic = t;
        }
    }
    return out;
}

}  // namespace outbox::io
