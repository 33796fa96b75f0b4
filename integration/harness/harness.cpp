#include "harness.hpp"

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <stdexcept>
#include <thread>

extern char** environ;

#ifndef OUTBOX_REPO_ROOT
#error "OUTBOX_REPO_ROOT must be defined by integration/CMakeLists.txt"
#endif
#ifndef OUTBOX_BUILD_DIR
#error "OUTBOX_BUILD_DIR must be defined by integration/CMakeLists.txt"
#endif

namespace outbox::it {
namespace {

using steady = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

struct pg_conn_deleter {
    void operator()(PGconn* c) const { PQfinish(c); }
};
struct pg_result_deleter {
    void operator()(PGresult* r) const { PQclear(r); }
};
using pg_conn_ptr = std::unique_ptr<PGconn, pg_conn_deleter>;
using pg_result_ptr = std::unique_ptr<PGresult, pg_result_deleter>;

std::string trim_right(std::string s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
    return s;
}

pg_conn_ptr pg_connect(const std::string& conninfo) {
    // connect_timeout first: with expand_dbname, settings inside `conninfo` override it.
    const char* keys[] = {"connect_timeout", "dbname", nullptr};
    const char* vals[] = {"10", conninfo.c_str(), nullptr};
    pg_conn_ptr conn{PQconnectdbParams(keys, vals, 1)};
    if (!conn) fail("pg: out of memory creating a connection");
    if (PQstatus(conn.get()) != CONNECTION_OK) {
        // PQerrorMessage never contains the password, unlike the conninfo itself.
        fail("pg: connect failed: " + trim_right(PQerrorMessage(conn.get())));
    }
    return conn;
}

struct rk_deleter {
    void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
struct rkt_deleter {
    void operator()(rd_kafka_topic_t* t) const { rd_kafka_topic_destroy(t); }
};
struct tpl_deleter {
    void operator()(rd_kafka_topic_partition_list_t* l) const { rd_kafka_topic_partition_list_destroy(l); }
};
struct msg_deleter {
    void operator()(rd_kafka_message_t* m) const { rd_kafka_message_destroy(m); }
};

void conf_set(rd_kafka_conf_t* conf, const char* name, const std::string& value) {
    char err[512];
    if (rd_kafka_conf_set(conf, name, value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        fail(std::string("kafka: config ") + name + ": " + err);
    }
}

// Partition count of `topic`, or -1 while the topic does not exist (yet).
int partition_count(rd_kafka_t* rk, rd_kafka_topic_t* rkt, std::string& last_error) {
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        last_error = std::string("metadata: ") + rd_kafka_err2str(err);
        return -1;
    }
    int n = -1;
    if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
        md->topics[0].partition_cnt > 0) {
        n = md->topics[0].partition_cnt;
    } else if (md->topic_cnt == 1) {
        last_error = std::string("metadata: topic: ") + rd_kafka_err2str(md->topics[0].err);
    }
    rd_kafka_metadata_destroy(md);
    return n;
}

}  // namespace

std::string repo_root() { return OUTBOX_REPO_ROOT; }
std::string build_dir() { return OUTBOX_BUILD_DIR; }
std::string relay_binary() { return build_dir() + "/outbox-relay"; }

std::string env_or_fail(const char* name) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') {
        fail(std::string("environment variable ") + name +
             " is not set: start the stack and run eval \"$(integration/stack.sh env)\" "
             "(integration tests never skip)");
    }
    return v;
}

std::string unique_name(std::string_view prefix) {
    static std::atomic<unsigned> counter{0};
    std::string out;
    for (char c : prefix) {
        auto u = static_cast<unsigned char>(c);
        out += std::isalnum(u) ? static_cast<char>(std::tolower(u)) : '_';
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
    // Appended piecewise: GCC 12 -O3 raises a false -Wrestrict on a chain of string `+`.
    for (const auto part : {static_cast<long long>(::getpid()), static_cast<long long>(ms),
                            static_cast<long long>(++counter)}) {
        out += '_';
        out += std::to_string(part);
    }
    return out;
}

std::vector<pg_row> pg_exec(const std::string& conninfo, const std::string& sql) {
    pg_conn_ptr conn = pg_connect(conninfo);
    pg_result_ptr res{PQexec(conn.get(), sql.c_str())};
    const ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && st != PGRES_EMPTY_QUERY) {
        std::string msg = res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn.get());
        const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
        fail("pg: query failed" + (state ? " sqlstate=" + std::string(state) : std::string()) + ": " +
             trim_right(msg) + " (sql: " + sql.substr(0, 200) + ")");
    }
    std::vector<pg_row> rows;
    const int nrows = PQntuples(res.get());
    const int ncols = PQnfields(res.get());
    rows.reserve(static_cast<std::size_t>(nrows));
    for (int r = 0; r < nrows; ++r) {
        pg_row row;
        row.reserve(static_cast<std::size_t>(ncols));
        for (int c = 0; c < ncols; ++c) {
            row.emplace_back(PQgetvalue(res.get(), r, c),
                             static_cast<std::size_t>(PQgetlength(res.get(), r, c)));
        }
        rows.push_back(std::move(row));
    }
    return rows;
}

std::string pg_scalar(const std::string& conninfo, const std::string& sql) {
    auto rows = pg_exec(conninfo, sql);
    if (rows.empty() || rows.front().empty())
        fail("pg: query returned no value (sql: " + sql.substr(0, 200) + ")");
    return rows.front().front();
}

namespace {

// Spawns `bash $OUTBOX_STACK_SH args...`, waits, and throws unless it exited 0. With
// `out`, the child's stdout is read into it through a pipe.
void run_stack(const std::vector<std::string>& args, std::string* out) {
    const std::string script = env_or_fail("OUTBOX_STACK_SH");
    std::vector<std::string> argv_s{"bash", script};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    argv.reserve(argv_s.size() + 1);
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);

    std::string cmd;
    for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + a;
    // Our buffered output must come out before the child's, or the log interleaves.
    std::fflush(stdout);
    std::fflush(stderr);
    int fds[2] = {-1, -1};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (out) {
        if (::pipe2(fds, O_CLOEXEC) != 0) {
            posix_spawn_file_actions_destroy(&actions);
            fail("stack " + cmd + ": pipe: " + std::strerror(errno));
        }
        posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    }
    pid_t pid = 0;
    const int rc = posix_spawnp(&pid, "bash", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (out) ::close(fds[1]);
    if (rc != 0) {
        if (out) ::close(fds[0]);
        fail("stack " + cmd + ": cannot spawn bash: " + std::strerror(rc));
    }
    if (out) {
        // Read to EOF before waiting, so a verb printing more than a pipe buffer
        // cannot block forever.
        char buf[4096];
        for (;;) {
            const ssize_t n = ::read(fds[0], buf, sizeof buf);
            if (n > 0) {
                out->append(buf, static_cast<std::size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                break;
            }
        }
        ::close(fds[0]);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) fail("stack " + cmd + ": waitpid: " + std::strerror(errno));
    }
    if (WIFSIGNALED(status)) fail("stack " + cmd + ": killed by signal " + std::to_string(WTERMSIG(status)));
    if (WEXITSTATUS(status) != 0)
        fail("stack " + cmd + ": exit status " + std::to_string(WEXITSTATUS(status)));
}

}  // namespace

void stack(const std::vector<std::string>& args) { run_stack(args, nullptr); }

std::string stack_output(const std::vector<std::string>& args) {
    std::string out;
    run_stack(args, &out);
    return out;
}

int kafka_nodes() {
    const std::string v = env_or_fail("OUTBOX_TEST_KAFKA_NODES");
    int n = 0;
    for (char c : v) {
        if (!std::isdigit(static_cast<unsigned char>(c)) || n > 1000) fail("OUTBOX_TEST_KAFKA_NODES is not a number: " + v);
        n = n * 10 + (c - '0');
    }
    if (n < 1) fail("OUTBOX_TEST_KAFKA_NODES must be at least 1, got " + v);
    return n;
}

void wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout, std::string_view what) {
    const auto start = steady::now();
    auto delay = std::chrono::milliseconds(10);
    while (!pred()) {
        if (steady::now() - start >= timeout) {
            fail("timed out after " + std::to_string(timeout.count()) +
                 " ms waiting for: " + std::string(what));
        }
        std::this_thread::sleep_for(delay);
        delay = std::min(delay * 2, std::chrono::milliseconds(250));
    }
}

std::optional<std::string> kafka_record::header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
        if (k == name) return v;
    }
    return std::nullopt;
}

std::vector<kafka_record> consume_all(const std::string& brokers, const std::string& topic,
                                      std::size_t expected_count, std::chrono::milliseconds timeout) {
    const auto deadline = steady::now() + timeout;
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    conf_set(conf, "bootstrap.servers", brokers);
    // assign() needs a group handle in librdkafka, but no group protocol is used:
    // no subscribe, no JoinGroup, offsets never committed.
    conf_set(conf, "group.id", unique_name("it_consume"));
    conf_set(conf, "enable.auto.commit", "false");
    conf_set(conf, "enable.auto.offset.store", "false");
    conf_set(conf, "isolation.level", "read_committed");
    conf_set(conf, "enable.partition.eof", "true");
    // A consumer must not create the topic by asking for its metadata.
    conf_set(conf, "allow.auto.create.topics", "false");
    std::unique_ptr<rd_kafka_t, rk_deleter> rk{rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err)};
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fail(std::string("kafka: cannot create consumer: ") + err);
    }
    rd_kafka_poll_set_consumer(rk.get());

    std::string last_error;
    int nparts = -1;
    {
        std::unique_ptr<rd_kafka_topic_t, rkt_deleter> rkt{
            rd_kafka_topic_new(rk.get(), topic.c_str(), nullptr)};
        // The topic may not exist yet (e.g. the relay has not produced to it yet).
        while ((nparts = partition_count(rk.get(), rkt.get(), last_error)) <= 0) {
            if (steady::now() >= deadline) {
                fail("consume_all: topic " + topic + " not found within " + std::to_string(timeout.count()) +
                     " ms (" + last_error + ")");
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }

    std::unique_ptr<rd_kafka_topic_partition_list_t, tpl_deleter> parts{
        rd_kafka_topic_partition_list_new(nparts)};
    for (int p = 0; p < nparts; ++p) {
        rd_kafka_topic_partition_list_add(parts.get(), topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    if (auto e = rd_kafka_assign(rk.get(), parts.get()); e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fail(std::string("consume_all: assign: ") + rd_kafka_err2str(e));
    }

    std::vector<kafka_record> out;
    std::set<std::int32_t> at_end;  // partitions whose last event was EOF
    while (!(out.size() >= expected_count && static_cast<int>(at_end.size()) == nparts)) {
        if (steady::now() >= deadline) {
            fail("consume_all: topic " + topic + ": got " + std::to_string(out.size()) + " of " +
                 std::to_string(expected_count) + " records, " + std::to_string(at_end.size()) + "/" +
                 std::to_string(nparts) + " partitions at end, within " + std::to_string(timeout.count()) +
                 " ms" + (last_error.empty() ? "" : " (last error: " + last_error + ")"));
        }
        std::unique_ptr<rd_kafka_message_t, msg_deleter> m{rd_kafka_consumer_poll(rk.get(), 100)};
        if (!m) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            at_end.insert(m->partition);
            continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            // Transient (broker down, transport): keep polling until the deadline, but
            // remember it for the timeout message.
            last_error = rd_kafka_message_errstr(m.get());
            continue;
        }
        at_end.erase(m->partition);
        kafka_record r;
        r.topic = topic;
        r.partition = m->partition;
        r.offset = m->offset;
        if (m->key) r.key.emplace(static_cast<const char*>(m->key), m->key_len);
        if (m->payload) r.value.emplace(static_cast<const char*>(m->payload), m->len);
        rd_kafka_headers_t* hdrs = nullptr;
        if (rd_kafka_message_headers(m.get(), &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            const char* name = nullptr;
            const void* val = nullptr;
            size_t size = 0;
            for (size_t i = 0;
                 rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
                r.headers.emplace_back(
                    name, val ? std::string(static_cast<const char*>(val), size) : std::string());
                if (!val) r.null_headers.emplace_back(name);
            }
        }
        out.push_back(std::move(r));
    }
    rd_kafka_consumer_close(rk.get());
    std::sort(out.begin(), out.end(), [](const kafka_record& a, const kafka_record& b) {
        return std::pair(a.partition, a.offset) < std::pair(b.partition, b.offset);
    });
    return out;
}

std::int32_t partition_leader(const std::string& brokers, const std::string& topic, std::int32_t partition) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    conf_set(conf, "bootstrap.servers", brokers);
    // A consumer handle: its metadata requests never create the topic (a producer's
    // would, with the broker's auto.create.topics.enable). No group is joined.
    conf_set(conf, "allow.auto.create.topics", "false");
    conf_set(conf, "group.id", unique_name("it_leader"));
    std::unique_ptr<rd_kafka_t, rk_deleter> rk{rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err)};
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fail(std::string("partition_leader: cannot create client: ") + err);
    }
    std::unique_ptr<rd_kafka_topic_t, rkt_deleter> rkt{rd_kafka_topic_new(rk.get(), topic.c_str(), nullptr)};
    const rd_kafka_metadata_t* md = nullptr;
    if (auto e = rd_kafka_metadata(rk.get(), 0, rkt.get(), &md, 10000); e != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail("partition_leader: metadata for " + topic + ": " + rd_kafka_err2str(e));
    std::unique_ptr<const rd_kafka_metadata_t, void (*)(const rd_kafka_metadata_t*)> guard{md, rd_kafka_metadata_destroy};
    if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail("partition_leader: topic " + topic + ": " +
             (md->topic_cnt == 1 ? rd_kafka_err2str(md->topics[0].err) : std::string("not in the metadata")));
    for (int i = 0; i < md->topics[0].partition_cnt; ++i) {
        const auto& p = md->topics[0].partitions[i];
        if (p.id != partition) continue;
        if (p.err != RD_KAFKA_RESP_ERR_NO_ERROR && p.leader < 0)
            fail("partition_leader: " + topic + "/" + std::to_string(partition) + ": " + rd_kafka_err2str(p.err));
        if (p.leader < 0) fail("partition_leader: " + topic + "/" + std::to_string(partition) + " has no leader");
        return p.leader;
    }
    fail("partition_leader: topic " + topic + " has no partition " + std::to_string(partition));
}

}  // namespace outbox::it
