// Scenario 0: the checker itself, against real Postgres + Kafka with records
// written by hand (no relay). Each finding the checker counts is provoked
// once, so a checker that always says "ok" fails here first.
#include "scenario_support.hpp"

#include <doctest/doctest.h>
#include <librdkafka/rdkafka.h>

using namespace outbox::it::scn;

namespace {

struct fake_record {
    std::string topic, key, value, id, type, commit_lsn, seq;
};

// Produces `recs` in order with an idempotent producer and waits for all acks.
void produce(const std::vector<fake_record>& recs) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", env().brokers.c_str(), err, sizeof err);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err);
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    REQUIRE(rk != nullptr);
    for (const auto& r : recs) {
        rd_kafka_headers_t* h = rd_kafka_headers_new(4);
        rd_kafka_header_add(h, "id", -1, r.id.data(), static_cast<ssize_t>(r.id.size()));
        rd_kafka_header_add(h, "type", -1, r.type.data(), static_cast<ssize_t>(r.type.size()));
        rd_kafka_header_add(h, "outbox-relay.commit-lsn", -1, r.commit_lsn.data(), static_cast<ssize_t>(r.commit_lsn.size()));
        rd_kafka_header_add(h, "outbox-relay.seq", -1, r.seq.data(), static_cast<ssize_t>(r.seq.size()));
        auto e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(r.topic.c_str()),
                                   RD_KAFKA_V_KEY(const_cast<char*>(r.key.data()), r.key.size()),
                                   RD_KAFKA_V_VALUE(const_cast<char*>(r.value.data()), r.value.size()),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
        if (e) rd_kafka_headers_destroy(h);
        REQUIRE(e == RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    REQUIRE(rd_kafka_flush(rk, 30000) == RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(rk);
}

struct row_info {
    std::string id, aggregatetype, aggregateid, type, payload, seq;
};

// Rows as Postgres prints them (payload::text is what the relay must send).
std::vector<row_info> rows_of(scenario& sc) {
    std::vector<row_info> out;
    for (auto& r : sc.admin().query("SELECT id::text, aggregatetype, aggregateid, type, payload::text, seq::text FROM " +
                                    sc.table() + " ORDER BY aggregateid, seq"))
        out.push_back({*r[0], *r[1], *r[2], *r[3], *r[4], *r[5]});
    return out;
}

// The faithful record of a row: what a correct relay would produce.
fake_record record_of(scenario& sc, const row_info& r, const std::string& commit_lsn, int seq) {
    return {sc.topic(r.aggregatetype), r.aggregateid, r.payload, r.id, r.type, commit_lsn, std::to_string(seq)};
}

// Six rows, three per aggregate (seq 0..2), written as two transactions.
std::vector<row_info> arrange(scenario& sc) {
    outbox_writer w(env().pg, sc.table(), "chk", 2, 2);
    w.write_txn(3);
    w.write_txn(3);
    return rows_of(sc);
}

// One "transaction" per aggregate in the fake LSN headers: seq 0..2 each.
std::vector<fake_record> faithful(scenario& sc, const std::vector<row_info>& rows) {
    std::vector<fake_record> recs;
    for (std::size_t i = 0; i < rows.size(); ++i)
        recs.push_back(record_of(sc, rows[i], rows[i].aggregateid == "chk-0" ? "0/100" : "0/200", static_cast<int>(i % 3)));
    return recs;
}

}  // namespace

TEST_CASE("checker_all_delivered_is_ok") {
    scenario sc("00_checker");
    auto rows = arrange(sc);
    REQUIRE(rows.size() == 6);
    produce(faithful(sc, rows));
    auto rep = sc.check(30s, false, 6);
    INFO(rep.summary());
    CHECK(rep.ok());
    CHECK(rep.delivered == 6);
    CHECK(rep.transactions == 2);
}

TEST_CASE("checker_counts_missing") {
    scenario sc("00_checker");
    auto rows = arrange(sc);
    auto recs = faithful(sc, rows);
    recs.pop_back();
    produce(recs);
    auto rep = sc.check(2s, false, 6, false);  // waits 2 s for the missing one, in vain
    INFO(rep.summary());
    CHECK(!rep.ok());
    CHECK(rep.missing == 1);
    CHECK(rep.delivered == 5);
}

TEST_CASE("checker_counts_duplicates_and_allows_them_on_request") {
    scenario sc("00_checker");
    auto rows = arrange(sc);
    auto recs = faithful(sc, rows);
    recs.push_back(recs[4]);  // a replay of the last aggregate's middle record
    produce(recs);
    auto strict = sc.check(10s, false, 6);
    INFO(strict.summary());
    CHECK(!strict.ok());
    CHECK(strict.duplicated == 1);
    CHECK(strict.out_of_order == 0);  // order is judged on first occurrences
    auto lenient = sc.check(10s, true, 6);
    CHECK(lenient.ok());
}

TEST_CASE("checker_counts_out_of_order") {
    scenario sc("00_checker");
    auto rows = arrange(sc);
    auto recs = faithful(sc, rows);
    std::swap(recs[0], recs[1]);  // chk-0: seq 1 before seq 0
    produce(recs);
    auto rep = sc.check(10s, false, 6);
    INFO(rep.summary());
    CHECK(!rep.ok());
    CHECK(rep.out_of_order == 1);
    CHECK(rep.missing == 0);
}

TEST_CASE("checker_counts_unexpected") {
    scenario sc("00_checker");
    auto rows = arrange(sc);
    auto recs = faithful(sc, rows);
    auto stray = recs[0];
    stray.id = "00000000-0000-0000-0000-000000000000";
    recs.push_back(stray);
    produce(recs);
    auto rep = sc.check(10s, false, 6);
    INFO(rep.summary());
    CHECK(!rep.ok());
    CHECK(rep.unexpected == 1);
}

TEST_CASE("checker_counts_mismatched_value_key_type") {
    scenario sc("00_checker");
    auto rows = arrange(sc);
    auto recs = faithful(sc, rows);
    recs[0].value += " ";        // one byte more than Postgres prints
    recs[1].key += "-other";  // a different key
    recs[2].type = "Wrong";
    produce(recs);
    auto rep = sc.check(10s, false, 6);
    INFO(rep.summary());
    CHECK(!rep.ok());
    CHECK(rep.mismatched == 3);
}

TEST_CASE("checker_counts_seq_gap_in_a_transaction") {
    scenario sc("00_checker");
    auto rows = arrange(sc);
    auto recs = faithful(sc, rows);
    recs[2].seq = std::to_string(3);  // chk-0's transaction: 0, 1, 3 (to_string: GCC 12 -Wrestrict false positive on a literal)
    produce(recs);
    auto rep = sc.check(10s, false, 6);
    INFO(rep.summary());
    CHECK(!rep.ok());
    CHECK(rep.lsn_header_errors == 1);
    CHECK(sc.check(10s, false, 6, /*lsn_headers=*/false).ok());
}

TEST_CASE("checker_expect_count_differs") {
    scenario sc("00_checker");
    auto rows = arrange(sc);
    produce(faithful(sc, rows));
    auto rep = sc.check(1s, false, 7);
    INFO(rep.summary());
    CHECK(rep.missing == 0);
    CHECK(!rep.ok());
}
