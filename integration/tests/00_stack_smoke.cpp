// Scenario 00: the local stack really works, before any relay code is involved.
//
// (a) Postgres: a pgoutput slot on a fresh publication streams an INSERT to a raw
//     libpq replication=database connection (proto_version '1'), the way the relay
//     will read it.
// (b) Kafka: an idempotent acks=all producer writes one record that the harness's
//     assign()-based read_committed consumer reads back with key, value and headers.
// (c) The cluster: leaders, the per-node verbs of stack.sh and, on the 3-node
//     cluster, a partition leader failing over while acks=all keeps working.
//
// All talk to the real servers, so both fail when the stack is down.
#include <doctest/doctest.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <sys/select.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "harness.hpp"

using namespace std::chrono_literals;
using outbox::it::consume_all;
using outbox::it::env_or_fail;
using outbox::it::pg_exec;
using outbox::it::pg_scalar;
using outbox::it::unique_name;
using outbox::it::wait_until;

namespace {

using steady = std::chrono::steady_clock;

struct conn_closer {
    void operator()(PGconn* c) const { PQfinish(c); }
};
struct result_clearer {
    void operator()(PGresult* r) const { PQclear(r); }
};
using conn_ptr = std::unique_ptr<PGconn, conn_closer>;
using result_ptr = std::unique_ptr<PGresult, result_clearer>;

// A logical walsender connection (replication=database) to the test database.
conn_ptr connect_replication(const std::string& conninfo) {
    // dbname is expanded from the conninfo string; replication comes after it so it
    // is added to, not replaced by, the expanded settings.
    const char* keys[] = {"dbname", "replication", "connect_timeout", nullptr};
    const char* vals[] = {conninfo.c_str(), "database", "10", nullptr};
    conn_ptr c{PQconnectdbParams(keys, vals, 1)};
    REQUIRE(c);
    INFO("replication connect: " << PQerrorMessage(c.get()));
    REQUIRE(PQstatus(c.get()) == CONNECTION_OK);
    return c;
}

// Runs a replication command; returns the result after checking its status.
result_ptr repl_exec(PGconn* c, const std::string& cmd, ExecStatusType want) {
    result_ptr r{PQexec(c, cmd.c_str())};
    INFO(cmd << " -> " << PQresStatus(PQresultStatus(r.get())) << ": " << PQerrorMessage(c));
    REQUIRE(PQresultStatus(r.get()) == want);
    return r;
}

enum class copy_status { frame, end };

// Next CopyData frame of the stream, waiting on the socket until `deadline`.
// Fails the test on a stream error or timeout.
copy_status read_copy(PGconn* c, std::string& frame, steady::time_point deadline) {
    for (;;) {
        char* buf = nullptr;
        const int n = PQgetCopyData(c, &buf, 1);
        if (n > 0) {
            frame.assign(buf, static_cast<std::size_t>(n));
            PQfreemem(buf);
            return copy_status::frame;
        }
        if (n == -1) return copy_status::end;
        INFO("PQgetCopyData: " << PQerrorMessage(c));
        REQUIRE(n == 0);
        REQUIRE_MESSAGE(steady::now() < deadline, "no CopyData before the deadline");
        // Nothing buffered: wait for the socket (at most 200 ms, to re-check the deadline).
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(PQsocket(c), &rd);
        timeval tv{0, 200000};
        REQUIRE(select(PQsocket(c) + 1, &rd, nullptr, nullptr, &tv) >= 0);
        REQUIRE_MESSAGE(PQconsumeInput(c) == 1, PQerrorMessage(c));
    }
}

// Drops what the test created even when a REQUIRE failed half way, so failed runs do
// not leave slots behind that pin WAL (the stack has only 16 slots).
struct pg_cleanup {
    std::string pg, slot, pub, table;
    ~pg_cleanup() {
        try {
            // The walsender of a closed connection exits asynchronously; the slot is
            // droppable once it is no longer active.
            wait_until(
                [&] {
                    return pg_scalar(pg, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" +
                                             slot + "' AND active") == "0";
                },
                10s, "slot " + slot + " inactive");
            pg_exec(
                pg,
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '" +
                    slot + "'");
            pg_exec(pg, "DROP PUBLICATION IF EXISTS " + pub + "; DROP TABLE IF EXISTS " + table);
        } catch (const std::exception& e) {
            MESSAGE("cleanup failed: " << e.what());
        }
    }
};

struct delivery {
    int reports = 0;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    std::int32_t partition = -1;
    std::int64_t offset = -1;
};

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* d = static_cast<delivery*>(opaque);
    ++d->reports;
    d->err = m->err;
    d->partition = m->partition;
    d->offset = m->offset;
}

}  // namespace

TEST_CASE("pgoutput_insert_streams_to_replication_connection") {
    const std::string pg = env_or_fail("OUTBOX_TEST_PG");
    const std::string base = unique_name("smoke");
    pg_cleanup cleanup{pg, base + "_slot", base + "_pub", base + "_t"};
    const std::string marker = "smoke-payload-" + base;

    // Arrange: table and publication first; PG15 decoding needs the publication to
    // exist at the WAL position being decoded, i.e. before the slot.
    pg_exec(pg, "CREATE TABLE " + cleanup.table + " (id bigserial PRIMARY KEY, payload text NOT NULL); " +
                    "CREATE PUBLICATION " + cleanup.pub + " FOR TABLE " + cleanup.table);
    conn_ptr repl = connect_replication(pg);
    {
        auto r = repl_exec(
            repl.get(), "CREATE_REPLICATION_SLOT " + cleanup.slot + " LOGICAL pgoutput (SNAPSHOT 'nothing')",
            PGRES_TUPLES_OK);
        REQUIRE(PQntuples(r.get()) == 1);
        CHECK(std::string(PQgetvalue(r.get(), 0, 0)) == cleanup.slot);
        CHECK(std::string(PQgetvalue(r.get(), 0, 3)) == "pgoutput");
    }
    pg_exec(pg, "INSERT INTO " + cleanup.table + " (payload) VALUES ('" + marker + "')");

    // Act: stream from the slot's start.
    repl_exec(repl.get(),
              "START_REPLICATION SLOT " + cleanup.slot +
                  " LOGICAL 0/0 (proto_version '1', publication_names '" + cleanup.pub + "')",
              PGRES_COPY_BOTH);
    const auto deadline = steady::now() + 30s;
    std::string frame;
    std::string tags;  // pgoutput message tags in arrival order
    std::string insert_payload, relation_payload;
    while (insert_payload.empty()) {
        REQUIRE(read_copy(repl.get(), frame, deadline) == copy_status::frame);
        REQUIRE(!frame.empty());
        if (frame[0] == 'k') continue;  // primary keepalive: nothing to decode
        REQUIRE(frame[0] == 'w');
        // 'w' + Int64 dataStart + Int64 walEnd + Int64 sendTime, then one pgoutput message.
        REQUIRE(frame.size() > 25);
        const std::string payload = frame.substr(25);
        tags += payload[0];
        if (payload[0] == 'R') relation_payload = payload;
        if (payload[0] == 'I') insert_payload = payload;
    }

    // Check: Begin, Relation (first DML of this relation on this walsender), Insert.
    CHECK(tags == "BRI");
    CHECK(relation_payload.find(cleanup.table) != std::string::npos);
    CHECK(insert_payload.find(marker) != std::string::npos);

    // End the stream the way pg_recvlogical does, then drop the slot on the same
    // connection (it is released once the stream ended).
    REQUIRE(PQputCopyEnd(repl.get(), nullptr) == 1);
    REQUIRE(PQflush(repl.get()) == 0);
    while (read_copy(repl.get(), frame, steady::now() + 10s) == copy_status::frame) {
    }
    for (result_ptr r{PQgetResult(repl.get())}; r; r.reset(PQgetResult(repl.get()))) {
        INFO("after CopyDone: " << PQresultErrorMessage(r.get()));
        CHECK(PQresultStatus(r.get()) == PGRES_COMMAND_OK);
    }
    repl_exec(repl.get(), "DROP_REPLICATION_SLOT " + cleanup.slot, PGRES_COMMAND_OK);
    CHECK(pg_scalar(pg, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + cleanup.slot +
                            "'") == "0");
}

TEST_CASE("idempotent_produce_consumed_back_by_assign_consumer") {
    const std::string brokers = env_or_fail("OUTBOX_TEST_BROKERS");
    const std::string topic = unique_name("smoke_topic");
    const std::string key = "aggregate-42";
    const std::string value = R"({"smoke":")" + topic + R"("})";
    const std::string event_id = unique_name("event");

    delivery dr;
    char err[512] = "";
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](const char* k, const char* v) {
        INFO(k << "=" << v << ": " << err);
        REQUIRE(rd_kafka_conf_set(conf, k, v, err, sizeof err) == RD_KAFKA_CONF_OK);
    };
    set("bootstrap.servers", brokers.c_str());
    set("enable.idempotence", "true");
    set("acks", "all");
    // Bounded, so a dead broker fails this test in seconds instead of hanging it.
    set("message.timeout.ms", "20000");
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &dr);
    std::unique_ptr<rd_kafka_t, decltype(&rd_kafka_destroy)> rk{
        rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err), &rd_kafka_destroy};
    REQUIRE_MESSAGE(rk, err);

    const std::string ct = "application/json";
    const rd_kafka_resp_err_t perr =
        rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
                          RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                          RD_KAFKA_V_HEADER("id", event_id.data(), static_cast<ssize_t>(event_id.size())),
                          RD_KAFKA_V_HEADER("content-type", ct.data(), static_cast<ssize_t>(ct.size())),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    REQUIRE_MESSAGE(perr == RD_KAFKA_RESP_ERR_NO_ERROR, rd_kafka_err2str(perr));
    CHECK(rd_kafka_flush(rk.get(), 30000) == RD_KAFKA_RESP_ERR_NO_ERROR);
    REQUIRE(dr.reports == 1);
    REQUIRE_MESSAGE(dr.err == RD_KAFKA_RESP_ERR_NO_ERROR, rd_kafka_err2str(dr.err));
    CHECK(dr.offset == 0);  // a fresh topic: the first record of its partition

    const auto records = consume_all(brokers, topic, 1, 30s);
    REQUIRE(records.size() == 1);
    const auto& r = records.front();
    CHECK(r.partition == dr.partition);
    CHECK(r.offset == dr.offset);
    CHECK(r.key == key);
    CHECK(r.value == value);
    REQUIRE(r.headers.size() == 2);
    CHECK(r.header("id") == event_id);
    CHECK(r.header("content-type") == ct);
    CHECK(r.headers[0].first == "id");  // header order is preserved
}

// The cluster helpers (kafka_nodes, partition_leader, stack_output) and the stack's
// per-node verbs. On the 3-node cluster: SIGKILL the leader of a partition, the
// controller fences it within the broker session timeout (4 s) and moves leadership
// to another replica, acks=all still succeeds with one node down
// (min.insync.replicas=2), and the node rejoins with kafka-start-node.
TEST_CASE("cluster_nodes_partition_leaders_and_node_verbs") {
    const std::string brokers = env_or_fail("OUTBOX_TEST_BROKERS");
    const int nodes = outbox::it::kafka_nodes();
    INFO("brokers " << brokers << ", nodes " << nodes);
    CHECK(std::count(brokers.begin(), brokers.end(), ',') + 1 == nodes);
    const std::string topic = unique_name("smoke_leader");
    outbox::it::stack({"create-topic", topic, "3"});
    for (int p = 0; p < 3; ++p) {
        const std::int32_t leader = outbox::it::partition_leader(brokers, topic, p);
        CHECK(leader >= 1);
        CHECK(leader <= nodes);
        // stack.sh (kcat) and the librdkafka helper agree.
        CHECK(outbox::it::stack_output({"kafka-leader", topic, std::to_string(p)}) == std::to_string(leader) + "\n");
    }
    // Unknown topics are an error, and asking does not create them.
    const std::string nosuch = unique_name("smoke_nosuch");
    CHECK_THROWS_WITH_AS(outbox::it::partition_leader(brokers, nosuch, 0), doctest::Contains("nknown topic"),
                         std::runtime_error);
    CHECK_THROWS_AS(outbox::it::stack({"kafka-leader", nosuch, "0"}), std::runtime_error);
    CHECK_THROWS_AS(outbox::it::partition_leader(brokers, nosuch, 0), std::runtime_error);
    // A node id outside 1..nodes is refused.
    CHECK_THROWS_AS(outbox::it::stack({"kafka-kill-node", std::to_string(nodes + 1)}), std::runtime_error);
    if (nodes < 3) return;  // one node: nothing to fail over to (checked above: it leads everything)

    const std::int32_t old_leader = outbox::it::partition_leader(brokers, topic, 0);
    const std::string node = std::to_string(old_leader);
    struct node_back {  // restart the node even when a check below fails
        std::string id;
        bool down = false;
        ~node_back() {
            if (!down) return;
            try {
                outbox::it::stack({"kafka-start-node", id});
            } catch (...) {
            }
        }
    } back{node};
    back.down = true;
    outbox::it::stack({"kafka-kill-node", node});
    std::int32_t new_leader = -1;
    wait_until(
        [&] {
            try {
                new_leader = outbox::it::partition_leader(brokers, topic, 0);
            } catch (const std::runtime_error&) {
                return false;  // mid-election
            }
            return new_leader != old_leader;
        },
        30s, "a new leader for partition 0 after its leader was killed");
    CHECK(new_leader != old_leader);
    // status reports the cluster as not fully up while a node is down.
    CHECK_THROWS_AS(outbox::it::stack({"status"}), std::runtime_error);

    // acks=all to that partition with two of three replicas left.
    delivery dr;
    char err[512] = "";
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    for (auto [k, v] : {std::pair{"bootstrap.servers", brokers.c_str()}, std::pair{"enable.idempotence", "true"},
                        std::pair{"acks", "all"}, std::pair{"message.timeout.ms", "30000"}}) {
        INFO(k << "=" << v << ": " << err);
        REQUIRE(rd_kafka_conf_set(conf, k, v, err, sizeof err) == RD_KAFKA_CONF_OK);
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &dr);
    std::unique_ptr<rd_kafka_t, decltype(&rd_kafka_destroy)> rk{
        rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err), &rd_kafka_destroy};
    REQUIRE_MESSAGE(rk, err);
    const std::string value = "with node " + node + " down";
    REQUIRE(rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(0),
                              RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR_NO_ERROR);
    CHECK(rd_kafka_flush(rk.get(), 40000) == RD_KAFKA_RESP_ERR_NO_ERROR);
    REQUIRE(dr.reports == 1);
    CHECK_MESSAGE(dr.err == RD_KAFKA_RESP_ERR_NO_ERROR, rd_kafka_err2str(dr.err));
    rk.reset();

    outbox::it::stack({"kafka-start-node", node});
    back.down = false;
    outbox::it::stack({"status"});  // every node up and listed by every node again
    const auto records = consume_all(brokers, topic, 1, 30s);
    REQUIRE(records.size() == 1);
    CHECK(records.front().value == value);
}

// The harness helpers the later scenarios lean on must fail loudly, not pass quietly.
TEST_CASE("harness_stack_verb_failure_throws") {
    outbox::it::stack({"status"});  // the stack is up: exit 0
    CHECK_THROWS_WITH_AS(outbox::it::stack({"no-such-verb"}), doctest::Contains("exit status 1"),
                         std::runtime_error);
}

TEST_CASE("harness_wait_until_times_out_naming_what") {
    int polls = 0;
    CHECK_THROWS_WITH_AS(wait_until([&] { return ++polls < 0; }, 50ms, "the impossible"),
                         doctest::Contains("waiting for: the impossible"), std::runtime_error);
    CHECK(polls >= 2);  // it polled more than once before giving up
    int calls = 0;
    wait_until([&] { return ++calls == 3; }, 5s, "third call");
    CHECK(calls == 3);
}
