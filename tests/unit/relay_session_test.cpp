// relay_session driven entirely from byte vectors: CopyData frames built by
// the test-side encoder, delivery outcomes, scan results and clock ticks in;
// the commands it returns checked. One named case per rule.
#include "outbox_relay/relay_session.hpp"

#include "../support/pgoutput_encoder.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

using namespace outbox;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

namespace {

constexpr std::uint32_t relid = 16400;
constexpr std::uint32_t other_relid = 16500;
constexpr std::uint32_t oid_text = 25, oid_jsonb = 3802, oid_uuid = 2950;

// What the session asked for, copied at once (produce commands only view
// storage that lives until the next event).
struct produced {
    std::string topic, key, value;
    std::map<std::string, std::string> headers;
    record_tag tag;
    std::int64_t timestamp_ms = 0;
    std::int32_t partition = any_partition;
};

struct driver {
    relay_config cfg;
    std::optional<relay_session> s;
    steady_time t = steady_time{} + 1000h;
    std::int64_t wall = 1'800'000'000'000'000;

    std::vector<produced> out;
    std::vector<cmd::send_status> statuses;
    std::vector<lsn> starts;
    std::vector<cmd::scan_topic> scans;
    std::vector<cmd::probe_gap> probes;
    std::vector<std::string> kinds;  // every command in order, by name
    std::vector<std::string> notes;
    std::optional<cmd::stop> stopped;
    int closes = 0, stop_streams = 0, pauses = 0, resumes = 0, recreates = 0;

    // Kafka transactions are off unless a test turns them on: most cases are
    // about the rules under them (the txn cases below are about transactions).
    explicit driver(delivery_mode mode = delivery_mode::at_least_once, std::string dead_letter_topic = "",
                    bool transactions = false) {
        cfg.dead_letter_topic = std::move(dead_letter_topic);
        cfg.kafka_transactions = transactions;
        cfg.postgres = "host=x";
        cfg.brokers = "k:1";
        cfg.delivery = mode;
        cfg.status_interval = 10s;
        cfg.pg_silence_timeout = 30s;
        cfg.drain_timeout = 5s;
        cfg.reconnect_backoff_max = 10s;
    }

    relay_session& session() {
        if (!s) s.emplace(cfg);
        return *s;
    }
    event_time now() const { return {t, wall}; }

    void drain() {
        for (auto& c : session().commands()) {
            std::visit(
                [&](auto& x) {
                    using T = std::decay_t<decltype(x)>;
                    if constexpr (std::is_same_v<T, cmd::produce>) {
                        produced p{std::string(x.rec.topic), std::string(x.rec.key), std::string(x.rec.value), {}, x.tag};
                        for (const header& h : x.rec.headers) p.headers[std::string(h.name)] = std::string(h.value);
                        p.timestamp_ms = x.rec.timestamp_ms;
                        p.partition = x.rec.partition;
                        out.push_back(std::move(p));
                        kinds.push_back("produce");
                    } else if constexpr (std::is_same_v<T, cmd::send_status>) {
                        statuses.push_back(x);
                        kinds.push_back("status");
                    } else if constexpr (std::is_same_v<T, cmd::start_stream>) {
                        starts.push_back(x.from);
                        kinds.push_back("start_stream");
                    } else if constexpr (std::is_same_v<T, cmd::scan_topic>) {
                        scans.push_back(x);
                        kinds.push_back("scan");
                    } else if constexpr (std::is_same_v<T, cmd::close_stream>) {
                        ++closes;
                        kinds.push_back("close_stream");
                    } else if constexpr (std::is_same_v<T, cmd::stop_stream>) {
                        ++stop_streams;
                        kinds.push_back("stop_stream");
                    } else if constexpr (std::is_same_v<T, cmd::pause_reading>) {
                        ++pauses;
                        kinds.push_back("pause");
                    } else if constexpr (std::is_same_v<T, cmd::resume_reading>) {
                        ++resumes;
                        kinds.push_back("resume");
                    } else if constexpr (std::is_same_v<T, cmd::probe_gap>) {
                        probes.push_back(x);
                        kinds.push_back("probe");
                    } else if constexpr (std::is_same_v<T, cmd::init_txn>) {
                        kinds.push_back("init_txn");
                    } else if constexpr (std::is_same_v<T, cmd::begin_txn>) {
                        kinds.push_back("begin_txn");
                    } else if constexpr (std::is_same_v<T, cmd::commit_txn>) {
                        kinds.push_back("commit_txn");
                    } else if constexpr (std::is_same_v<T, cmd::recreate_producer>) {
                        ++recreates;
                        kinds.push_back("recreate_producer");
                    } else if constexpr (std::is_same_v<T, cmd::note>) {
                        notes.push_back(x.text);
                    } else if constexpr (std::is_same_v<T, cmd::stop>) {
                        stopped = x;
                        kinds.push_back("stop");
                    }
                },
                c);
        }
        session().commands().clear();
    }

    // ---- events
    void start() { session().start(now()), drain(); }
    source_id source{"7301234567890123456", 1, "", "app"};
    void started(lsn slot_confirmed = lsn{0x100}) { session().on_stream_started(slot_confirmed, source, now()), drain(); }
    void closed(stream_end k, std::string_view msg = "gone") { session().on_stream_closed(k, msg, now()), drain(); }
    void stream_stopped() { session().on_stream_stopped(now()), drain(); }
    void shutdown() { session().on_shutdown(now()), drain(); }
    void fatal(producer_fault f, std::string_view why = "OUT_OF_ORDER_SEQUENCE_NUMBER") {
        session().on_producer_fatal(f, why, now()), drain();
    }
    void advance(milliseconds d) {
        t += d;
        wall += std::chrono::duration_cast<std::chrono::microseconds>(d).count();
        session().on_tick(now());
        drain();
    }
    void frame(const std::string& f) { session().on_copy_data(f, now()), drain(); }
    void xlog(std::uint64_t at, const std::string& payload) { frame(test::enc_xlog_data(at, at, 0, payload)); }
    void keepalive(std::uint64_t end, bool reply = false) { frame(test::enc_keepalive(end, 0, reply)); }

    void relation(std::uint32_t id = relid, bool with_type = true) {
        std::vector<test::enc_rel_column> cols = {{1, "id", oid_uuid, -1},
                                                  {0, "aggregatetype", oid_text, -1},
                                                  {0, "aggregateid", oid_text, -1},
                                                  {0, "payload", oid_jsonb, -1}};
        if (with_type) cols.insert(cols.begin() + 3, {0, "type", oid_text, -1});
        xlog(0, test::enc_relation(std::nullopt, id, "public", id == relid ? "outbox" : "other", 'd', cols));
    }
    void begin(std::uint64_t final_lsn, std::int64_t commit_ts = 0) {
        xlog(final_lsn, test::enc_begin(final_lsn, commit_ts, 7));
    }
    void row(std::uint64_t at, std::string id, std::string type = "order", std::string key = "k1",
             std::string payload = "{}") {
        xlog(at, test::enc_insert(std::nullopt, relid, {{'t', id}, {'t', type}, {'t', key}, {'t', "Created"}, {'t', payload}}));
    }
    void commit(std::uint64_t final_lsn, std::uint64_t end_lsn) {
        xlog(end_lsn, test::enc_commit(0, final_lsn, end_lsn, 0));
    }
    // Begin, `rows` rows to `type`, Commit at final_lsn .. final_lsn + 0x28.
    void txn(std::uint64_t final_lsn, int rows, const std::string& type = "order") {
        begin(final_lsn);
        for (int i = 0; i < rows; ++i) row(final_lsn + 1 + i, "id-" + std::to_string(final_lsn) + "-" + std::to_string(i), type);
        commit(final_lsn, final_lsn + 0x28);
    }

    void deliver(record_tag tag, delivery_status st = delivery_status::ok, std::string_view err = "",
                 std::string_view event_id = "", std::size_t bytes = 0) {
        delivery d;
        d.status = st;
        d.error = err;
        d.event_id = event_id;
        d.bytes = bytes;
        session().on_delivery(tag, d, now());
        drain();
    }
    void ack(std::size_t i) { deliver(out.at(i).tag); }
    void ack_all() {
        for (std::size_t i = acked_; i < out.size(); ++i) deliver(out[i].tag);
        acked_ = out.size();
    }
    void txn_done(txn_op op, txn_outcome::kind k = txn_outcome::kind::ok, bool fenced = false,
                  std::string msg = "") {
        txn_outcome o;
        o.status = k;
        o.fenced = fenced;
        o.message = std::move(msg);
        session().on_txn_done(op, o, now());
        drain();
    }
    // The stream goes quiet and stays so past the idle-commit quiet period.
    void idle() {
        session().on_stream_idle(now());
        drain();
        advance(1ms);
    }
    // The socket is empty for a moment only: more data comes at once.
    void idle_moment() { session().on_stream_idle(now()), drain(); }
    // Streaming with Kafka transactions initialised, and one single-row
    // transaction (0x1000) produced into an open Kafka transaction once its
    // topic's scan came back empty.
    void first_txn_in_kafka_txn() {
        streaming();
        txn_done(txn_op::init);
        txn(0x1000, 1);
        scan_ok(scans[0]);
    }
    void scan_ok(const cmd::scan_topic& sc, std::vector<record_position> present = {}) {
        scan_outcome o;
        for (const auto& p : present) o.present.insert(p);
        session().on_scan_done(sc.id, std::move(o), now());
        drain();
    }
    void scan_failed(const cmd::scan_topic& sc, scan_outcome::kind k, std::string msg = "no answer") {
        scan_outcome o;
        o.status = k;
        o.message = std::move(msg);
        session().on_scan_done(sc.id, std::move(o), now());
        drain();
    }

    // Streaming from the slot at 0x100 with the outbox relation announced.
    void streaming(lsn slot = lsn{0x100}) {
        start();
        started(slot);
        relation();
    }

    lsn last_flush() const { return statuses.empty() ? lsn{} : statuses.back().flush; }
    std::size_t count(std::string_view kind) const {
        return static_cast<std::size_t>(std::count(kinds.begin(), kinds.end(), kind));
    }

    std::size_t acked_ = 0;
};

}  // namespace

TEST_SUITE("relay_session") {

TEST_CASE("starts_from_the_slot_and_confirms_its_position") {
    driver d;
    d.start();
    REQUIRE(d.starts.size() == 1);
    CHECK(d.starts[0] == lsn{});  // 0/0: the server starts at the slot's confirmed_flush
    CHECK(d.session().phase() == session_phase::connecting);
    CHECK_FALSE(d.session().readiness().first);
    d.started(lsn{0x500});
    CHECK(d.session().phase() == session_phase::streaming);
    CHECK(d.session().readiness().first);
    REQUIRE(d.statuses.size() == 1);
    CHECK(d.statuses[0].flush == lsn{0x500});
}

TEST_CASE("record_carries_mapped_and_position_headers") {
    driver d;
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "e-1", "order", "agg-1", R"({"a":1})");
    d.row(0x1002, "e-2", "order", "agg-1", R"({"a":2})");
    d.commit(0x1000, 0x1028);
    REQUIRE(d.out.size() == 2);
    CHECK(d.out[0].topic == "outbox.event.order");
    CHECK(d.out[0].key == "agg-1");
    CHECK(d.out[0].value == R"({"a":1})");
    CHECK(d.out[0].headers == std::map<std::string, std::string>{
                                  {"id", "e-1"},
                                  {"type", "Created"},
                                  {"outbox-relay.commit-lsn", "0/1000"},
                                  {"outbox-relay.seq", "0"},
                                  {"outbox-relay.source", "7301234567890123456:1:outbox_relay:app"}});
    CHECK(d.out[1].headers.at("outbox-relay.seq") == "1");
    CHECK(d.out[0].tag != d.out[1].tag + 1);  // same transaction, same checkpoint entry
    CHECK(d.out[0].tag == d.out[1].tag);
}

TEST_CASE("ack_out_of_order_holds_watermark") {
    driver d;
    d.streaming();
    d.txn(0x1000, 2);  // records 0, 1
    d.txn(0x2000, 1);  // record 2
    d.ack(2);
    d.ack(1);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x100});
    d.ack(0);  // the oldest transaction's last record releases both
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x2028});
}

TEST_CASE("confirms_end_lsn_not_commit_lsn") {
    driver d;
    d.streaming();
    d.txn(0x1000, 1);
    d.ack(0);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});
    for (const auto& s : d.statuses) CHECK(s.flush != lsn{0x1000});
}

TEST_CASE("confirm_coalesces_status_updates_of_an_ack_burst") {
    driver d;
    d.streaming();
    for (std::uint64_t i = 1; i <= 50; ++i) d.txn(0x1000 * i, 1);
    const auto before = d.statuses.size();
    d.ack_all();
    // The first ack confirms at once; the burst after it waits for the gap.
    CHECK(d.statuses.size() <= before + 1);
    d.advance(60ms);
    CHECK(d.last_flush() == lsn{0x1000 * 50 + 0x28});
}

TEST_CASE("keepalive_while_a_transaction_is_open_is_not_confirmed") {
    driver d;
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "e-1");
    d.keepalive(0x9000, true);  // the server asks for a reply mid-transaction
    REQUIRE_FALSE(d.statuses.empty());
    CHECK(d.statuses.back().flush == lsn{0x100});
    CHECK(d.statuses.back().write == lsn{0x9000});
    d.ack(0);  // acked, but its transaction is still open
    d.keepalive(0x9100, true);
    CHECK(d.statuses.back().flush == lsn{0x100});
    d.commit(0x1000, 0x1028);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});
}

TEST_CASE("idle_keepalive_is_confirmed") {
    driver d;
    d.streaming();
    d.keepalive(0x7000);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x7000});
}

TEST_CASE("keepalive_reply_request_is_answered_at_once") {
    driver d;
    d.streaming();
    const auto before = d.statuses.size();
    d.keepalive(0x200, true);
    CHECK(d.statuses.size() == before + 1);
    d.keepalive(0x300, false);
    CHECK(d.statuses.size() == before + 1);
}

TEST_CASE("status_update_every_interval_also_while_paused") {
    driver d;
    d.cfg.max_inflight_records = 2;
    d.streaming();
    d.txn(0x1000, 2);
    REQUIRE(d.session().reading_paused());
    for (int i = 0; i < 3; ++i) {
        const auto before = d.statuses.size();
        d.advance(10s);
        CHECK(d.statuses.size() == before + 1);
    }
    // Nothing can be heard while paused: no silence timeout, however long.
    CHECK(d.closes == 0);
}

TEST_CASE("silent_server_is_probed_then_given_up") {
    driver d;
    d.cfg.pg_silence_timeout = 3s;
    d.cfg.status_interval = 10s;
    d.streaming();
    d.advance(1100ms);
    REQUIRE_FALSE(d.statuses.empty());
    CHECK(d.statuses.back().reply_requested);  // a third of the timeout: ask for a reply
    d.advance(1000ms);
    CHECK(d.closes == 0);
    d.advance(1000ms);  // 3.1 s of silence
    CHECK(d.closes == 1);
    CHECK(d.session().phase() == session_phase::reconnect_wait);
    CHECK(d.session().metrics().pg_silence_timeouts.value() == 1);
    CHECK_FALSE(d.session().readiness().first);
    d.advance(300ms);
    CHECK(d.starts.size() == 2);
}

TEST_CASE("answer_to_a_probe_keeps_the_connection") {
    driver d;
    d.cfg.pg_silence_timeout = 3s;
    d.streaming();
    d.advance(1100ms);
    CHECK(d.statuses.back().reply_requested);
    d.keepalive(0x100);  // the server answered
    d.advance(2500ms);
    CHECK(d.closes == 0);
}

TEST_CASE("reconnect_abandons_the_open_transaction") {
    driver d;
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "e-1");
    d.closed(stream_end::connection_lost);
    CHECK(d.session().phase() == session_phase::reconnect_wait);
    d.advance(1s);
    CHECK(d.starts.size() == 1);  // its record is still in flight: wait for it
    d.ack(0);
    d.advance(1ms);
    REQUIRE(d.starts.size() == 2);
    CHECK(d.starts[1] == lsn{0x100});  // the abandoned transaction was not confirmed
    d.started(lsn{0x100});
    d.relation();
    d.txn(0x1000, 1);  // the server resends it whole: a new Begin is fine
    REQUIRE(d.out.size() == 2);
    d.ack(1);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});
}

TEST_CASE("reconnect_backs_off_exponentially_to_the_cap") {
    driver d;
    d.cfg.reconnect_backoff_max = 1s;
    d.start();
    std::vector<milliseconds> waits;
    for (int i = 0; i < 5; ++i) {
        d.closed(stream_end::connection_lost);
        const auto wait = std::chrono::duration_cast<milliseconds>(d.session().next_deadline() - d.t);
        waits.push_back(wait);
        d.advance(wait);
    }
    CHECK(waits == std::vector<milliseconds>{200ms, 400ms, 800ms, 1000ms, 1000ms});
    CHECK(d.starts.size() == 6);
    CHECK(d.session().metrics().pg_reconnects.value() == 5);
}

TEST_CASE("slot_busy_retries_every_second") {
    driver d;
    d.start();
    for (int i = 0; i < 3; ++i) {
        d.closed(stream_end::slot_busy, "replication slot is active for PID 42");
        CHECK(std::string(d.session().readiness().second).find("held by another process") != std::string::npos);
        d.advance(999ms);
        CHECK(d.starts.size() == static_cast<std::size_t>(i + 1));
        d.advance(1ms);
        CHECK(d.starts.size() == static_cast<std::size_t>(i + 2));
    }
    // Logged once, not every second.
    CHECK(std::count_if(d.notes.begin(), d.notes.end(), [](auto& n) { return n.find("slot_busy") != n.npos; }) == 1);
}

TEST_CASE("producer_restart_while_a_reconnect_is_pending") {
    // Defect 1 of issue 8: a PG connection drop with records in flight, then a
    // fatal producer error, used to leave the reconnect armed and connect a
    // second stream over the new one.
    driver d;
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "e-1");
    d.closed(stream_end::connection_lost);
    d.advance(500ms);  // reconnect due, but waiting for the record in flight
    CHECK(d.starts.size() == 1);
    d.fatal(producer_fault::healable);
    CHECK(d.session().phase() == session_phase::producer_restart);
    d.advance(200ms);
    CHECK(d.recreates == 1);
    CHECK(d.starts.size() == 2);
    // The old producer's report arrives late: ignored, and no third stream.
    d.deliver(d.out[0].tag);
    d.advance(5s);
    CHECK(d.starts.size() == 2);
    d.started(lsn{0x100});
    d.relation();
    d.txn(0x1000, 1);  // no "Begin while open" abort: the old transaction is gone
    CHECK(d.out.size() == 2);
    CHECK_FALSE(d.stopped);
}

TEST_CASE("stale_reports_of_a_replaced_producer_are_ignored") {
    driver d;
    d.streaming();
    d.txn(0x1000, 1);
    const record_tag old = d.out[0].tag;
    d.fatal(producer_fault::healable);
    d.advance(200ms);
    d.started(lsn{0x100});
    d.relation();
    d.txn(0x1000, 1);
    REQUIRE(d.out.size() == 2);
    CHECK(d.out[1].tag != old);
    d.deliver(old);  // would confirm if it counted
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x100});
    CHECK(d.session().in_flight_records() == 1);
    d.ack(1);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});
}

TEST_CASE("recurring_fatal_error_backs_off_then_exits") {
    driver d;
    d.cfg.producer_restart_limit = 3;
    d.start();
    d.started();
    std::vector<milliseconds> waits;
    for (int i = 0; i < 3; ++i) {
        d.fatal(producer_fault::healable, "UNKNOWN_PRODUCER_ID: again");
        REQUIRE_FALSE(d.stopped);
        const auto wait = std::chrono::duration_cast<milliseconds>(d.session().next_deadline() - d.t);
        waits.push_back(wait);
        d.advance(wait);
        d.started();
    }
    CHECK(waits == std::vector<milliseconds>{200ms, 400ms, 800ms});
    CHECK(d.recreates == 3);
    d.fatal(producer_fault::healable, "UNKNOWN_PRODUCER_ID: again");
    CHECK(d.stop_streams == 1);
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::producer_failed);
    CHECK(d.stopped->reason.find("4 times in a row") != std::string::npos);
}

TEST_CASE("an_ack_resets_the_fatal_count") {
    driver d;
    d.cfg.producer_restart_limit = 1;
    d.streaming();
    d.fatal(producer_fault::healable);
    d.advance(200ms);
    d.started();
    d.relation();
    d.txn(0x1000, 1);
    d.ack(0);
    d.fatal(producer_fault::healable);  // the first in a row again
    CHECK_FALSE(d.stopped);
    CHECK(d.session().phase() == session_phase::producer_restart);
}

TEST_CASE("unhealable_fatal_error_exits_25") {
    driver d;
    d.streaming();
    d.fatal(producer_fault::permanent, "CLUSTER_AUTHORIZATION_FAILED: denied");
    REQUIRE(d.stop_streams == 1);
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::producer_failed);
    CHECK(d.recreates == 0);
}

TEST_CASE("producer_that_cannot_be_created_exits_20") {
    driver d;
    d.streaming();
    d.fatal(producer_fault::config, "bad property");
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::kafka_config);
}

TEST_CASE("permanent_delivery_failure_exits_21_without_confirming_it") {
    driver d;
    d.streaming();
    d.txn(0x1000, 1);
    d.txn(0x2000, 1);
    d.ack(1);  // a later record succeeded
    d.deliver(d.out[0].tag, delivery_status::permanent, "Broker: Message size too large", "e-0");
    REQUIRE(d.stop_streams == 1);
    CHECK(d.last_flush() == lsn{0x100});  // the final status confirms nothing past the failed record
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::record_rejected);
    CHECK(d.stopped->reason.find("event_id=e-0") != std::string::npos);
}

TEST_CASE("transient_delivery_failure_restarts_the_producer_from_confirmed") {
    driver d;
    d.streaming();
    d.txn(0x1000, 1);
    d.txn(0x2000, 1);
    d.ack(0);
    d.advance(100ms);
    d.deliver(d.out[1].tag, delivery_status::transient, "Local: Purged in flight");
    CHECK(d.closes == 1);
    d.advance(200ms);
    CHECK(d.recreates == 1);
    REQUIRE(d.starts.size() == 2);
    CHECK(d.starts[1] == lsn{0x1028});
}

TEST_CASE("fatal_stream_error_exits_24") {
    driver d;
    d.streaming();
    d.closed(stream_end::fatal, "replication slot \"s\" does not exist");
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::slot_lost);
    CHECK(d.stop_streams == 0);  // the stream is already gone
}

TEST_CASE("undecodable_message_exits_22_naming_the_lsn") {
    driver d;
    d.streaming();
    d.xlog(0x1234, std::string("I\0\0", 3));
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::protocol);
    CHECK(d.stopped->reason.find("lsn=0/1234") != std::string::npos);
    CHECK(d.stopped->reason.find("field relid") != std::string::npos);
}

TEST_CASE("outbox_losing_a_mapped_column_exits_23") {
    driver d;
    d.start();
    d.started();
    d.relation(relid, /*with_type=*/false);
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::outbox_schema);
    CHECK(d.stopped->reason.find("\"type\"") != std::string::npos);
}

TEST_CASE("row_routed_to_an_invalid_topic_exits_21_naming_the_event") {
    driver d;
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "e-bad", "bad topic/x");
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::record_rejected);
    CHECK(d.stopped->reason.find("event_id=e-bad") != std::string::npos);
    CHECK(d.out.empty());
}

TEST_CASE("rows_of_other_tables_and_updates_are_counted_not_sent") {
    driver d;
    d.streaming();
    d.relation(other_relid);
    d.begin(0x1000);
    d.xlog(0x1001, test::enc_insert(std::nullopt, other_relid,
                                    {{'t', "i"}, {'t', "a"}, {'t', "k"}, {'t', "t"}, {'t', "{}"}}));
    d.xlog(0x1002, test::enc_update(std::nullopt, relid, 0, {},
                                    {{'t', "i"}, {'t', "a"}, {'t', "k"}, {'t', "t"}, {'t', "{}"}}));
    d.commit(0x1000, 0x1028);
    CHECK(d.out.empty());
    CHECK(d.session().metrics().ignored_other_table.value() == 1);
    CHECK(d.session().metrics().ignored_update.value() == 1);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});  // nothing to wait for
}

TEST_CASE("empty_transactions_fold_into_one_checkpoint_entry") {
    driver d;
    d.streaming();
    d.txn(0x1000, 1);  // pending: the broker is down
    for (std::uint64_t i = 0; i < 20'000; ++i) d.txn(0x10000 + i * 0x100, 0);
    CHECK(d.session().pending_txns() == 1);
    d.ack(0);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x10000 + 19'999 * 0x100 + 0x28});
    CHECK(d.session().pending_txns() == 0);
}

TEST_CASE("backpressure_on_records") {
    driver d;
    d.cfg.max_inflight_records = 20;
    d.streaming();
    for (std::uint64_t i = 1; i <= 19; ++i) d.txn(0x1000 * i, 1);
    CHECK(d.pauses == 0);
    d.txn(0x1000 * 20, 1);
    CHECK(d.pauses == 1);
    CHECK(d.session().reading_paused());
    d.ack(0);  // 19 left: not yet at 90 %
    CHECK(d.resumes == 0);
    CHECK(d.session().metrics().backpressure_active.value() == 1);
    d.ack(1);  // 18 = 90 %: read again
    CHECK(d.resumes == 1);
    CHECK_FALSE(d.session().reading_paused());
    CHECK(d.session().metrics().backpressure_active.value() == 0);
}

TEST_CASE("backpressure_on_bytes") {
    driver d;
    d.cfg.max_inflight_bytes = 1000;
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "e-1", "order", "k", std::string(600, 'x'));
    CHECK(d.pauses == 0);
    d.row(0x1002, "e-2", "order", "k", std::string(600, 'x'));
    CHECK(d.pauses == 1);
    CHECK(d.session().in_flight_bytes() > 1000);
    d.deliver(d.out[0].tag, delivery_status::ok, "", "", d.session().in_flight_bytes() / 2 + 1);
    CHECK(d.resumes == 1);
}

TEST_CASE("backpressure_bounds_pending_transactions_through_their_records") {
    driver d;
    d.cfg.max_inflight_records = 5;
    d.streaming();
    for (std::uint64_t i = 1; i <= 5; ++i) d.txn(0x1000 * i, 1);
    CHECK(d.session().reading_paused());
    CHECK(d.session().pending_txns() == 5);
}

TEST_CASE("backpressure_counts_parked_records") {
    driver d(delivery_mode::exactly_once);
    d.cfg.max_inflight_records = 3;
    d.streaming();
    d.txn(0x1000, 3);  // all parked: the topic's scan is not back yet
    CHECK(d.out.empty());
    CHECK(d.session().parked_records() == 3);
    CHECK(d.session().reading_paused());
}

TEST_CASE("shutdown_drains_then_sends_the_final_status") {
    driver d;
    d.streaming();
    d.txn(0x1000, 2);
    d.shutdown();
    CHECK(d.session().reading_paused());
    CHECK(d.stop_streams == 0);
    d.ack(0);
    CHECK(d.stop_streams == 0);
    d.ack(1);
    REQUIRE(d.stop_streams == 1);
    // The final status goes out before CopyDone, with everything acked.
    const auto stop_at = std::find(d.kinds.begin(), d.kinds.end(), "stop_stream");
    REQUIRE(stop_at != d.kinds.begin());
    CHECK(*(stop_at - 1) == "status");
    CHECK(d.last_flush() == lsn{0x1028});
    CHECK_FALSE(d.stopped);
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::ok);
}

TEST_CASE("shutdown_mid_transaction_reads_on_to_its_commit") {
    driver d;
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "e-1");
    d.shutdown();
    CHECK(d.session().phase() == session_phase::finishing_txn);
    CHECK_FALSE(d.session().reading_paused());
    d.row(0x1002, "e-2");
    d.commit(0x1000, 0x1028);
    CHECK(d.session().phase() == session_phase::draining);
    d.ack_all();
    REQUIRE(d.stop_streams == 1);
    CHECK(d.last_flush() == lsn{0x1028});
}

TEST_CASE("shutdown_mid_transaction_is_bounded_by_the_drain_timeout") {
    driver d;
    d.cfg.drain_timeout = 2s;
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "e-1");
    d.ack(0);
    d.shutdown();
    d.advance(2s);  // the Commit never came: stop reading
    CHECK(d.session().phase() != session_phase::finishing_txn);
    REQUIRE(d.stop_streams == 1);
    CHECK(d.last_flush() == lsn{0x100});  // the open transaction is never confirmed
}

TEST_CASE("drain_timeout_stops_without_the_missing_acks") {
    driver d;
    d.cfg.drain_timeout = 1s;
    d.streaming();
    d.txn(0x1000, 1);
    d.shutdown();
    d.advance(999ms);
    CHECK(d.stop_streams == 0);
    d.advance(1ms);
    REQUIRE(d.stop_streams == 1);
    CHECK(d.last_flush() == lsn{0x100});
}

TEST_CASE("shutdown_without_a_stream_stops_at_once") {
    driver d;
    d.start();
    d.closed(stream_end::connection_lost);
    d.shutdown();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::ok);
    CHECK(d.stop_streams == 0);
}

TEST_CASE("exactly_once_scans_a_topic_before_its_first_record") {
    driver d(delivery_mode::exactly_once);
    d.streaming(lsn{0x800});
    d.begin(0x1000);
    d.row(0x1001, "e-0");
    REQUIRE(d.scans.size() == 1);
    CHECK(d.scans[0].topic == "outbox.event.order");
    CHECK(d.scans[0].from == lsn{0x800});
    CHECK(d.out.empty());
    d.row(0x1002, "e-1");
    CHECK(d.scans.size() == 1);  // one scan per topic
    d.scan_ok(d.scans[0]);
    REQUIRE(d.out.size() == 2);
    CHECK(d.out[0].headers.at("id") == "e-0");
    CHECK(d.out[1].headers.at("id") == "e-1");
    d.row(0x1003, "e-2");  // the topic is known now: straight out
    CHECK(d.out.size() == 3);
}

TEST_CASE("scan_skips_what_the_topic_already_has") {
    driver d(delivery_mode::exactly_once);
    d.streaming();
    d.txn(0x1000, 3);
    REQUIRE(d.scans.size() == 1);
    d.scan_ok(d.scans[0], {{lsn{0x1000}, 0}, {lsn{0x1000}, 2}});
    REQUIRE(d.out.size() == 1);  // the refilled gap only
    CHECK(d.out[0].headers.at("outbox-relay.seq") == "1");
    CHECK(d.session().metrics().duplicates_skipped.value() == 2);
    d.ack(0);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});  // skipped records count as delivered
    d.txn(0x2000, 1);  // past everything present: produced
    CHECK(d.out.size() == 2);
}

TEST_CASE("parked_records_keep_order_and_other_topics_flow") {
    driver d(delivery_mode::exactly_once);
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "b-0", "billing");
    REQUIRE(d.scans.size() == 1);
    d.scan_ok(d.scans[0]);  // billing is ready
    d.row(0x1002, "o-0", "order");
    d.row(0x1003, "b-1", "billing");  // not held up by the order scan
    d.row(0x1004, "o-1", "order");
    d.row(0x1005, "o-2", "order");
    d.commit(0x1000, 0x1028);
    REQUIRE(d.scans.size() == 2);
    REQUIRE(d.out.size() == 2);
    CHECK(d.out[1].headers.at("id") == "b-1");
    d.scan_ok(d.scans[1]);
    REQUIRE(d.out.size() == 5);
    CHECK(d.out[2].headers.at("id") == "o-0");
    CHECK(d.out[3].headers.at("id") == "o-1");
    CHECK(d.out[4].headers.at("id") == "o-2");
    CHECK(d.out[4].headers.at("outbox-relay.seq") == "4");
    d.ack_all();
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});
}

TEST_CASE("scan_result_after_a_reconnect_is_ignored") {
    driver d(delivery_mode::exactly_once);
    d.streaming();
    d.txn(0x1000, 1);
    REQUIRE(d.scans.size() == 1);
    const auto stale = d.scans[0];
    d.closed(stream_end::connection_lost);
    d.advance(200ms);
    REQUIRE(d.starts.size() == 2);
    d.started();
    d.relation();
    d.scan_ok(stale);  // the scan of the lost stream: nothing happens
    CHECK(d.out.empty());
    d.txn(0x1000, 1);
    REQUIRE(d.scans.size() == 2);
    d.scan_ok(d.scans[1]);
    CHECK(d.out.size() == 1);
}

TEST_CASE("parked_records_of_a_lost_stream_are_never_confirmed") {
    driver d(delivery_mode::exactly_once);
    d.streaming();
    d.txn(0x1000, 1, "billing");
    d.scan_ok(d.scans[0]);
    d.txn(0x2000, 1, "order");  // parked behind its scan
    d.txn(0x3000, 1, "billing");  // produced
    REQUIRE(d.out.size() == 2);
    d.closed(stream_end::connection_lost);
    d.ack_all();
    d.advance(200ms);
    // Only the first transaction is confirmable: the parked one was never sent.
    REQUIRE(d.starts.size() == 2);
    CHECK(d.starts[1] == lsn{0x1028});
    CHECK(d.session().parked_records() == 0);
    CHECK(d.session().pending_txns() == 0);
}

TEST_CASE("transient_scan_failure_retries_with_backoff") {
    driver d(delivery_mode::exactly_once);
    d.streaming();
    d.txn(0x1000, 1);
    d.scan_failed(d.scans[0], scan_outcome::kind::transient, "brokers down");
    CHECK(d.session().metrics().scan_failures.value() == 1);
    CHECK(d.session().phase() == session_phase::streaming);  // the stream stays up
    d.advance(499ms);
    CHECK(d.scans.size() == 1);
    d.advance(1ms);
    REQUIRE(d.scans.size() == 2);
    d.scan_failed(d.scans[1], scan_outcome::kind::transient);
    d.advance(999ms);
    CHECK(d.scans.size() == 2);
    d.advance(1ms);
    REQUIRE(d.scans.size() == 3);
    d.scan_ok(d.scans[2]);
    CHECK(d.out.size() == 1);
}

TEST_CASE("permanent_scan_failure_exits_21") {
    driver d(delivery_mode::exactly_once);
    d.streaming();
    d.txn(0x1000, 1);
    d.scan_failed(d.scans[0], scan_outcome::kind::permanent, "Broker: Topic authorization failed");
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::record_rejected);
    CHECK(d.stopped->reason.find("event_id=id-4096-0") != std::string::npos);
}

TEST_CASE("scan_is_asked_for_this_source_only") {
    driver d(delivery_mode::exactly_once);
    d.streaming();
    d.txn(0x1000, 1);
    REQUIRE(d.scans.size() == 1);
    CHECK(d.scans[0].source.system_id == "7301234567890123456");
    CHECK(d.scans[0].source.slot == "outbox_relay");
    CHECK(d.scans[0].source.timeline == 1);
}

TEST_CASE("recreated_slot_with_this_sources_records_in_kafka_exits_16") {
    driver d(delivery_mode::exactly_once);
    d.session().set_slot_created(true);
    d.streaming(lsn{0x9000});
    d.txn(0x9100, 1);
    scan_outcome o;
    o.own_records_seen = true;
    o.newest_own = lsn{0x5000};
    d.session().on_scan_done(d.scans[0].id, std::move(o), d.now());
    d.drain();
    CHECK(d.out.empty());
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::slot);
    CHECK(d.stopped->reason.find("0/5000") != std::string::npos);
    CHECK(d.stopped->reason.find("--accept-slot-gap") != std::string::npos);
    CHECK(d.stopped->drop_slot);  // so the next start meets the same gap
    CHECK(d.session().metrics().slot_gaps.value() == 1);
}

TEST_CASE("recreated_slot_gap_accepted_carries_on_and_counts_it") {
    driver d(delivery_mode::exactly_once);
    d.cfg.accept_slot_gap = true;
    d.session().set_slot_created(true);
    d.streaming(lsn{0x9000});
    d.txn(0x9100, 1);
    scan_outcome o;
    o.own_records_seen = true;
    o.newest_own = lsn{0x5000};
    d.session().on_scan_done(d.scans[0].id, std::move(o), d.now());
    d.drain();
    CHECK(d.out.size() == 1);
    CHECK_FALSE(d.stopped);
    CHECK(d.session().metrics().slot_gaps.value() == 1);
}

TEST_CASE("recreated_slot_is_probed_at_once_without_waiting_for_records") {
    driver d(delivery_mode::exactly_once);
    d.session().set_slot_created(true);
    d.streaming(lsn{0x9000});
    std::optional<cmd::probe_gap> probe;
    // The probe command is issued at the stream start; capture it from the kinds log.
    d.session().on_gap_probe(false, true, lsn{0x5000}, "outbox.event.order", "", d.now());
    d.drain();
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::slot);
    CHECK(d.stopped->drop_slot);
    CHECK(d.stopped->reason.find("outbox.event.order") != std::string::npos);
}

TEST_CASE("clean_gap_probe_means_a_first_start") {
    driver d(delivery_mode::exactly_once);
    d.session().set_slot_created(true);
    d.streaming();
    d.session().on_gap_probe(false, false, lsn{}, "", "", d.now());
    d.drain();
    d.txn(0x1000, 1);
    scan_outcome o;
    o.own_records_seen = true;  // further back than the probe looked: not a gap once probed clean
    o.newest_own = lsn{0x50};
    d.session().on_scan_done(d.scans[0].id, std::move(o), d.now());
    d.drain();
    CHECK_FALSE(d.stopped);
    CHECK(d.out.size() == 1);
}

TEST_CASE("first_start_without_this_sources_records_proceeds") {
    driver d(delivery_mode::exactly_once);
    d.session().set_slot_created(true);
    d.streaming();
    d.txn(0x1000, 1);
    d.scan_ok(d.scans[0]);  // only foreign records, or none
    CHECK(d.out.size() == 1);
    CHECK(d.session().metrics().slot_gaps.value() == 0);
}

TEST_CASE("at_least_once_never_scans") {
    driver d(delivery_mode::at_least_once);
    d.streaming();
    d.txn(0x1000, 2);
    CHECK(d.scans.empty());
    CHECK(d.out.size() == 2);
}

TEST_CASE("next_deadline_is_the_status_interval_when_idle") {
    driver d;
    d.cfg.pg_silence_timeout = 60s;
    d.streaming();
    // A third of the silence timeout (the probe) or the status interval, whichever comes first.
    CHECK(d.session().next_deadline() - d.t == std::chrono::steady_clock::duration(10s));
    CHECK(driver().session().next_deadline() == steady_time::max());
}

}  // TEST_SUITE

TEST_SUITE("relay_session_dead_letters") {

namespace {
std::vector<test::enc_column> null_id_row() {
    return {{'n', ""}, {'t', "order"}, {'t', "agg-9"}, {'t', "Created"}, {'t', R"({"x":1})"}};
}
}  // namespace

TEST_CASE("null_id_row_becomes_a_dead_letter_with_its_headers") {
    driver d(delivery_mode::at_least_once, "outbox.dlq");
    d.streaming();
    d.begin(0x1000);
    d.xlog(0x1001, test::enc_insert(std::nullopt, relid, null_id_row()));
    d.commit(0x1000, 0x1028);
    REQUIRE(d.out.size() == 1);
    const auto& dl = d.out[0];
    CHECK(dl.topic == "outbox.dlq");
    CHECK(dl.key == "agg-9");
    CHECK(dl.value == R"({"x":1})");
    CHECK(dl.headers.at("outbox-relay.dlq.reason") == "null_column");
    CHECK(dl.headers.at("outbox-relay.dlq.detail").find("\"id\"") != std::string::npos);
    CHECK(dl.headers.at("outbox-relay.dlq.topic") == "");
    CHECK(dl.headers.at("outbox-relay.dlq.table") == "public.outbox");
    CHECK(dl.headers.at("outbox-relay.commit-lsn") == "0/1000");
    CHECK(dl.headers.at("outbox-relay.seq") == "0");
    CHECK(dl.headers.count("outbox-relay.source") == 1);
    CHECK(dl.headers.at("type") == "Created");
    CHECK(dl.headers.count("id") == 0);  // it had none
    CHECK(d.session().metrics().dead_letter("null_column").value() == 1);
    d.ack(0);  // a dead letter counts as delivered once acked
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});
    CHECK_FALSE(d.stopped);
}

TEST_CASE("null_id_row_without_a_dead_letter_topic_stops_naming_the_fix") {
    driver d;
    d.streaming();
    d.begin(0x1000);
    d.xlog(0x1001, test::enc_insert(std::nullopt, relid, null_id_row()));
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::outbox_schema);
    CHECK(d.stopped->reason.find("null_column") != std::string::npos);
    CHECK(d.stopped->reason.find("--dead-letter-topic") != std::string::npos);
    CHECK(d.last_flush() == lsn{0x100});
}

TEST_CASE("invalid_topic_row_becomes_a_dead_letter_naming_the_topic") {
    driver d(delivery_mode::at_least_once, "outbox.dlq");
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "e-1", "bad topic/x");
    d.row(0x1002, "e-2", "order");  // the next row flows on
    d.commit(0x1000, 0x1028);
    REQUIRE(d.out.size() == 2);
    CHECK(d.out[0].topic == "outbox.dlq");
    CHECK(d.out[0].headers.at("outbox-relay.dlq.reason") == "invalid_topic");
    CHECK(d.out[0].headers.at("outbox-relay.dlq.topic") == "outbox.event.bad topic/x");
    CHECK(d.out[0].headers.at("id") == "e-1");
    CHECK(d.out[1].topic == "outbox.event.order");
    CHECK(d.out[1].headers.at("outbox-relay.seq") == "1");
}

TEST_CASE("outbox_losing_a_column_with_a_dead_letter_topic_dead_letters_each_row") {
    driver d(delivery_mode::at_least_once, "outbox.dlq");
    d.start();
    d.started();
    d.relation(relid, /*with_type=*/false);
    CHECK_FALSE(d.stopped);
    d.begin(0x1000);
    d.xlog(0x1001, test::enc_insert(std::nullopt, relid, {{'t', "e-1"}, {'t', "order"}, {'t', "k"}, {'t', "{}"}}));
    d.commit(0x1000, 0x1028);
    REQUIRE(d.out.size() == 1);
    CHECK(d.out[0].headers.at("outbox-relay.dlq.reason") == "unmapped_column");
    CHECK(d.out[0].headers.at("id") == "e-1");
}

TEST_CASE("record_refused_by_kafka_becomes_a_dead_letter_of_the_same_entry") {
    driver d(delivery_mode::at_least_once, "outbox.dlq");
    d.streaming();
    d.txn(0x1000, 1);
    d.txn(0x2000, 1);
    REQUIRE(d.out.size() == 2);
    // The broker refuses the first for good; the second is acked.
    d.ack(1);
    record failed;
    failed.topic = d.out[0].topic;
    failed.key = d.out[0].key;
    failed.value = d.out[0].value;
    std::vector<header> hs;
    for (const auto& [k, v] : d.out[0].headers) hs.push_back({k, v});
    failed.headers = hs;
    delivery dv;
    dv.status = delivery_status::permanent;
    dv.why = refusal::topic_authorization;
    dv.error = "Broker: Topic authorization failed";
    dv.topic = d.out[0].topic;
    dv.rec = failed;
    d.session().on_delivery(d.out[0].tag, dv, d.now());
    d.drain();
    REQUIRE(d.out.size() == 3);
    CHECK(d.out[2].topic == "outbox.dlq");
    CHECK(d.out[2].headers.at("outbox-relay.dlq.reason") == "topic_authorization");
    CHECK(d.out[2].headers.at("outbox-relay.dlq.topic") == d.out[0].topic);
    CHECK(d.out[2].headers.at("outbox-relay.commit-lsn") == "0/1000");
    CHECK(d.out[2].tag == d.out[0].tag);  // the same checkpoint entry
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x100});  // not before the dead letter is acked
    d.ack(2);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x2028});
}

TEST_CASE("dead_letter_too_large_for_the_dead_letter_topic_goes_without_its_value") {
    driver d(delivery_mode::at_least_once, "outbox.dlq");
    d.streaming();
    d.begin(0x1000);
    d.row(0x1001, "e-1", "order", "k", std::string(5000, 'v'));
    d.commit(0x1000, 0x1028);
    auto refuse = [&](std::size_t i, bool local) {
        std::vector<header> hs;
        for (const auto& [k, v] : d.out[i].headers) hs.push_back({k, v});
        record r;
        r.topic = d.out[i].topic;
        r.key = d.out[i].key;
        r.value = d.out[i].value;
        r.headers = hs;
        delivery dv;
        dv.status = delivery_status::permanent;
        dv.why = refusal::too_large;
        dv.local = local;
        dv.bytes = 6000;
        dv.error = "Broker: Message size too large";
        dv.topic = d.out[i].topic;
        dv.rec = r;
        d.session().on_delivery(d.out[i].tag, dv, d.now());
        d.drain();
    };
    refuse(0, /*local=*/true);  // larger than message.max.bytes: known at once
    REQUIRE(d.out.size() == 2);
    CHECK(d.out[1].topic == "outbox.dlq");
    CHECK(d.out[1].headers.at("outbox-relay.dlq.reason") == "record_too_large");
    CHECK(d.out[1].value.size() == 5000);
    refuse(1, /*local=*/true);  // the dead-letter topic refuses it too
    REQUIRE(d.out.size() == 3);
    CHECK(d.out[2].topic == "outbox.dlq");
    CHECK(d.out[2].value.empty());
    CHECK(d.out[2].headers.at("outbox-relay.dlq.value-bytes") == "5000");
    CHECK(d.out[2].headers.at("outbox-relay.dlq.reason") == "record_too_large");
    CHECK(d.session().metrics().dead_letter("record_too_large").value() == 2);
}

TEST_CASE("small_record_refused_as_too_large_shrinks_batches_not_dead_letters") {
    driver d(delivery_mode::at_least_once, "outbox.dlq");
    d.streaming();
    d.txn(0x1000, 1);
    delivery dv;
    dv.status = delivery_status::permanent;
    dv.why = refusal::too_large;
    dv.local = false;  // the broker refused the batch around it
    dv.bytes = 300;
    dv.error = "Broker: Message size too large";
    d.session().on_delivery(d.out[0].tag, dv, d.now());
    d.drain();
    CHECK(d.out.size() == 1);  // no dead letter
    CHECK(d.closes == 1);
    d.advance(200ms);
    REQUIRE(d.recreates == 1);
    CHECK(d.session().metrics().batch_shrinks.value() == 1);
    // The new producer gets batches half as big (librdkafka's default 1,000,000).
    bool saw = false;
    for (auto& k : d.notes) saw = saw || k.find("new_batch_size=500000") != std::string::npos;
    CHECK(saw);
}

TEST_CASE("dead_letters_are_deduplicated_against_the_dead_letter_topic") {
    driver d(delivery_mode::exactly_once, "outbox.dlq");
    d.streaming();
    d.begin(0x1000);
    d.xlog(0x1001, test::enc_insert(std::nullopt, relid, null_id_row()));
    d.commit(0x1000, 0x1028);
    REQUIRE(d.scans.size() == 1);
    CHECK(d.scans[0].topic == "outbox.dlq");
    d.scan_ok(d.scans[0], {{lsn{0x1000}, 0}});  // written before the crash
    CHECK(d.out.empty());
    CHECK(d.session().metrics().duplicates_skipped.value() == 1);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});
}

TEST_CASE("topic_that_cannot_be_scanned_for_good_sends_its_records_to_dead_letters") {
    driver d(delivery_mode::exactly_once, "outbox.dlq");
    d.streaming();
    d.txn(0x1000, 2);
    REQUIRE(d.scans.size() == 1);
    d.scan_failed(d.scans[0], scan_outcome::kind::permanent, "Broker: Topic authorization failed");
    CHECK_FALSE(d.stopped);
    REQUIRE(d.scans.size() == 2);  // the dead-letter topic's own scan
    CHECK(d.scans[1].topic == "outbox.dlq");
    d.scan_ok(d.scans[1]);
    REQUIRE(d.out.size() == 2);
    for (const auto& p : d.out) {
        CHECK(p.topic == "outbox.dlq");
        CHECK(p.headers.at("outbox-relay.dlq.reason") == "topic_authorization");
    }
    d.txn(0x2000, 1);  // later records of that topic go straight there too
    CHECK(d.out.size() == 3);
    d.ack_all();
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x2028});
}

TEST_CASE("dead_letter_topic_refusing_for_good_exits_21") {
    driver d(delivery_mode::at_least_once, "outbox.dlq");
    d.streaming();
    d.begin(0x1000);
    d.xlog(0x1001, test::enc_insert(std::nullopt, relid, null_id_row()));
    d.commit(0x1000, 0x1028);
    std::vector<header> hs;
    for (const auto& [k, v] : d.out[0].headers) hs.push_back({k, v});
    delivery dv;
    dv.status = delivery_status::permanent;
    dv.why = refusal::topic_authorization;
    dv.error = "Broker: Topic authorization failed";
    dv.topic = "outbox.dlq";
    dv.rec.topic = "outbox.dlq";
    dv.rec.headers = hs;
    d.session().on_delivery(d.out[0].tag, dv, d.now());
    d.drain();
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::record_rejected);
    CHECK(d.stopped->reason.find("dead-letter topic refused") != std::string::npos);
}

}  // TEST_SUITE

TEST_SUITE("relay_session_kafka_transactions") {

TEST_CASE("a_standby_fences_only_once_it_holds_the_slot") {
    driver d(delivery_mode::exactly_once, "", true);
    d.start();
    d.closed(stream_end::slot_busy);  // waiting as a standby
    d.advance(1s);
    CHECK(d.count("init_txn") == 0);   // never fences the relay it stands by for
    d.started();
    CHECK(d.count("init_txn") == 1);
}

TEST_CASE("scans_wait_until_the_producer_has_fenced_its_predecessors") {
    driver d(delivery_mode::exactly_once, "", true);
    d.streaming();
    d.txn(0x1000, 1);
    CHECK(d.scans.empty());  // a predecessor's open transaction would hold the topic's end back
    d.txn_done(txn_op::init);
    REQUIRE(d.scans.size() == 1);
    d.scan_ok(d.scans[0]);
    REQUIRE(d.out.size() == 1);
    CHECK(d.count("begin_txn") == 1);
    const auto begin_at = std::find(d.kinds.begin(), d.kinds.end(), "begin_txn");
    const auto produce_at = std::find(d.kinds.begin(), d.kinds.end(), "produce");
    CHECK(begin_at < produce_at);
}

TEST_CASE("records_are_confirmed_only_once_their_kafka_transaction_commits") {
    driver d(delivery_mode::exactly_once, "", true);
    d.streaming();
    d.txn_done(txn_op::init);
    d.txn(0x1000, 2);
    d.scan_ok(d.scans[0]);
    d.ack_all();  // delivered, not committed
    d.advance(60ms);
    CHECK(d.last_flush() == lsn{0x100});
    d.idle();  // the WAL is idle: commit now
    REQUIRE(d.count("commit_txn") == 1);
    d.advance(60ms);
    CHECK(d.last_flush() == lsn{0x100});
    d.txn_done(txn_op::commit);
    d.advance(60ms);
    CHECK(d.last_flush() == lsn{0x1028});
    CHECK(d.session().metrics().kafka_txn_commits.value() == 1);
}

TEST_CASE("an_idle_moment_commits_only_once_the_stream_stays_quiet") {
    driver d(delivery_mode::exactly_once, "", true);
    d.first_txn_in_kafka_txn();
    // A catch-up: the socket is empty between reads, but frames keep coming.
    for (std::uint64_t i = 1; i <= 20; ++i) {
        d.idle_moment();
        d.txn(0x1000 + i * 0x100, 1);
    }
    CHECK(d.count("commit_txn") == 0);
    // The deadline the shell arms is the quiet period, not "now".
    CHECK(d.session().next_deadline() > d.now().mono);
    d.idle_moment();
    CHECK(d.session().next_deadline() <= d.now().mono + 1ms);
    d.advance(1ms);  // quiet: commit
    CHECK(d.count("commit_txn") == 1);
}

TEST_CASE("records_that_waited_for_a_commit_are_committed_once_quiet_without_another_frame") {
    driver d(delivery_mode::exactly_once, "", true);
    d.cfg.kafka_txn_begin_delay = 0ms;  // the case of released records, not of the delay
    d.first_txn_in_kafka_txn();
    d.idle();
    REQUIRE(d.count("commit_txn") == 1);
    d.txn(0x2000, 2);  // arrives while the commit runs: waits
    d.idle_moment();   // the last the stream says: it is quiet from now on
    d.txn_done(txn_op::commit);
    REQUIRE(d.out.size() == 3);  // released into a new transaction
    d.advance(1ms);
    // Quiet, but the last commit began less than kafka-txn-min-interval-ms ago.
    CHECK(d.count("commit_txn") == 1);
    CHECK(d.session().next_deadline() == d.now().mono + 4ms);
    d.advance(4ms);
    CHECK(d.count("commit_txn") == 2);  // not 100 ms later
}

TEST_CASE("without_a_min_interval_a_quiet_stream_commits_at_once") {
    driver d(delivery_mode::exactly_once, "", true);
    d.cfg.kafka_txn_min_interval = 0ms;
    d.cfg.kafka_txn_begin_delay = 0ms;
    d.first_txn_in_kafka_txn();
    d.idle();
    REQUIRE(d.count("commit_txn") == 1);
    d.txn(0x2000, 2);
    d.idle_moment();
    d.txn_done(txn_op::commit);
    d.advance(1ms);
    CHECK(d.count("commit_txn") == 2);
}

TEST_CASE("single_row_transactions_every_millisecond_commit_at_most_every_min_interval") {
    driver d(delivery_mode::exactly_once, "", true);
    d.cfg.kafka_txn_min_interval = 10ms;
    d.first_txn_in_kafka_txn();
    // One single-row transaction a millisecond, each followed by a quiet gap;
    // each commit is answered at once.
    std::vector<steady_time> commits_at;
    for (std::uint64_t i = 1; i <= 100; ++i) {
        d.idle_moment();
        d.advance(1ms);
        while (d.count("commit_txn") > commits_at.size()) {
            commits_at.push_back(d.now().mono);
            d.ack_all();
            d.txn_done(txn_op::commit);
        }
        d.txn(0x1000 + i * 0x100, 1);
    }
    REQUIRE(commits_at.size() >= 9);   // about one per 10 ms of the 100 ms
    CHECK(commits_at.size() <= 11);
    for (std::size_t i = 1; i < commits_at.size(); ++i) CHECK(commits_at[i] - commits_at[i - 1] >= 10ms);
    // Nothing was held back for good: the last transactions commit and are confirmed.
    d.idle_moment();
    d.advance(20ms);
    d.ack_all();
    if (d.count("commit_txn") > commits_at.size()) d.txn_done(txn_op::commit);
    d.advance(60ms);  // past the gap between two status updates
    CHECK(d.last_flush() == lsn{0x1000 + 100 * 0x100 + 0x28});
}

TEST_CASE("no_commit_deadline_while_a_postgres_transaction_is_half_in_kafka") {
    driver d(delivery_mode::exactly_once, "", true);
    d.first_txn_in_kafka_txn();
    d.begin(0x2000);
    d.row(0x2001, "e-a");
    d.advance(200ms);  // past kafka-txn-max-ms
    d.idle_moment();
    CHECK(d.count("commit_txn") == 0);
    // Nothing to do before the next status update: no deadline in the past.
    CHECK(d.session().next_deadline() > d.now().mono);
    d.row(0x2002, "e-b");
    d.commit(0x2000, 0x2028);  // the Postgres transaction ends past the max age: commit at once
    CHECK(d.count("commit_txn") == 1);
}

TEST_CASE("a_commit_never_splits_a_postgres_transaction") {
    driver d(delivery_mode::exactly_once, "", true);
    d.first_txn_in_kafka_txn();
    d.begin(0x2000);
    d.row(0x2001, "e-a");
    d.idle();
    d.advance(200ms);  // past kafka-txn-max-ms too
    CHECK(d.count("commit_txn") == 0);  // 0x2000 is half in it
    d.row(0x2002, "e-b");
    d.commit(0x2000, 0x2028);
    d.idle();
    CHECK(d.count("commit_txn") == 1);
}

TEST_CASE("records_while_a_commit_runs_wait_for_the_next_transaction_in_order") {
    driver d(delivery_mode::exactly_once, "", true);
    d.first_txn_in_kafka_txn();
    d.idle();
    REQUIRE(d.count("commit_txn") == 1);
    d.txn(0x2000, 2);
    d.txn(0x3000, 1);
    CHECK(d.out.size() == 1);  // waiting
    CHECK(d.session().parked_records() == 3);
    d.ack(0);
    d.txn_done(txn_op::commit);
    // The commit's markers are still being written: they wait
    // kafka-txn-begin-delay-ms (3) more, and so does what comes meanwhile.
    CHECK(d.out.size() == 1);
    CHECK(d.count("begin_txn") == 1);
    CHECK(d.session().next_deadline() == d.now().mono + 3ms);
    d.advance(1ms);
    d.txn(0x4000, 1);
    CHECK(d.out.size() == 1);
    CHECK(d.session().parked_records() == 4);
    d.advance(2ms);
    REQUIRE(d.out.size() == 5);
    CHECK(d.count("begin_txn") == 2);
    CHECK(d.out[1].headers.at("outbox-relay.commit-lsn") == "0/2000");
    CHECK(d.out[3].headers.at("outbox-relay.commit-lsn") == "0/3000");
    CHECK(d.out[4].headers.at("outbox-relay.commit-lsn") == "0/4000");
    // Later records go straight into the open transaction.
    d.txn(0x5000, 1);
    CHECK(d.out.size() == 6);
}

TEST_CASE("a_record_long_after_a_commit_opens_a_transaction_at_once") {
    driver d(delivery_mode::exactly_once, "", true);
    d.first_txn_in_kafka_txn();
    d.idle();
    REQUIRE(d.count("commit_txn") == 1);
    d.ack_all();
    d.txn_done(txn_op::commit);
    d.advance(50ms);
    d.txn(0x2000, 1);
    CHECK(d.count("begin_txn") == 2);
    CHECK(d.out.size() == 2);
}

TEST_CASE("without_a_begin_delay_waiting_records_go_out_when_the_commit_returns") {
    driver d(delivery_mode::exactly_once, "", true);
    d.cfg.kafka_txn_begin_delay = 0ms;
    d.first_txn_in_kafka_txn();
    d.idle();
    d.txn(0x2000, 2);
    d.ack(0);
    d.txn_done(txn_op::commit);
    CHECK(d.out.size() == 3);
    CHECK(d.count("begin_txn") == 2);
}

TEST_CASE("under_load_a_transaction_commits_after_kafka_txn_max_ms") {
    driver d(delivery_mode::exactly_once, "", true);
    d.cfg.kafka_txn_max = 100ms;
    d.first_txn_in_kafka_txn();
    CHECK(d.session().next_deadline() - d.t <= std::chrono::steady_clock::duration(100ms));
    // Under load frames keep coming, so the stream never stays quiet.
    for (std::uint64_t i = 1; i <= 9; ++i) {
        d.txn(0x1000 + i * 0x100, 1);
        d.advance(10ms);
    }
    d.advance(9ms);
    CHECK(d.count("commit_txn") == 0);
    d.advance(1ms);
    CHECK(d.count("commit_txn") == 1);
}

TEST_CASE("fenced_by_a_standby_exits_27") {
    driver d(delivery_mode::exactly_once, "", true);
    d.first_txn_in_kafka_txn();
    d.ack_all();
    d.idle();
    d.txn_done(txn_op::commit, txn_outcome::kind::fatal, true, "commit_transaction: PRODUCER_FENCED");
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::fenced);
    CHECK(d.stopped->reason.find("fenced") != std::string::npos);
    CHECK(d.last_flush() == lsn{0x100});  // its uncommitted records are never confirmed
}

TEST_CASE("fenced_producer_error_exits_27") {
    driver d(delivery_mode::exactly_once, "", true);
    d.streaming();
    d.fatal(producer_fault::fenced, "__FENCED: producer fenced");
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::fenced);
}

TEST_CASE("an_abortable_commit_resends_from_the_confirmed_position") {
    driver d(delivery_mode::exactly_once, "", true);
    d.first_txn_in_kafka_txn();
    d.ack_all();
    d.idle();
    d.txn_done(txn_op::commit, txn_outcome::kind::abortable, false, "commit_transaction: abortable");
    CHECK(d.closes == 1);
    d.advance(200ms);
    CHECK(d.recreates == 1);
    REQUIRE(d.starts.size() == 2);
    CHECK(d.starts[1] == lsn{0x100});
    d.started();
    CHECK(d.count("init_txn") == 2);  // the new producer fences (aborts) the old transaction
}

TEST_CASE("a_refused_record_in_a_transaction_is_a_dead_letter_after_the_abort") {
    driver d(delivery_mode::exactly_once, "outbox.dlq", true);
    d.streaming();
    d.txn_done(txn_op::init);
    d.txn(0x1000, 2);
    d.scan_ok(d.scans[0]);
    REQUIRE(d.out.size() == 2);
    std::vector<header> hs;
    for (const auto& [k, v] : d.out[1].headers) hs.push_back({k, v});
    delivery dv;
    dv.status = delivery_status::permanent;
    dv.why = refusal::topic_authorization;
    dv.error = "Broker: Topic authorization failed";
    dv.topic = d.out[1].topic;
    dv.rec.topic = d.out[1].topic;
    dv.rec.headers = hs;
    d.session().on_delivery(d.out[1].tag, dv, d.now());
    d.drain();
    CHECK(d.closes == 1);  // the transaction is doomed: start over
    d.advance(200ms);
    d.started();
    d.relation();
    d.txn_done(txn_op::init);
    d.txn(0x1000, 2);  // the replay
    // the first row's topic and the dead-letter topic are scanned
    for (const auto& sc : std::vector<cmd::scan_topic>(d.scans.begin() + 1, d.scans.end())) d.scan_ok(sc);
    REQUIRE(d.out.size() == 4);
    CHECK(d.out[2].topic == d.out[0].topic);
    CHECK(d.out[3].topic == "outbox.dlq");
    CHECK(d.out[3].headers.at("outbox-relay.dlq.reason") == "topic_authorization");
    CHECK(d.out[3].headers.at("outbox-relay.seq") == "1");
}

TEST_CASE("shutdown_commits_the_open_transaction_then_confirms") {
    driver d(delivery_mode::exactly_once, "", true);
    d.first_txn_in_kafka_txn();
    d.ack_all();
    d.shutdown();
    REQUIRE(d.count("commit_txn") == 1);
    CHECK(d.stop_streams == 0);
    d.txn_done(txn_op::commit);
    REQUIRE(d.stop_streams == 1);
    CHECK(d.last_flush() == lsn{0x1028});
}

TEST_CASE("stream_lost_with_a_transaction_open_restarts_the_producer_without_counting_a_fault") {
    driver d(delivery_mode::exactly_once, "", true);
    d.cfg.producer_restart_limit = 1;
    d.streaming();
    d.txn_done(txn_op::init);
    for (int round = 0; round < 3; ++round) {
        d.txn(0x1000, 1);
        if (round == 0) d.scan_ok(d.scans[0]);
        else d.scan_ok(d.scans.back());
        d.closed(stream_end::connection_lost);
        CHECK_FALSE(d.stopped);
        d.advance(std::chrono::duration_cast<milliseconds>(d.session().next_deadline() - d.t));
        d.started();
        d.relation();
        d.txn_done(txn_op::init);
    }
    CHECK(d.recreates == 3);
    CHECK_FALSE(d.stopped);
}

// ---------------------------------------------------------------- routing

TEST_CASE("record_timestamp_is_the_commit_time") {
    driver d;
    d.streaming();
    d.begin(0x1000, /*commit_ts: µs since 2000-01-01*/ 800'000'000'123'456);
    d.row(0x1001, "e-1");
    d.commit(0x1000, 0x1028);
    REQUIRE(d.out.size() == 1);
    CHECK(d.out[0].timestamp_ms == (800'000'000'123'456 + 946'684'800'000'000) / 1000);
}

TEST_CASE("transactional_outbox_message_keeps_its_place_in_the_transaction") {
    driver d;
    d.streaming();
    d.begin(0x1000, 5'000'000);
    d.row(0x1001, "e-1", "order", "k1");
    d.xlog(0x1002, test::enc_message(std::nullopt, 1, 0x1003, "outbox",
                                     R"({"id": "m-1", "aggregatetype": "order", "aggregateid": "k1", "type": "Shipped",
                                         "payload": {"n": 2}, "headers": {"tenant": "acme"}})"));
    d.row(0x1004, "e-2", "order", "k1");
    d.commit(0x1000, 0x1028);
    REQUIRE(d.out.size() == 3);
    CHECK(d.out[0].headers.at("id") == "e-1");
    CHECK(d.out[1].headers.at("id") == "m-1");
    CHECK(d.out[2].headers.at("id") == "e-2");
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(d.out[i].headers.at("outbox-relay.commit-lsn") == "0/1000");
        CHECK(d.out[i].headers.at("outbox-relay.seq") == std::to_string(i));
    }
    const auto& m = d.out[1];
    CHECK(m.topic == "outbox.event.order");
    CHECK(m.key == "k1");
    CHECK(m.value == R"({"n":2})");
    CHECK(m.headers.at("type") == "Shipped");
    CHECK(m.headers.at("tenant") == "acme");
    CHECK(m.timestamp_ms == d.out[0].timestamp_ms);  // the transaction's commit time
    CHECK(d.session().metrics().outbox_messages.value() == 1);
    d.ack_all();
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});
}

TEST_CASE("non_transactional_outbox_message_is_a_transaction_of_its_own") {
    driver d;
    d.streaming();
    d.xlog(0x2000, test::enc_message(std::nullopt, 0, 0x2000, "outbox",
                                     R"({"id": "m-1", "aggregatetype": "audit", "aggregateid": "u-1", "type": "Login",
                                         "payload": "x"})"));
    REQUIRE(d.out.size() == 1);
    CHECK(d.out[0].topic == "outbox.event.audit");
    // Just inside its own WAL record: no commit record can have that position.
    CHECK(d.out[0].headers.at("outbox-relay.commit-lsn") == "0/1FFF");
    CHECK(d.out[0].headers.at("outbox-relay.seq") == "0");
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x100});  // not before its ack
    d.ack(0);
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x2000});  // its lsn: the server never sends it again
    // Inside an open transaction it would mean the server and we disagree.
    d.begin(0x3000);
    d.xlog(0x3001, test::enc_message(std::nullopt, 0, 0x3001, "outbox", "{}"));
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::protocol);
}

TEST_CASE("messages_with_other_prefixes_are_counted_not_sent") {
    driver d;
    d.streaming();
    d.begin(0x1000);
    d.xlog(0x1001, test::enc_message(std::nullopt, 1, 0x1001, "audit", R"({"id": "x"})"));
    d.commit(0x1000, 0x1028);
    CHECK(d.out.empty());
    CHECK(d.session().metrics().ignored_message.value() == 1);
    CHECK(d.session().metrics().outbox_messages.value() == 0);
    // An empty prefix turns outbox messages off entirely.
    driver off;
    off.cfg.message_prefix.clear();
    off.streaming();
    off.begin(0x1000);
    off.xlog(0x1001, test::enc_message(std::nullopt, 1, 0x1001, "outbox", R"({"id": "x"})"));
    off.commit(0x1000, 0x1028);
    CHECK(off.out.empty());
    CHECK(off.session().metrics().ignored_message.value() == 1);
}

TEST_CASE("malformed_outbox_message_is_a_dead_letter") {
    driver d(delivery_mode::at_least_once, "outbox.dlq");
    d.streaming();
    d.begin(0x1000);
    d.xlog(0x1001, test::enc_message(std::nullopt, 1, 0x1001, "outbox", "{not json"));
    d.xlog(0x1002, test::enc_message(std::nullopt, 1, 0x1002, "outbox",
                                     R"({"id": "m-2", "aggregatetype": "order", "type": "T", "payload": {}})"));
    d.commit(0x1000, 0x1028);
    REQUIRE(d.out.size() == 2);
    CHECK(d.out[0].topic == "outbox.dlq");
    CHECK(d.out[0].value == "{not json");  // the bytes, kept
    CHECK(d.out[0].headers.at("outbox-relay.dlq.reason") == "bad_message");
    CHECK(d.out[0].headers.at("outbox-relay.dlq.detail").find("not valid JSON") != std::string::npos);
    CHECK(d.out[0].headers.at("outbox-relay.dlq.table") == "message:outbox");
    CHECK(d.out[1].headers.at("outbox-relay.dlq.reason") == "bad_message");
    CHECK(d.out[1].headers.at("outbox-relay.dlq.detail").find("no field \"aggregateid\"") != std::string::npos);
    CHECK(d.out[1].headers.at("id") == "m-2");
    CHECK(d.session().metrics().dead_letter("bad_message").value() == 2);
    d.ack_all();
    d.advance(100ms);
    CHECK(d.last_flush() == lsn{0x1028});
}

TEST_CASE("malformed_outbox_message_without_a_dead_letter_topic_stops") {
    driver d;
    d.streaming();
    d.xlog(0x2000, test::enc_message(std::nullopt, 0, 0x2000, "outbox", "[1]"));
    d.stream_stopped();
    REQUIRE(d.stopped);
    CHECK(d.stopped->code == exit_code::outbox_schema);
    CHECK(d.stopped->reason.find("bad_message") != std::string::npos);
    CHECK(d.stopped->reason.find("not a JSON object") != std::string::npos);
    CHECK(d.last_flush() == lsn{0x100});  // never past the refused message
}

TEST_CASE("two_tables_each_with_its_route_in_one_transaction") {
    driver d(delivery_mode::at_least_once, "outbox.dlq");
    routing_config a;  // public.outbox, the defaults
    routing_config b;
    b.table = "other";
    b.topic_template = "billing";
    b.columns.key = "aggregatetype";
    b.placements.clear();
    d.cfg.tables = {a, b};
    d.streaming();
    d.relation(other_relid);  // public.other, same columns
    d.begin(0x1000);
    d.row(0x1001, "e-1", "order", "k1");
    d.xlog(0x1002, test::enc_insert(std::nullopt, other_relid,
                                    {{'t', "b-1"}, {'t', "acct-7"}, {'t', "k1"}, {'t', "Billed"}, {'t', "{}"}}));
    d.row(0x1003, "e-2", "order", "k1");
    d.commit(0x1000, 0x1028);
    REQUIRE(d.out.size() == 3);
    CHECK(d.out[0].topic == "outbox.event.order");
    CHECK(d.out[0].headers.count("type") == 1);
    CHECK(d.out[1].topic == "billing");
    CHECK(d.out[1].key == "acct-7");
    CHECK(d.out[1].headers.count("type") == 0);
    CHECK(d.out[1].headers.at("outbox-relay.seq") == "1");  // one order across the tables
    CHECK(d.out[2].headers.at("outbox-relay.seq") == "2");
    // A refusal by Kafka names the table the record came from.
    record failed;
    failed.topic = d.out[1].topic;
    failed.key = d.out[1].key;
    failed.value = d.out[1].value;
    std::vector<header> hs;
    for (const auto& [k, v] : d.out[1].headers) hs.push_back({k, v});
    failed.headers = hs;
    delivery dv;
    dv.status = delivery_status::permanent;
    dv.why = refusal::other;
    dv.error = "Broker: Policy violation";
    dv.topic = d.out[1].topic;
    dv.rec = failed;
    d.session().on_delivery(d.out[1].tag, dv, d.now());
    d.drain();
    REQUIRE(d.out.size() == 4);
    CHECK(d.out[3].topic == "outbox.dlq");
    CHECK(d.out[3].headers.at("outbox-relay.dlq.table") == "public.other");
}

TEST_CASE("gap_probe_covers_every_route") {
    driver d(delivery_mode::exactly_once);
    routing_config a, b;
    b.table = "other";
    b.topic_template = "billing.{aggregatetype}.events";
    d.cfg.tables = {a, b};
    d.cfg.message_prefix = "outbox";  // the messages' route is a's: one pair for both
    d.session().set_slot_created(true);
    d.start();
    d.started();
    REQUIRE(d.probes.size() == 1);
    CHECK(d.probes[0].affixes == std::vector<std::pair<std::string, std::string>>{{"billing.", ".events"},
                                                                                  {"outbox.event.", ""}});
}

}  // TEST_SUITE

// ---- issue 11: readiness that tells the truth, lag, slot figures

TEST_SUITE("relay_session_ops") {

kafka_stats stats(int up, int known = 1) {
    kafka_stats s;
    s.brokers_up = up;
    s.brokers_known = known;
    return s;
}

TEST_CASE("ready_needs_streaming_and_a_broker_connection") {
    driver d;
    d.start();
    auto [r0, why0] = d.session().readiness_at(d.t);
    CHECK_FALSE(r0);
    CHECK(why0 == "connecting to Postgres");
    d.started();
    auto [r1, why1] = d.session().readiness_at(d.t);
    CHECK_FALSE(r1);  // no statistics and no ack yet: the broker is unknown
    CHECK(why1.find("Kafka broker") != std::string::npos);
    d.session().on_kafka_stats(stats(1), d.now());
    CHECK(d.session().readiness_at(d.t).first);
    d.session().on_kafka_brokers_down("1/1 brokers are down", d.now());
    auto [r2, why2] = d.session().readiness_at(d.t);
    CHECK_FALSE(r2);
    CHECK(why2 == "no Kafka broker connection: 1/1 brokers are down");
    CHECK(d.session().metrics().kafka_brokers_up.value() == 0);
    d.session().on_kafka_stats(stats(0, 2), d.now());
    CHECK(d.session().readiness_at(d.t).second == "no Kafka broker connection (2 brokers known, none up)");
    // An ack proves a connection before the next statistics do.
    d.relation();
    d.txn(0x1000, 1);
    REQUIRE(d.out.size() == 1);
    d.ack_all();
    CHECK(d.session().readiness_at(d.t).first);
}

TEST_CASE("not_ready_while_the_slot_is_held_by_another_process") {
    driver d;
    d.start();
    d.session().on_kafka_stats(stats(1), d.now());
    d.closed(stream_end::slot_busy, "replication slot \"outbox_relay\" is active for PID 42");
    auto [r, why] = d.session().readiness_at(d.t);
    CHECK_FALSE(r);
    CHECK(why == "replication slot outbox_relay is held by another process");
}

TEST_CASE("stalled_records_make_it_not_ready_after_ready_stall") {
    driver d;
    d.cfg.ready_stall = 30s;
    d.streaming();
    d.session().on_kafka_stats(stats(1), d.now());
    CHECK(d.session().readiness_at(d.t + 3600s).first);  // being idle is not a stall
    d.txn(0x1000, 3);
    REQUIRE(d.out.size() == 3);
    CHECK(d.session().readiness_at(d.t + 29s).first);
    auto [r, why] = d.session().readiness_at(d.t + 31s);
    CHECK_FALSE(r);
    CHECK(why.find("stalled: 3 records pending") != std::string::npos);
    d.advance(20s);
    d.ack(0);  // progress restarts the clock
    d.acked_ = 1;
    CHECK(d.session().readiness_at(d.t + 29s).first);
    CHECK_FALSE(d.session().readiness_at(d.t + 31s).first);
    d.ack_all();
    CHECK(d.session().readiness_at(d.t + 3600s).first);
}

TEST_CASE("lag_bytes_and_seconds_follow_received_confirmed_and_the_oldest_commit") {
    driver d;
    d.streaming();
    d.session().refresh_gauges(d.now());
    CHECK(d.session().metrics().lag_seconds.value() == 0);
    // Commit time 10 s before the session's wall clock (Postgres epoch).
    constexpr std::int64_t pg_epoch_unix_us = 946'684'800'000'000;
    const std::int64_t ts = d.wall - pg_epoch_unix_us - 10'000'000;
    d.begin(0x1000, ts);
    d.row(0x1001, "e-1");
    d.commit(0x1000, 0x1028);
    d.keepalive(0x5000);
    d.session().refresh_gauges(d.now());
    CHECK(d.session().metrics().lag_bytes.value() == 0x5000 - 0x100);
    CHECK(d.session().metrics().lag_seconds.value() == doctest::Approx(10.0));
    d.ack_all();
    d.keepalive(0x5000);  // idle: the keepalive's end is confirmable
    d.session().refresh_gauges(d.now());
    CHECK(d.session().metrics().lag_bytes.value() == 0);
    CHECK(d.session().metrics().lag_seconds.value() == 0);
}

TEST_CASE("per_topic_series_are_capped") {
    relay_metrics m;
    for (std::size_t i = 0; i < relay_metrics::topic_series_cap + 20; ++i) {
        auto s = m.topic("t" + std::to_string(i));
        s.records->inc();
        s.bytes->inc(10);
    }
    m.topic("t0").records->inc();
    const std::string text = m.registry.render();
    std::size_t series = 0;
    for (std::size_t p = text.find("\noutbox_relay_topic_records_total{"); p != std::string::npos;
         p = text.find("\noutbox_relay_topic_records_total{", p + 1))
        ++series;
    CHECK(series == relay_metrics::topic_series_cap + 1);
    CHECK(text.find("outbox_relay_topic_records_total{topic=\"_other\"} 20\n") != std::string::npos);
    CHECK(text.find("outbox_relay_topic_records_total{topic=\"t0\"} 2\n") != std::string::npos);
    CHECK(text.find("outbox_relay_topic_bytes_total{topic=\"_other\"} 200\n") != std::string::npos);
    const auto bi = text.find("\noutbox_relay_build_info{version=");
    REQUIRE(bi != std::string::npos);
    const auto eol = text.find('\n', bi + 1);
    CHECK(text.substr(eol - 2, 2) == " 1");  // always 1: the labels carry the information
}

TEST_CASE("slot_status_and_kafka_stats_fill_their_gauges") {
    driver d;
    d.streaming();
    slot_status st;
    st.ok = true;
    st.retained_wal = 4096;
    st.wal_status = "extended";
    st.active_pid = 77;
    d.session().on_slot_status(st, d.now());
    auto& m = d.session().metrics();
    CHECK(m.slot_retained_wal.value() == 4096);
    CHECK(m.slot_safe_wal_size.value() == -1);
    CHECK(m.slot_active_pid.value() == 77);
    CHECK(m.slot_status_up.value() == 1);
    const std::string text = m.registry.render();
    CHECK(text.find("outbox_relay_slot_wal_status{status=\"extended\"} 1\n") != std::string::npos);
    CHECK(text.find("outbox_relay_slot_wal_status{status=\"reserved\"} 0\n") != std::string::npos);
    slot_status failed;
    failed.error = "cannot connect";
    d.session().on_slot_status(failed, d.now());
    CHECK(m.slot_status_up.value() == 0);
    CHECK(m.slot_retained_wal.value() == 4096);  // last known figure stays

    kafka_stats k = stats(1);
    k.txretries = 5;
    k.msg_cnt = 9;
    d.session().on_kafka_stats(k, d.now());
    k.txretries = 7;
    d.session().on_kafka_stats(k, d.now());
    CHECK(m.kafka_retries.value() == 7);
    CHECK(m.kafka_queue_messages.value() == 9);
    CHECK(m.kafka_stats_received.value() == 2);
}

}  // TEST_SUITE
