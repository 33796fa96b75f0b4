#include "checker.hpp"

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unistd.h>

namespace outbox::check {
namespace {

using clock = std::chrono::steady_clock;
using opt_string = std::optional<std::string>;

// ---- the table side -------------------------------------------------------

struct row {
    opt_string key;
    opt_string type;
    opt_string payload;
    opt_string order;
    std::string topic;
};

struct topic_template {
    std::vector<std::string> literals;  // literals.size() == columns.size() + 1
    std::vector<std::string> columns;
};

topic_template parse_template(const std::string& t) {
    topic_template out;
    std::string lit;
    for (std::size_t i = 0; i < t.size(); ++i) {
        if (t[i] == '{') {
            auto close = t.find('}', i);
            if (close == std::string::npos || close == i + 1)
                throw std::runtime_error("outbox-check: bad topic template: " + t);
            out.literals.push_back(lit);
            lit.clear();
            out.columns.push_back(t.substr(i + 1, close - i - 1));
            i = close;
        } else {
            lit.push_back(t[i]);
        }
    }
    out.literals.push_back(lit);
    return out;
}

std::string quote_ident(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"') out.push_back('"');
        out.push_back(c);
    }
    return out + "\"";
}

std::string quote_table(const std::string& t) {
    auto dot = t.find('.');
    if (dot == std::string::npos) return quote_ident(t);
    return quote_ident(t.substr(0, dot)) + "." + quote_ident(t.substr(dot + 1));
}

struct pg_conn_deleter {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
struct pg_result_deleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using pg_result_ptr = std::unique_ptr<PGresult, pg_result_deleter>;

// All rows, keyed by id. Single-row mode, so a million-row table is streamed
// instead of materialised twice.
struct table_snapshot {
    std::vector<row> rows;
    std::unordered_map<std::string, std::size_t> by_id;
    std::set<std::string> topics;
};

table_snapshot read_rows(const check_options& o, const topic_template& tpl) {
    std::unique_ptr<PGconn, pg_conn_deleter> conn(PQconnectdb(o.postgres.c_str()));
    if (PQstatus(conn.get()) != CONNECTION_OK)
        throw std::runtime_error(std::string("outbox-check: postgres connect failed: ") + PQerrorMessage(conn.get()));
    std::string sql = "SELECT " + quote_ident(o.id_column) + "::text, " + quote_ident(o.key_column) + "::text, " +
                      quote_ident(o.type_column) + "::text, " + quote_ident(o.payload_column) + "::text, " +
                      (o.order_column.empty() ? std::string("NULL::text") : quote_ident(o.order_column) + "::text");
    for (const auto& c : tpl.columns) sql += ", " + quote_ident(c) + "::text";
    sql += " FROM " + quote_table(o.table);
    if (!PQsendQuery(conn.get(), sql.c_str()))
        throw std::runtime_error(std::string("outbox-check: query failed: ") + PQerrorMessage(conn.get()));
    PQsetSingleRowMode(conn.get());
    table_snapshot snap;
    auto get = [](PGresult* r, int col) -> opt_string {
        if (PQgetisnull(r, 0, col)) return std::nullopt;
        return std::string(PQgetvalue(r, 0, col), static_cast<std::size_t>(PQgetlength(r, 0, col)));
    };
    std::string error;
    for (;;) {
        pg_result_ptr r(PQgetResult(conn.get()));
        if (!r) break;
        auto st = PQresultStatus(r.get());
        if (st == PGRES_TUPLES_OK) continue;  // end of the row stream
        if (st != PGRES_SINGLE_TUPLE) {
            error = PQresultErrorMessage(r.get());
            continue;  // drain to the final null result
        }
        auto id = get(r.get(), 0);
        if (!id) continue;  // a NULL id cannot be matched; the relay cannot send it either
        row rw{get(r.get(), 1), get(r.get(), 2), get(r.get(), 3), get(r.get(), 4), {}};
        for (std::size_t i = 0; i < tpl.columns.size(); ++i) {
            rw.topic += tpl.literals[i];
            rw.topic += get(r.get(), static_cast<int>(5 + i)).value_or("");
        }
        rw.topic += tpl.literals.back();
        snap.topics.insert(rw.topic);
        snap.by_id.emplace(*id, snap.rows.size());
        snap.rows.push_back(std::move(rw));
    }
    if (!error.empty()) throw std::runtime_error("outbox-check: reading " + o.table + " failed: " + error);
    return snap;
}

std::size_t count_rows(const check_options& o) {
    std::unique_ptr<PGconn, pg_conn_deleter> conn(PQconnectdb(o.postgres.c_str()));
    if (PQstatus(conn.get()) != CONNECTION_OK)
        throw std::runtime_error(std::string("outbox-check: postgres connect failed: ") + PQerrorMessage(conn.get()));
    pg_result_ptr r(PQexec(conn.get(), ("SELECT count(*) FROM " + quote_table(o.table) +
                                        " WHERE " + quote_ident(o.id_column) + " IS NOT NULL").c_str()));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1)
        throw std::runtime_error("outbox-check: counting " + o.table + " failed: " + PQresultErrorMessage(r.get()));
    return std::stoull(PQgetvalue(r.get(), 0, 0));
}

// ---- the Kafka side -------------------------------------------------------

struct record {
    std::size_t topic;  // index into kafka_reader::topic_names_
    std::int32_t partition;
    std::int64_t offset;
    std::int64_t timestamp_ms;
    opt_string id;
    opt_string key;
    opt_string value;
    opt_string type;
    opt_string commit_lsn;
    opt_string seq;
};

opt_string header(rd_kafka_headers_t* hdrs, const char* name) {
    if (!hdrs) return std::nullopt;
    const void* v = nullptr;
    std::size_t n = 0;
    if (rd_kafka_header_get_last(hdrs, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR) return std::nullopt;
    if (!v) return std::string();
    return std::string(static_cast<const char*>(v), n);
}

class kafka_reader {
public:
    explicit kafka_reader(const std::string& brokers) {
        char err[512];
        rd_kafka_conf_t* conf = rd_kafka_conf_new();
        auto set = [&](const char* k, const std::string& v) {
            if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
                rd_kafka_conf_destroy(conf);
                throw std::runtime_error(std::string("outbox-check: kafka config ") + k + ": " + err);
            }
        };
        set("bootstrap.servers", brokers);
        // assign() needs a group id, but nothing is committed and no group is
        // joined (librdkafka 2.0.2 cannot join groups on Kafka 4).
        set("group.id", "outbox-check-" + std::to_string(::getpid()));
        set("enable.auto.commit", "false");
        set("enable.auto.offset.store", "false");
        set("isolation.level", "read_committed");
        set("enable.partition.eof", "true");
        set("fetch.wait.max.ms", "100");
        set("log_level", "3");
        rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
        if (!rk_) throw std::runtime_error(std::string("outbox-check: consumer: ") + err);
        rd_kafka_poll_set_consumer(rk_);
    }
    ~kafka_reader() {
        rd_kafka_assign(rk_, nullptr);
        rd_kafka_consumer_close(rk_);
        rd_kafka_destroy(rk_);
    }
    kafka_reader(const kafka_reader&) = delete;
    kafka_reader& operator=(const kafka_reader&) = delete;

    // Adds the partitions of `topic` to the assignment (from the beginning).
    // Returns false when the topic does not exist (yet).
    bool add_topic(const std::string& topic) {
        if (known_.count(topic)) return true;
        rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk_, topic.c_str(), nullptr);
        const rd_kafka_metadata_t* md = nullptr;
        auto err = rd_kafka_metadata(rk_, 0, rkt, &md, 10000);
        rd_kafka_topic_destroy(rkt);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
            throw std::runtime_error("outbox-check: metadata for " + topic + ": " + rd_kafka_err2str(err));
        bool ok = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partition_cnt > 0;
        int parts = ok ? md->topics[0].partition_cnt : 0;
        rd_kafka_metadata_destroy(md);
        if (!ok) return false;
        known_.insert(topic);
        topic_index_[topic] = topic_names_.size();
        topic_names_.push_back(topic);
        for (int p = 0; p < parts; ++p) parts_[{topic, p}] = part_state{};
        reassign();
        return true;
    }

    // Reads every assigned partition up to the high watermark as it is now.
    // Returns false when `deadline` passed first (an open Kafka transaction
    // holds the read_committed end below the high watermark, or the broker is
    // down); what was read is kept either way.
    bool catch_up(clock::time_point deadline, std::vector<record>& out) {
        std::map<std::pair<std::string, int>, std::int64_t> target;
        for (auto& [tp, st] : parts_) {
            std::int64_t lo = 0, hi = 0;
            auto err = rd_kafka_query_watermark_offsets(rk_, tp.first.c_str(), tp.second, &lo, &hi, 5000);
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
            target[tp] = hi;
        }
        auto done = [&] {
            for (auto& [tp, hi] : target) {
                const auto& st = parts_[tp];
                if (st.next < hi && st.eof < hi) return false;
            }
            return true;
        };
        while (!done()) {
            if (clock::now() >= deadline) return false;
            rd_kafka_message_t* m = rd_kafka_consumer_poll(rk_, 200);
            if (!m) continue;
            std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> guard(m, rd_kafka_message_destroy);
            if (!m->rkt) continue;
            std::string topic = rd_kafka_topic_name(m->rkt);
            auto it = parts_.find({topic, m->partition});
            if (it == parts_.end()) continue;
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                it->second.eof = std::max(it->second.eof, m->offset);
                continue;
            }
            if (m->err) continue;  // transient fetch errors: the deadline bounds them
            it->second.next = m->offset + 1;
            record r;
            r.topic = topic_index_[topic];
            r.partition = m->partition;
            r.offset = m->offset;
            r.timestamp_ms = rd_kafka_message_timestamp(m, nullptr);
            if (m->key) r.key = std::string(static_cast<const char*>(m->key), m->key_len);
            if (m->payload) r.value = std::string(static_cast<const char*>(m->payload), m->len);
            rd_kafka_headers_t* hdrs = nullptr;
            if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) hdrs = nullptr;
            r.id = header(hdrs, "id");
            r.type = header(hdrs, "type");
            r.commit_lsn = header(hdrs, "outbox-relay.commit-lsn");
            r.seq = header(hdrs, "outbox-relay.seq");
            out.push_back(std::move(r));
        }
        return true;
    }

    const std::string& topic_name(std::size_t i) const { return topic_names_[i]; }

private:
    struct part_state {
        std::int64_t next = RD_KAFKA_OFFSET_BEGINNING;  // next offset to read
        std::int64_t eof = -1;                          // offset of the last EOF event
    };

    // assign() replaces the whole assignment, so partitions already being read
    // restart from where they are, not from the beginning.
    void reassign() {
        rd_kafka_topic_partition_list_t* l = rd_kafka_topic_partition_list_new(static_cast<int>(parts_.size()));
        for (auto& [tp, st] : parts_)
            rd_kafka_topic_partition_list_add(l, tp.first.c_str(), tp.second)->offset = st.next;
        auto err = rd_kafka_assign(rk_, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (err) throw std::runtime_error(std::string("outbox-check: assign: ") + rd_kafka_err2str(err));
    }

    rd_kafka_t* rk_ = nullptr;
    std::set<std::string> known_;
    std::vector<std::string> topic_names_;
    std::map<std::string, std::size_t> topic_index_;
    std::map<std::pair<std::string, int>, part_state> parts_;
};

// ---- comparing ------------------------------------------------------------

std::string show(const opt_string& s, std::size_t max = 80) {
    if (!s) return "(null)";
    if (s->size() <= max) return "'" + *s + "'";
    return "'" + s->substr(0, max) + "...'";
}

std::optional<std::int64_t> to_int(const std::string& s) {
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

// a < b on order-column values: numerically when both are integers.
bool order_less(const std::string& a, const std::string& b) {
    auto ia = to_int(a), ib = to_int(b);
    if (ia && ib) return *ia < *ib;
    return a < b;
}

check_report analyse(const check_options& o, const table_snapshot& t, const std::vector<record>& recs,
                     const kafka_reader& kr) {
    check_report rep;
    rep.expect = o.expect;
    rep.allow_duplicates = o.allow_duplicates;
    rep.expected = t.rows.size();
    rep.records = recs.size();
    auto sample = [&](std::string s) {
        if (rep.samples.size() < o.max_samples) rep.samples.push_back(std::move(s));
    };

    // Records of one partition in offset order, partitions one after another:
    // "first occurrence" of an id is then its lowest offset.
    std::vector<std::size_t> idx(recs.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
        const auto &x = recs[a], &y = recs[b];
        return std::tie(x.topic, x.partition, x.offset) < std::tie(y.topic, y.partition, y.offset);
    });

    std::vector<std::uint32_t> seen(t.rows.size(), 0);
    std::vector<std::pair<std::string, std::string>> first_lsn(t.rows.size());
    struct key_state {
        std::size_t topic;
        std::int32_t partition;
        std::string last;
    };
    std::unordered_map<std::string, key_state> keys;
    std::map<std::string, std::vector<std::int64_t>> txns;
    for (std::size_t i : idx) {
        const record& r = recs[i];
        if (r.timestamp_ms > 0) {
            rep.max_timestamp_ms = std::max(rep.max_timestamp_ms, r.timestamp_ms);
            rep.min_timestamp_ms = rep.min_timestamp_ms == 0 ? r.timestamp_ms : std::min(rep.min_timestamp_ms, r.timestamp_ms);
        }
        std::string where = kr.topic_name(r.topic) + "/" + std::to_string(r.partition) + "@" + std::to_string(r.offset);
        auto it = r.id ? t.by_id.find(*r.id) : t.by_id.end();
        if (it == t.by_id.end()) {
            ++rep.unexpected;
            sample("unexpected " + where + " id=" + show(r.id));
            continue;
        }
        const row& rw = t.rows[it->second];
        bool first = seen[it->second]++ == 0;
        if (!first) ++rep.duplicated;
        if (kr.topic_name(r.topic) != rw.topic || r.key != rw.key || r.value != rw.payload || r.type != rw.type) {
            ++rep.mismatched;
            sample("mismatched " + where + " id=" + *r.id + " topic=" + kr.topic_name(r.topic) + "/" + rw.topic +
                   " key=" + show(r.key) + "/" + show(rw.key) + " value=" + show(r.value) + "/" + show(rw.payload) +
                   " type=" + show(r.type) + "/" + show(rw.type));
        }
        if (first && r.commit_lsn) first_lsn[it->second] = {*r.commit_lsn, r.seq.value_or("")};
        if (o.check_lsn_headers) {
            bool bad = !r.commit_lsn || !r.seq || r.commit_lsn->find('/') == std::string::npos || !to_int(*r.seq);
            if (bad) {
                ++rep.lsn_header_errors;
                sample("lsn headers " + where + " commit-lsn=" + show(r.commit_lsn) + " seq=" + show(r.seq));
            } else if (first) {
                txns[*r.commit_lsn].push_back(*to_int(*r.seq));
            } else if (first_lsn[it->second] != std::pair{*r.commit_lsn, *r.seq}) {
                // A replayed transaction has the same commit LSN and index.
                ++rep.lsn_header_errors;
                sample("lsn headers differ on duplicate " + where + " id=" + *r.id);
            }
        }
        if (!first || o.order_column.empty() || !rw.key || !rw.order) continue;
        auto [k, inserted] = keys.try_emplace(*rw.key, key_state{r.topic, r.partition, *rw.order});
        if (inserted) continue;
        if (k->second.topic != r.topic || k->second.partition != r.partition) {
            ++rep.out_of_order;
            sample("key " + show(rw.key) + " in two partitions: " + where);
        } else if (!order_less(k->second.last, *rw.order)) {
            ++rep.out_of_order;
            sample("out of order " + where + " key=" + show(rw.key) + " " + o.order_column + "=" + *rw.order +
                   " after " + k->second.last);
        }
        k->second = key_state{r.topic, r.partition, *rw.order};
    }
    for (std::size_t i = 0; i < seen.size(); ++i) rep.delivered += seen[i] > 0;
    for (const auto& id : o.capture_ids) {
        auto it = t.by_id.find(id);
        if (it != t.by_id.end() && !first_lsn[it->second].first.empty())
            rep.captured_commit_lsn[id] = first_lsn[it->second].first;
    }
    rep.missing = rep.expected - rep.delivered;
    if (rep.missing > 0) {
        for (const auto& [id, i] : t.by_id) {
            if (seen[i] == 0) {
                sample("missing id=" + id + " topic=" + t.rows[i].topic + " key=" + show(t.rows[i].key));
                break;
            }
        }
    }
    rep.transactions = txns.size();
    for (auto& [lsn, seqs] : txns) {
        std::sort(seqs.begin(), seqs.end());
        for (std::size_t i = 0; i < seqs.size(); ++i) {
            if (seqs[i] != static_cast<std::int64_t>(i)) {
                ++rep.lsn_header_errors;
                sample("commit-lsn " + lsn + ": seq values are not 0.." + std::to_string(seqs.size() - 1) +
                       " (position " + std::to_string(i) + " holds " + std::to_string(seqs[i]) + ")");
                break;
            }
        }
    }
    return rep;
}

}  // namespace

bool check_report::ok() const noexcept {
    return missing == 0 && (allow_duplicates || duplicated == 0) && out_of_order == 0 && unexpected == 0 &&
           mismatched == 0 && lsn_header_errors == 0 && (!expect || *expect == expected);
}

std::string check_report::summary() const {
    std::ostringstream s;
    s << "expected=" << expected << " delivered=" << delivered << " missing=" << missing << " duplicated=" << duplicated
      << " out_of_order=" << out_of_order << " unexpected=" << unexpected << " mismatched=" << mismatched
      << " lsn_header_errors=" << lsn_header_errors << " records=" << records << " transactions=" << transactions;
    if (expect) s << " expect=" << *expect;
    return s.str();
}

check_report run_check(const check_options& o) {
    const auto tpl = parse_template(o.topic_template);
    const auto deadline = clock::now() + o.wait;
    kafka_reader kr(o.brokers);
    std::vector<record> recs;
    table_snapshot t;
    bool have_rows = false;
    for (;;) {
        // Outbox rows are insert-only, so an unchanged count means unchanged
        // rows: a million-row table is not re-read on every round.
        if (!have_rows || count_rows(o) != t.rows.size()) t = read_rows(o, tpl);
        have_rows = true;
        for (const auto& topic : t.topics) kr.add_topic(topic);
        // Bounded even without --wait-seconds: a hanging Kafka transaction
        // must not hang the checker.
        kr.catch_up(std::max(deadline, clock::now() + std::chrono::seconds(30)), recs);
        check_report rep = analyse(o, t, recs, kr);
        if (rep.unexpected > 0) {
            // Rows committed between the table read and the Kafka read show up
            // as unexpected records; a second table read settles them.
            t = read_rows(o, tpl);
            for (const auto& topic : t.topics) kr.add_topic(topic);
            rep = analyse(o, t, recs, kr);
        }
        bool complete = rep.missing == 0 && (!o.expect || *o.expect == rep.expected);
        if (!complete && clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
            continue;
        }
        // Complete (or out of time): keep reading until the topics are quiet
        // for o.quiet, so that a late duplicate (a zombie's record, a replay
        // still on its way) is counted rather than missed.
        const auto quiet_deadline = clock::now() + std::max(o.quiet * 5, std::chrono::milliseconds(10'000));
        std::size_t seen = recs.size();
        auto quiet_since = clock::now();
        while (o.quiet.count() > 0 && clock::now() - quiet_since < o.quiet && clock::now() < quiet_deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(250));
            kr.catch_up(clock::now() + std::chrono::seconds(10), recs);
            if (recs.size() != seen) {
                seen = recs.size();
                quiet_since = clock::now();
            }
        }
        return analyse(o, t, recs, kr);
    }
}

}  // namespace outbox::check
