#pragma once
// The relay's rules as one pure state machine ("sans-I/O"): events in,
// commands out. It owns the pgoutput decoder, the relation cache, the outbox
// mapper, the checkpoint tracker, seq numbering, the exactly-once dedupe
// filter, parked records, backpressure, status-update timing, reconnect and
// producer-restart sequencing, and the shutdown drain. It never blocks,
// throws (beyond std::bad_alloc) or logs; time comes in with every event.
// docs/ARCHITECTURE.md has the phase diagram.
//
// The shell (io/relay.cpp) feeds events and, after every event, executes the
// commands the session queued, in order, before feeding the next event:
//
//   events in                                   commands out
//   start()                                     start_stream(from)
//   on_stream_started(slot_confirmed, source)   close_stream / stop_stream
//   on_copy_data(frame)                         send_status(write, flush, reply)
//   on_stream_closed(kind, message)             pause_reading / resume_reading
//   on_stream_stopped()                         produce(record, tag)
//   on_delivery(tag, outcome)                   scan_topic(id, topic, from)   (off the loop)
//   on_producer_fatal(fault, reason)            recreate_producer
//   on_scan_done(id, outcome)                   note(level, text)             (for the log)
//   on_tick(now) / on_shutdown()                stop(exit code, reason)
//
// Views in commands (a produce's record, a note's text) are valid until the
// next event is fed. One thread at a time.
#include "outbox_relay/checkpoint.hpp"
#include "outbox_relay/config.hpp"
#include "outbox_relay/dedupe.hpp"
#include "outbox_relay/exit_code.hpp"
#include "outbox_relay/kafka_stats.hpp"
#include "outbox_relay/lsn.hpp"
#include "outbox_relay/metrics.hpp"
#include "outbox_relay/outbox.hpp"
#include "outbox_relay/outbox_message.hpp"
#include "outbox_relay/pgoutput.hpp"
#include "outbox_relay/record.hpp"
#include "outbox_relay/relation_cache.hpp"
#include "outbox_relay/walsender.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

namespace outbox {

using steady_time = std::chrono::steady_clock::time_point;

// The time of an event: the monotonic clock for every timer, the wall clock
// (µs since the Unix epoch) for status updates and commit latency.
struct event_time {
    steady_time mono;
    std::int64_t wall_us = 0;
};

// Identifies a produced record: the shell passes it to the sink as the
// message opaque and hands it back with the delivery outcome. It encodes the
// producer generation, so reports from a producer that was replaced are
// recognised and ignored.
using record_tag = std::uint64_t;

enum class delivery_status {
    ok,         // persisted (acks=all)
    transient,  // failed, but the same record may succeed again (purge, queue full): restart from confirmed
    permanent,  // Kafka refuses this record for good (too large, not authorised, invalid topic)
};

// Why Kafka refused a record for good (delivery_status::permanent).
enum class refusal {
    too_large,            // MSG_SIZE_TOO_LARGE / RECORD_LIST_TOO_LARGE
    topic_authorization,  // TOPIC_AUTHORIZATION_FAILED
    unknown_topic,        // the topic does not exist and is not created
    invalid_topic,        // the brokers refuse the name
    unknown_partition,    // a partition placement named a partition the topic lacks
    other,                // policy violation, invalid record or timestamp, ...
};

struct delivery {
    delivery_status status = delivery_status::ok;
    std::size_t bytes = 0;       // record::bytes() of the record, as produced
    std::string_view error;      // librdkafka's text on failure
    std::string_view topic;
    std::string_view event_id;   // failures: the record's id header
    refusal why = refusal::other;  // permanent failures
    bool local = false;          // refused by librdkafka itself at produce time (never sent)
    record rec;                  // failures: the record as produced (valid during the event)
};

enum class producer_fault {
    healable,   // a new producer may succeed (sequence desynchronisation, ...): exit 25 only if it keeps failing
    permanent,  // no new producer can succeed (authorisation, unsupported feature): exit 25
    config,     // librdkafka refused to create a new producer with the configuration: exit 20
    fenced,     // another relay initialised the same transactional.id (it took over): exit 27
};

enum class stream_end {
    connection_lost,  // socket closed, server restarted, network: reconnect with backoff
    slot_busy,        // the slot is active for another process (a standby): retry every second
    fatal,            // slot missing or invalidated, permissions, protocol: stop
};

struct scan_outcome {
    enum class kind { ok, transient, permanent } status = kind::ok;
    position_set present;        // ok: positions >= from of this source and timeline found in the topic
    bool own_records_seen = false;  // ok: the topic holds records of this origin (any timeline)
    lsn newest_own;              // ok: the highest commit LSN among them
    std::string message;         // failures: why
};

// The replication slot as pg_replication_slots shows it, read every
// slot-status-interval-ms over a normal connection off the loop.
struct slot_status {
    bool ok = false;                          // the read succeeded and the slot exists
    std::string error;                        // !ok: why (cannot connect, slot missing, ...)
    std::optional<std::int64_t> retained_wal; // pg_current_wal_lsn() - restart_lsn, bytes
    std::string wal_status;                   // reserved | extended | unreserved | lost
    std::optional<std::int64_t> safe_wal_size;  // bytes; nullopt: max_slot_wal_keep_size = -1 (no limit)
    std::optional<int> active_pid;            // the walsender holding it
};

enum class session_phase {
    idle,              // start() not called yet
    connecting,        // start_stream issued; waiting for on_stream_started or on_stream_closed
    streaming,         // the stream is live
    reconnect_wait,    // stream lost: waiting for the backoff, then for in-flight records to drain
    producer_restart,  // producer failed: stream closed, waiting for the backoff, then a new producer
    finishing_txn,     // shutdown asked mid-transaction: streaming on until its Commit or the drain deadline
    draining,          // shutdown: reading stopped, waiting for acks (bounded), then the final status
    stopping,          // stop_stream issued; waiting for on_stream_stopped
    stopped,           // stop issued; nothing happens any more
};
std::string_view phase_name(session_phase p) noexcept;

namespace cmd {
struct start_stream { lsn from; };        // connect, START_REPLICATION from `from` (0/0: the slot's position)
struct close_stream {};                   // drop the connection now; no further events of it
struct stop_stream {};                    // graceful end (CopyDone); the shell then calls on_stream_stopped
struct send_status { lsn write; lsn flush; bool reply_requested = false; };
struct pause_reading {};
struct resume_reading {};
struct produce { record rec; record_tag tag; };
struct scan_topic { std::uint64_t id; std::string topic; lsn from; source_id source; };
// The slot was created at this start: look through the newest records of
// every topic named prefix...suffix (for any of the routes' pairs) for
// records of this origin (a gap).
struct probe_gap { std::vector<std::pair<std::string, std::string>> affixes; source_id source; };
// Kafka transactions (exactly-once with kafka-transactions): the shell runs
// init and commit off the loop and reports on_txn_done; begin is immediate.
struct init_txn {};
struct begin_txn {};
struct commit_txn {};
struct recreate_producer {                // destroy the producer (purging what it holds) and make a new one
    std::size_t batch_size = 0;           // 0: as configured; else batch.size for the new producer
};
struct note { enum class level { info, warn, error } lvl; std::string text; };  // key=value text for the log
struct stop {
    exit_code code;
    std::string reason;
    // Drop the replication slot before exiting: a slot this start created
    // across a gap must not stay, or the next start would not see the gap.
    bool drop_slot = false;
};
}  // namespace cmd

using command = std::variant<cmd::start_stream, cmd::close_stream, cmd::stop_stream, cmd::send_status,
                             cmd::pause_reading, cmd::resume_reading, cmd::produce, cmd::scan_topic, cmd::probe_gap,
                             cmd::init_txn, cmd::begin_txn, cmd::commit_txn, cmd::recreate_producer, cmd::note,
                             cmd::stop>;

enum class txn_op { init, begin, commit };

struct txn_outcome {
    enum class kind { ok, retriable, abortable, fatal } status = kind::ok;
    bool fenced = false;   // another producer with the same transactional.id took over
    std::string message;
};

class relay_session {
public:
    // `cfg` is copied. One mapper per outbox table (table_routes(cfg)) and
    // one for the outbox messages when cfg.message_prefix is set, all
    // validated by build_config (an invalid route aborts).
    explicit relay_session(const relay_config& cfg);
    relay_session(const relay_session&) = delete;
    relay_session& operator=(const relay_session&) = delete;

    // ---- events
    void start(event_time now);
    // `source` names this cluster, timeline and database (IDENTIFY_SYSTEM)
    // and the slot; it goes into every record's source header.
    void on_stream_started(lsn slot_confirmed, const source_id& source, event_time now);

    // Set before start(): pg_setup created the slot at this start (first
    // start, or the slot had vanished). Records of this origin already in
    // Kafka then mean a gap may lie between them and the slot's start.
    void set_slot_created(bool created) noexcept { slot_created_ = created; }
    void on_copy_data(std::string_view frame, event_time now);
    void on_stream_closed(stream_end kind, std::string_view message, event_time now);
    void on_stream_stopped(event_time now);
    void on_delivery(record_tag tag, const delivery& d, event_time now);
    void on_producer_fatal(producer_fault fault, std::string_view reason, event_time now);
    void on_scan_done(std::uint64_t scan_id, scan_outcome outcome, event_time now);
    // The stream has handed over every frame it had (its socket has no more
    // for now): the moment to commit a Kafka transaction at low rates.
    void on_stream_idle(event_time now);
    // The gap probe's answer: records of this origin found (newest LSN, where),
    // or not; `failed` with a message when it could not look.
    void on_gap_probe(bool failed, bool found, lsn newest, std::string_view topic, std::string_view message,
                      event_time now);
    void on_txn_done(txn_op op, const txn_outcome& outcome, event_time now);
    void on_tick(event_time now);
    void on_shutdown(event_time now);

    // ---- operability (metrics and readiness only; no rule depends on them)
    // A librdkafka statistics report of the current producer.
    void on_kafka_stats(const kafka_stats& s, event_time now);
    // librdkafka says every broker is down (__ALL_BROKERS_DOWN); `reason` is its text.
    void on_kafka_brokers_down(std::string_view reason, event_time now);
    // The slot's figures (slot_status above).
    void on_slot_status(const slot_status& s, event_time now);
    // Brings the time-dependent gauges (lag in bytes and seconds) up to `now`;
    // the shell calls it before rendering /metrics.
    void refresh_gauges(event_time now);

    // ---- commands: what the last events asked for, oldest first. The shell
    // executes them and clears the vector.
    std::vector<command>& commands() noexcept { return cmds_; }

    // ---- state, for the shell's timer, /readyz and tests
    // The earliest time at which on_tick has something to do (max() if none).
    steady_time next_deadline() const noexcept;
    session_phase phase() const noexcept { return phase_; }
    // {true, "streaming"} or {false, why not}.
    std::pair<bool, std::string_view> readiness() const noexcept;
    // What /readyz answers at `now`: ready only while streaming, with a usable
    // Kafka broker connection (the last statistics showed a broker UP, or an
    // ack came since librdkafka said all brokers were down), and not stalled
    // (records pending with no ack or commit for ready-stall-ms). Otherwise
    // the reason.
    std::pair<bool, std::string> readiness_at(steady_time now) const;
    lsn confirmed() const noexcept { return tracker_.confirmed(); }
    lsn received() const noexcept { return received_; }
    lsn stream_start() const noexcept { return scan_from_; }
    std::size_t in_flight_records() const noexcept { return in_flight_records_; }
    std::size_t in_flight_bytes() const noexcept { return in_flight_bytes_; }
    std::size_t parked_records() const noexcept { return parked_records_ + txn_wait_.size(); }
    std::size_t pending_txns() const noexcept { return tracker_.pending_txns(); }
    bool reading_paused() const noexcept { return paused_; }
    bool transactional() const noexcept { return txn_ != txn_state::off; }
    relay_metrics& metrics() noexcept { return metrics_; }
    const relay_metrics& metrics() const noexcept { return metrics_; }

private:
    struct parked_record {
        owned_record rec;
        record_position pos;
        checkpoint_tracker::txn_id txn;
        std::size_t bytes;
    };
    struct topic_state {
        // dead: the topic cannot be written or read for good; its records
        // become dead letters (only with a dead-letter topic).
        enum class st { scanning, retry_wait, ready, dead } state = st::scanning;
        std::string dead_reason;
        std::string dead_detail;
        std::uint64_t scan_id = 0;
        position_set present;
        lsn max_present;             // highest commit LSN in `present`
        std::deque<parked_record> parked;
        steady_time retry_at{};
        unsigned failures = 0;
    };

    // frames and messages
    void handle(const walsender::xlog_data& x, event_time now);
    void handle(const walsender::keepalive& k, event_time now);
    void on_message(const pgoutput::begin& m, const walsender::xlog_data& x);
    void on_message(const pgoutput::commit& m, const walsender::xlog_data& x);
    void on_message(const pgoutput::relation& m, const walsender::xlog_data& x);
    void on_message(const pgoutput::insert& m, const walsender::xlog_data& x);
    void on_message(const pgoutput::update& m, const walsender::xlog_data& x);
    void on_message(const pgoutput::delete_& m, const walsender::xlog_data& x);
    void on_message(const pgoutput::truncate& m, const walsender::xlog_data& x);
    void on_message(const pgoutput::message& m, const walsender::xlog_data& x);
    void on_message(const pgoutput::origin& m, const walsender::xlog_data& x);
    void on_message(const pgoutput::type& m, const walsender::xlog_data& x);
    template <class M>
    void on_message(const M& m, const walsender::xlog_data& x);

    // records
    void map_row(const outbox_mapper& m, const cached_relation& rel, const pgoutput::tuple_data& row,
                 std::span<const header> extra, std::string_view what, const walsender::xlog_data& x);
    void route(const record& mapped, record_position pos, const outbox_mapper& m);
    void send(const record& rec, record_position pos, std::optional<checkpoint_tracker::txn_id> existing);
    // `table`: where the record came from; empty = the routes that sent
    // records to `intended_topic`.
    void dead_letter(const record& orig, record_position pos, std::string_view reason, std::string detail,
                     std::string_view intended_topic, std::optional<checkpoint_tracker::txn_id> existing,
                     bool without_value = false, std::string_view table = {});
    void refuse_row(const outbox_mapper& m, const error& e, const cached_relation& rel, const pgoutput::tuple_data& row,
                    const row_context& ctx, std::string_view what, const walsender::xlog_data& x);
    void relay_message(const pgoutput::message& msg, const walsender::xlog_data& x);
    void shrink_batches(std::size_t record_bytes, event_time now);
    void to_producer(const record& rec, record_position pos, checkpoint_tracker::txn_id txn, std::size_t bytes);
    void open_txn();
    void try_commit(event_time now);
    void release_txn_wait();
    void begin_scans();
    void maybe_probe_gap();
    void slot_gap_found(std::string_view topic, lsn newest, event_time now);
    void release_parked(topic_state& t);
    void produce_now(const record& rec, record_position pos, checkpoint_tracker::txn_id txn, std::size_t bytes);
    void park(topic_state& t, const record& rec, record_position pos, checkpoint_tracker::txn_id txn,
              std::size_t bytes);
    void request_scan(const std::string& topic, topic_state& t);
    void drop_stream_state();

    // flow control and checkpoint
    void update_backpressure();
    void apply_reading();
    void confirmed_moved(event_time now);
    void send_status(event_time now, bool reply_requested);
    void maybe_send_status(event_time now);

    // lifecycle
    void connect(event_time now);
    void lose_stream(event_time now, std::chrono::milliseconds delay);
    void restart_producer(std::string_view why, event_time now, bool fault = true);
    void begin_drain(event_time now);
    void maybe_finish_drain(event_time now);
    void finish(event_time now);
    void fail(exit_code code, std::string reason, event_time now);
    void maybe_reconnect(event_time now);
    void note(cmd::note::level lvl, std::string text);
    bool stream_open() const noexcept;
    std::chrono::milliseconds next_backoff(std::chrono::milliseconds floor) noexcept;

    relay_config cfg_;
    relay_metrics metrics_;
    std::vector<outbox_mapper> mappers_;       // one per outbox table
    std::optional<outbox_mapper> message_mapper_;  // the outbox messages' route, when relayed
    // relid -> index into mappers_, or -1: not an outbox table (set by Relation messages).
    std::unordered_map<std::uint32_t, int> route_of_;
    // topic -> the routes whose records went there, for a dead letter's table header.
    std::unordered_map<std::string, std::string> topic_tables_;
    std::string last_label_topic_;
    const outbox_mapper* last_label_mapper_ = nullptr;
    outbox_message message_;
    pgoutput::decoder decoder_;
    relation_cache relations_;
    checkpoint_tracker tracker_;
    std::vector<command> cmds_;

    enum class stream_state { none, connecting, live };

    event_time now_{};                // time of the event being handled
    session_phase phase_ = session_phase::idle;
    stream_state stream_ = stream_state::none;
    exit_code exit_ = exit_code::ok;
    std::string exit_reason_;
    bool drop_slot_on_exit_ = false;
    std::string not_ready_;           // why /readyz says no, while not streaming

    // stream
    std::uint64_t stream_epoch_ = 0;  // bumped at every start_stream
    lsn requested_from_;
    lsn scan_from_;                   // S: where the current stream replays from
    lsn received_;
    lsn last_sent_flush_;
    bool paused_ = false;             // reading paused (backpressure or drain), as last commanded
    bool backpressure_ = false;
    bool shutdown_requested_ = false;
    bool slot_busy_noted_ = false;
    bool slot_created_ = false;
    bool slot_gap_checked_ = false;
    bool gap_probe_sent_ = false;
    steady_time gap_probe_retry_at_ = steady_time::max();
    source_id source_;
    std::string source_text_;
    steady_time last_heard_{};
    bool probe_sent_ = false;         // a reply was asked for since last_heard_
    steady_time last_status_{};
    bool status_dirty_ = false;       // confirmed moved since the last status update
    steady_time phase_deadline_ = steady_time::max();
    std::chrono::milliseconds backoff_{0};

    // the open transaction
    bool in_txn_ = false;
    lsn txn_final_lsn_;
    std::int64_t txn_commit_time_us_ = 0;  // its commit time, µs since the Unix epoch (Begin)
    std::uint32_t seq_ = 0;

    // producer
    std::uint64_t producer_epoch_ = 1;
    unsigned fatal_in_a_row_ = 0;
    std::chrono::milliseconds producer_backoff_{0};
    std::size_t in_flight_records_ = 0;
    std::size_t in_flight_bytes_ = 0;

    // exactly-once
    std::unordered_map<std::string, topic_state> topics_;
    std::string last_topic_name_;
    topic_state* last_topic_ = nullptr;
    std::uint64_t next_scan_ = 0;
    steady_time scan_retry_at_ = steady_time::max();
    std::size_t parked_records_ = 0;
    std::size_t parked_bytes_ = 0;

    // per-event scratch the produce commands view
    record_scratch scratch_;
    struct dead_letter_scratch {
        std::vector<header> headers;
        std::string detail, topic, table, value_bytes;
        position_text pos{record_position{}};
    } dlq_;
    std::size_t batch_cap_ = 0;       // batch.size of the current producer (0: as configured)
    std::uint64_t shrunk_for_epoch_ = 0;

    // Kafka transactions. uninitialized: a producer that has not fenced its
    // predecessors yet (that waits for the slot, so a standby never fences
    // the relay it stands by for).
    enum class txn_state { off, uninitialized, initializing, idle, open, committing };
    txn_state txn_ = txn_state::off;
    steady_time txn_opened_at_{};
    // The stream went quiet (on_stream_idle) with a Kafka transaction open:
    // it commits at this time unless a frame arrives first. max = not armed.
    steady_time idle_commit_at_ = steady_time::max();
    // An open Kafka transaction could be committed now (no Postgres
    // transaction half in it, nothing parked).
    bool commit_possible() const noexcept;
    steady_time quiet_commit_due() const noexcept;
    void arm_idle_commit();
    steady_time txn_commit_asked_ = steady_time::min();  // when the last commit began
    steady_time txn_begin_at_ = steady_time::min();      // no record goes into a new transaction before this
    steady_time txn_retry_at_ = steady_time::max();
    std::size_t txn_records_ = 0;          // records produced into the open transaction
    bool pg_txn_in_kafka_txn_ = false;     // records of the Postgres transaction being received are in it
    std::vector<checkpoint_tracker::txn_id> txn_acked_;  // delivered in it; confirmable once it commits
    std::deque<parked_record> txn_wait_;   // records waiting for a transaction to open, in order
    std::size_t txn_wait_bytes_ = 0;
    std::vector<std::string> deferred_scans_;  // topics to scan once the producer has fenced
    struct poison {
        std::string reason, detail, topic;
    };
    std::unordered_map<record_position, poison, record_position_hash> poison_;
    std::size_t default_batch_size_ = 1'000'000;  // -X batch.size, else librdkafka's default
    position_text pos_text_{record_position{}};
    std::vector<parked_record> released_;
    std::vector<owned_record> dead_letters_;

    // operability: readiness beyond the phase, and lag
    enum class broker_link { unknown, up, down };
    broker_link broker_link_ = broker_link::unknown;
    std::string broker_down_reason_;
    steady_time last_progress_{};          // last ack or commit, or when records started to be pending
    std::size_t prev_pending_ = 0;
    std::uint64_t stats_epoch_ = 0;        // producer generation of the last statistics
    std::int64_t last_txretries_ = 0, last_txerrs_ = 0;
    void note_progress() noexcept { last_progress_ = now_.mono; }
};

}  // namespace outbox
