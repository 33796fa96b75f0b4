#include "outbox_relay/relay_session.hpp"

#include "outbox_relay/log_text.hpp"

#include <algorithm>
#include <cstdlib>
#include <utility>

namespace outbox {
namespace {

using std::chrono::milliseconds;

// Acks come in bursts (one librdkafka poll serves thousands); one status
// update per burst is enough, and Postgres does not need the flush position
// more often than this.
constexpr milliseconds confirm_gap{50};
// How long the stream must stay quiet before an open Kafka transaction is
// committed early. "The socket is empty" alone happens between every two
// reads in a catch-up, and committing each time (a flush and an EndTxn round
// trip, during which nothing can be produced) halved catch-up of single-row
// transactions; a quiet half millisecond means the writer really paused.
constexpr std::chrono::microseconds idle_commit_quiet{500};
// A slot held by another process (a standby relay waiting for its turn).
constexpr milliseconds slot_busy_retry{1000};
// First delays of the exponential backoffs; each is capped by reconnect-backoff-max-ms.
constexpr milliseconds reconnect_floor{200};
constexpr milliseconds producer_restart_floor{200};
constexpr milliseconds scan_retry_floor{500};

// record_tag = producer generation << 48 | checkpoint transaction id.
constexpr unsigned tag_shift = 48;
constexpr std::uint64_t tag_txn_mask = (std::uint64_t{1} << tag_shift) - 1;

template <class... F>
struct overloaded : F... {
    using F::operator()...;
};

std::string lsn_text(lsn l) { return l.to_string(); }

std::string log_quoted(std::string_view s) {
    // The log layer escapes; here only make a value with spaces one token.
    std::string out;
    out.reserve(s.size() + 2);
    out += '"';
    // Server messages and row data reach the log: control characters are
    // escaped too (log_quote's escapes), so a value never starts a forged line.
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else {
            out += escape_controls(std::string_view(&c, 1));
        }
    }
    out += '"';
    return out;
}

// Postgres counts time from 2000-01-01 00:00 UTC.
constexpr std::int64_t pg_epoch_offset_us = 946'684'800'000'000;

std::string_view refusal_reason(refusal r) noexcept {
    switch (r) {
        case refusal::too_large: return "record_too_large";
        case refusal::topic_authorization: return "topic_authorization";
        case refusal::unknown_topic: return "unknown_topic";
        case refusal::invalid_topic: return "invalid_topic";
        case refusal::unknown_partition: return "unknown_partition";
        case refusal::other: return "rejected";
    }
    return "rejected";
}

std::string_view refusal_fix(refusal r) noexcept {
    switch (r) {
        case refusal::too_large:
            return "Raise the topic's max.message.bytes (and the producer's message.max.bytes), or set "
                   "--dead-letter-topic; a restart sends it again.";
        case refusal::topic_authorization:
            return "Grant the relay's principal WRITE (and READ, for the exactly-once check) on the topic, or set "
                   "--dead-letter-topic; a restart sends it again.";
        case refusal::unknown_topic:
            return "Create the topic (or enable auto.create.topics.enable), or set --dead-letter-topic; a restart "
                   "sends it again.";
        case refusal::invalid_topic:
            return "Fix the routing column or the topic template, or set --dead-letter-topic.";
        case refusal::unknown_partition:
            return "Fix the partition column of the row (or add partitions to the topic), or set "
                   "--dead-letter-topic; a restart sends it again.";
        case refusal::other:
            return "See the broker's reason above, or set --dead-letter-topic; a restart sends it again.";
    }
    return "";
}

std::optional<record_position> position_of(const record& r) {
    std::string_view l, q;
    for (const header& h : r.headers) {
        if (h.name == header_commit_lsn) l = h.value;
        if (h.name == header_seq) q = h.value;
    }
    auto p = parse_position(l, q);
    if (!p) return std::nullopt;
    return *p;
}


// The record's event id header for messages, "?" without one.
std::string event_id_of(const record& r) {
    const header* h = r.find(header_id);
    return h ? std::string(h->value) : "?";
}

milliseconds doubled(milliseconds current, milliseconds floor, milliseconds cap) {
    milliseconds next = current.count() == 0 ? floor : current * 2;
    return std::clamp(next, std::min(floor, cap), cap);
}

}  // namespace

std::string_view phase_name(session_phase p) noexcept {
    switch (p) {
        case session_phase::idle: return "idle";
        case session_phase::connecting: return "connecting";
        case session_phase::streaming: return "streaming";
        case session_phase::reconnect_wait: return "reconnect_wait";
        case session_phase::producer_restart: return "producer_restart";
        case session_phase::finishing_txn: return "finishing_txn";
        case session_phase::draining: return "draining";
        case session_phase::stopping: return "stopping";
        case session_phase::stopped: return "stopped";
    }
    return "unknown";
}

relay_session::relay_session(const relay_config& cfg)
    : cfg_(cfg),
      decoder_(pgoutput::decoder_options{1, false}) {
    for (const routing_config& r : table_routes(cfg_)) mappers_.push_back(outbox_mapper::create(r).value());
    if (!cfg_.message_prefix.empty()) {
        message_mapper_.emplace(outbox_mapper::create(cfg_.messages).value());
        message_mapper_->set_label("message:" + cfg_.message_prefix);
    }
    cmds_.reserve(64);
    if (cfg_.delivery == delivery_mode::exactly_once && cfg_.kafka_transactions) txn_ = txn_state::uninitialized;
    if (auto it = cfg_.kafka.find("batch.size"); it != cfg_.kafka.end()) {
        const std::size_t n = std::strtoull(it->second.c_str(), nullptr, 10);
        if (n > 0) default_batch_size_ = n;
    }
}

// ---------------------------------------------------------------- lifecycle

void relay_session::start(event_time now) {
    if (phase_ != session_phase::idle) return;
    now_ = now;
    connect(now);
}

void relay_session::connect(event_time now) {
    (void)now;
    ++stream_epoch_;
    // Only the first stream after pg_setup created the slot can show a gap;
    // later ones find this process's own records.
    if (stream_epoch_ > 1) slot_created_ = false;
    requested_from_ = tracker_.confirmed();
    phase_ = session_phase::connecting;
    stream_ = stream_state::connecting;
    not_ready_ = "connecting to Postgres";
    phase_deadline_ = steady_time::max();
    // Every stream starts with its own Relation messages and transaction
    // boundaries; nothing of the previous one may leak in.
    decoder_ = pgoutput::decoder(pgoutput::decoder_options{1, false});
    relations_.clear();
    in_txn_ = false;
    paused_ = false;
    cmds_.emplace_back(cmd::start_stream{requested_from_});
}

void relay_session::on_stream_started(lsn slot_confirmed, const source_id& source, event_time now) {
    now_ = now;
    if (phase_ != session_phase::connecting) return;
    stream_ = stream_state::live;
    source_ = source;
    source_.slot = cfg_.slot;
    source_text_ = source_.header_value();
    for (outbox_mapper& m : mappers_) m.set_database(source_.database);
    if (message_mapper_) message_mapper_->set_database(source_.database);
    // The server starts at max(requested, confirmed_flush): that is S, the
    // start of the window it replays.
    const lsn start = std::max(slot_confirmed, requested_from_);
    scan_from_ = start;
    topics_.clear();
    last_topic_ = nullptr;
    // Nothing is in flight at a stream start (reconnects wait for the acks,
    // a producer restart begins afresh), so the tracker may jump to S.
    if (tracker_.confirmed() < start && tracker_.idle() && tracker_.pending_txns() == 0)
        tracker_ = checkpoint_tracker(start);
    backoff_ = milliseconds{0};
    slot_busy_noted_ = false;
    phase_ = session_phase::streaming;
    not_ready_.clear();
    last_heard_ = now.mono;
    probe_sent_ = false;
    note(cmd::note::level::info, "event=streaming slot=" + cfg_.slot + " slot_confirmed=" + lsn_text(slot_confirmed) +
                                     " start=" + lsn_text(start) + " confirmed=" + lsn_text(tracker_.confirmed()));
    // Positions below S are never replayed again.
    std::erase_if(poison_, [&](const auto& kv) { return kv.first.commit_lsn < start; });
    // Holding the slot now, this relay may fence any other producer of its
    // transactional.id (a paused predecessor): before the first scan, so the
    // scan does not wait on the predecessor's open transaction.
    if (txn_ == txn_state::uninitialized) {
        txn_ = txn_state::initializing;
        cmds_.emplace_back(cmd::init_txn{});
    }
    maybe_probe_gap();
    // Tell the server at once what we have confirmed (it may be ahead of the
    // slot when the previous connection dropped before an update).
    send_status(now, false);
    update_backpressure();
}

void relay_session::on_stream_closed(stream_end kind, std::string_view message, event_time now) {
    now_ = now;
    if (stream_ == stream_state::none) return;  // a stream we already dropped
    stream_ = stream_state::none;
    if (phase_ == session_phase::stopping) {
        on_stream_stopped(now);
        return;
    }
    if (phase_ == session_phase::stopped) return;
    switch (kind) {
        case stream_end::fatal:
            fail(exit_code::slot_lost, "replication stream failed: " + std::string(message), now);
            return;
        case stream_end::slot_busy:
            not_ready_ = "replication slot " + cfg_.slot + " is held by another process";
            if (!slot_busy_noted_) {
                note(cmd::note::level::info,
                     "event=slot_busy slot=" + cfg_.slot + " msg=" + log_quoted(message) + " action=retrying_every_1s");
                slot_busy_noted_ = true;
            }
            lose_stream(now, slot_busy_retry);
            return;
        case stream_end::connection_lost:
            metrics_.pg_reconnects.inc();
            note(cmd::note::level::warn, "event=connection_lost msg=" + log_quoted(message) +
                                             " confirmed=" + lsn_text(tracker_.confirmed()));
            not_ready_ = "reconnecting to Postgres: " + std::string(message);
            lose_stream(now, next_backoff(reconnect_floor));
            return;
    }
}

void relay_session::on_stream_stopped(event_time now) {
    now_ = now;
    stream_ = stream_state::none;
    if (phase_ != session_phase::stopping) return;
    phase_ = session_phase::stopped;
    cmds_.emplace_back(cmd::stop{exit_, exit_reason_, drop_slot_on_exit_});
}

// The stream is gone (closed by the server, by us, or never started):
// everything tied to it goes, and a reconnect follows after `delay` and once
// every record still in flight has a report.
void relay_session::lose_stream(event_time now, milliseconds delay) {
    // Records of the lost stream in an open Kafka transaction may belong to
    // the Postgres transaction that was cut off: abort them all (a new
    // producer's initialisation does) and resend from the confirmed position.
    if ((txn_ == txn_state::open && txn_records_ > 0) || txn_ == txn_state::committing) {
        if (!shutdown_requested_) {
            restart_producer("the replication stream ended with a Kafka transaction open", now, /*fault=*/false);
            if (phase_ == session_phase::producer_restart) return;
        }
    }
    tracker_.abandon_open_txn();
    in_txn_ = false;
    drop_stream_state();
    if (shutdown_requested_) {
        // Nothing more can be confirmed without a stream: stop; the next
        // start resumes from the slot.
        finish(now);
        return;
    }
    phase_ = session_phase::reconnect_wait;
    phase_deadline_ = now.mono + delay;
    update_backpressure();
}

void relay_session::maybe_reconnect(event_time now) {
    if (phase_ != session_phase::reconnect_wait) return;
    if (phase_deadline_ != steady_time::max() && now.mono < phase_deadline_) return;
    // Records of the lost stream still in flight: reconnect only once they
    // are acked, from the position they let us confirm, so that the server
    // does not resend them and the tail scan sees them.
    if (in_flight_records_ > 0 || txn_ == txn_state::committing) {
        phase_deadline_ = steady_time::max();  // the last ack (or the commit) calls us again
        not_ready_ = "waiting for Kafka to acknowledge the records of the lost stream";
        return;
    }
    connect(now);
}

// Parked records belong to the stream that was lost: their transactions are
// resent after the reconnect. They were counted in the tracker, so the
// transactions from the oldest one with a parked record on are marked never
// to be confirmed, and the parked records given up.
void relay_session::drop_stream_state() {
    if (parked_records_ > 0 || !txn_wait_.empty()) {
        checkpoint_tracker::txn_id oldest = ~checkpoint_tracker::txn_id{0};
        for (auto& [name, t] : topics_)
            if (!t.parked.empty()) oldest = std::min(oldest, t.parked.front().txn);
        if (!txn_wait_.empty()) oldest = std::min(oldest, txn_wait_.front().txn);
        tracker_.abandon_from(oldest);
        for (auto& [name, t] : topics_)
            for (const parked_record& p : t.parked) (void)tracker_.ack(p.txn);
        for (const parked_record& p : txn_wait_) (void)tracker_.ack(p.txn);
    }
    txn_wait_.clear();
    txn_wait_bytes_ = 0;
    deferred_scans_.clear();
    parked_records_ = 0;
    parked_bytes_ = 0;
    topics_.clear();
    last_topic_ = nullptr;
    scan_retry_at_ = steady_time::max();
}

// `fault`: a producer fault, counted towards producer-restart-limit and
// backed off exponentially; otherwise (a lost stream, smaller batches, an
// aborted transaction's aftermath) a restart after the first backoff step.
void relay_session::restart_producer(std::string_view why, event_time now, bool fault) {
    if (phase_ == session_phase::producer_restart || phase_ == session_phase::stopping ||
        phase_ == session_phase::stopped)
        return;
    if (fault) ++fatal_in_a_row_;
    if (fatal_in_a_row_ > cfg_.producer_restart_limit) {
        fail(exit_code::producer_failed,
             "the Kafka producer failed " + std::to_string(fatal_in_a_row_) +
                 " times in a row without delivering anything (last: " + std::string(why) + ")",
             now);
        return;
    }
    if (stream_ != stream_state::none) {
        cmds_.emplace_back(cmd::close_stream{});
        stream_ = stream_state::none;
    }
    tracker_.abandon_open_txn();
    in_txn_ = false;
    drop_stream_state();
    if (shutdown_requested_) {
        finish(now);
        return;
    }
    milliseconds delay = std::min(producer_restart_floor, cfg_.reconnect_backoff_max);
    if (fault) {
        delay = doubled(producer_backoff_, producer_restart_floor, cfg_.reconnect_backoff_max);
        producer_backoff_ = delay;
    }
    note(cmd::note::level::warn, "event=producer_restart reason=" + log_quoted(why) + " confirmed=" +
                                     lsn_text(tracker_.confirmed()) + " in_a_row=" + std::to_string(fatal_in_a_row_) +
                                     " after_ms=" + std::to_string(delay.count()));
    phase_ = session_phase::producer_restart;
    not_ready_ = "restarting the Kafka producer: " + std::string(why);
    phase_deadline_ = now.mono + delay;
}

void relay_session::on_producer_fatal(producer_fault fault, std::string_view reason, event_time now) {
    now_ = now;
    if (fault == producer_fault::fenced) {
        fail(exit_code::fenced,
             "fenced: another relay took over this source's Kafka transactions (" + std::string(reason) +
                 "); it holds the slot now, so this one stops without producing or confirming anything more",
             now);
        return;
    }
    if (fault == producer_fault::config) {
        fail(exit_code::kafka_config, "librdkafka rejected the producer configuration: " + std::string(reason), now);
        return;
    }
    if (fault == producer_fault::permanent) {
        fail(exit_code::producer_failed, "the Kafka producer failed for good: " + std::string(reason), now);
        return;
    }
    restart_producer(reason, now);
}

void relay_session::on_shutdown(event_time now) {
    now_ = now;
    if (shutdown_requested_) return;  // a second signal: the drain is bounded anyway
    shutdown_requested_ = true;
    note(cmd::note::level::info, "event=shutdown_requested phase=" + std::string(phase_name(phase_)) +
                                     " open_txn=" + (in_txn_ ? "true" : "false") +
                                     " in_flight=" + std::to_string(in_flight_records_));
    switch (phase_) {
        case session_phase::idle:
        case session_phase::reconnect_wait:
        case session_phase::producer_restart:
            finish(now);
            return;
        case session_phase::connecting:
            cmds_.emplace_back(cmd::close_stream{});
            stream_ = stream_state::none;
            finish(now);
            return;
        case session_phase::streaming:
            // Finish the transaction being received first, so that its
            // records can be confirmed and a restart does not replay them,
            // but not for longer than the drain timeout.
            if (in_txn_) {
                phase_ = session_phase::finishing_txn;
                phase_deadline_ = now.mono + cfg_.drain_timeout;
                return;
            }
            begin_drain(now);
            return;
        default:
            return;
    }
}

void relay_session::begin_drain(event_time now) {
    phase_ = session_phase::draining;
    not_ready_ = "shutting down";
    phase_deadline_ = now.mono + cfg_.drain_timeout;
    apply_reading();
    maybe_finish_drain(now);
}

void relay_session::maybe_finish_drain(event_time now) {
    if (phase_ != session_phase::draining) return;
    if (in_flight_records_ > 0 || parked_records_ > 0 || !txn_wait_.empty()) return;
    if (txn_ == txn_state::committing) return;
    // Commit what is open unless it holds part of a Postgres transaction that
    // will never finish now: that is left to be aborted (by the next start's
    // initialisation) and resent whole.
    if (txn_ == txn_state::open && txn_records_ > 0 && !pg_txn_in_kafka_txn_) {
        try_commit(now);
        return;
    }
    finish(now);
}

// Final status update (with a live stream) and stop. Whatever is acked so
// far is confirmed by it; the rest is resent at the next start.
void relay_session::finish(event_time now) {
    if (phase_ == session_phase::stopping || phase_ == session_phase::stopped) return;
    note(cmd::note::level::info, "event=stopping confirmed=" + lsn_text(tracker_.confirmed()) +
                                     " in_flight=" + std::to_string(in_flight_records_) +
                                     " parked=" + std::to_string(parked_records_));
    if (stream_ == stream_state::live) {
        send_status(now, false);
        cmds_.emplace_back(cmd::stop_stream{});
        phase_ = session_phase::stopping;
        not_ready_ = "stopping";
        return;
    }
    if (stream_ == stream_state::connecting) {
        cmds_.emplace_back(cmd::close_stream{});
        stream_ = stream_state::none;
    }
    phase_ = session_phase::stopped;
    not_ready_ = "stopped";
    cmds_.emplace_back(cmd::stop{exit_, exit_reason_, drop_slot_on_exit_});
}

// Stops with a non-zero code: nothing more is produced or confirmed past
// what is acked now; acks of records after the failure are not waited for.
void relay_session::fail(exit_code code, std::string reason, event_time now) {
    if (phase_ == session_phase::stopping || phase_ == session_phase::stopped) return;
    exit_ = code;
    exit_reason_ = std::move(reason);
    note(cmd::note::level::error, "event=fatal exit_code=" + std::to_string(to_int(code)) + " (" +
                                      std::string(exit_code_name(code)) + ") reason=" + log_quoted(exit_reason_));
    // Reading stops at once; the final status confirms only what is acked.
    if (stream_ == stream_state::live) {
        phase_ = session_phase::draining;
        apply_reading();
    }
    finish(now);
}

void relay_session::note(cmd::note::level lvl, std::string text) {
    cmds_.emplace_back(cmd::note{lvl, std::move(text)});
}

milliseconds relay_session::next_backoff(milliseconds floor) noexcept {
    backoff_ = doubled(backoff_, floor, cfg_.reconnect_backoff_max);
    return backoff_;
}

// ---------------------------------------------------------------- ticks

void relay_session::on_tick(event_time now) {
    now_ = now;
    released_.clear();
    dead_letters_.clear();
    switch (phase_) {
        case session_phase::streaming:
        case session_phase::finishing_txn:
        case session_phase::draining: {
            // A dead path is noticed here: nothing heard for the silence
            // timeout. While reading is paused nothing can be heard (the
            // socket is not read); the kernel's tcp_user_timeout covers that.
            if (!paused_) {
                const auto silent = now.mono - last_heard_;
                if (silent >= cfg_.pg_silence_timeout) {
                    metrics_.pg_reconnects.inc();
                    metrics_.pg_silence_timeouts.inc();
                    note(cmd::note::level::warn,
                         "event=connection_silent after_ms=" +
                             std::to_string(std::chrono::duration_cast<milliseconds>(silent).count()) +
                             " action=reconnect confirmed=" + lsn_text(tracker_.confirmed()));
                    cmds_.emplace_back(cmd::close_stream{});
                    stream_ = stream_state::none;
                    not_ready_ = "nothing heard from Postgres for " +
                                 std::to_string(cfg_.pg_silence_timeout.count()) + " ms: reconnecting";
                    lose_stream(now, next_backoff(reconnect_floor));
                    return;
                }
                // Ask the server to answer, so that a silent but healthy
                // server (idle WAL) proves it is alive.
                if (!probe_sent_ && silent >= cfg_.pg_silence_timeout / 3) {
                    send_status(now, true);
                    probe_sent_ = true;
                }
            }
            if (now.mono >= last_status_ + cfg_.status_interval) send_status(now, false);
            maybe_send_status(now);
            if (commit_possible() && (now.mono >= txn_opened_at_ + cfg_.kafka_txn_max || now.mono >= quiet_commit_due()))
                try_commit(now);
            if (txn_ == txn_state::idle) release_txn_wait();  // once kafka-txn-begin-delay-ms has passed
            if (now.mono >= gap_probe_retry_at_) {
                gap_probe_retry_at_ = steady_time::max();
                maybe_probe_gap();
            }
            if (txn_ == txn_state::initializing && now.mono >= txn_retry_at_) {
                txn_retry_at_ = steady_time::max();
                cmds_.emplace_back(cmd::init_txn{});
            }
            if (phase_ == session_phase::finishing_txn && now.mono >= phase_deadline_) {
                note(cmd::note::level::warn, "event=open_txn_not_finished action=stop_reading confirmed=" +
                                                 lsn_text(tracker_.confirmed()));
                begin_drain(now);
                return;
            }
            if (phase_ == session_phase::draining && now.mono >= phase_deadline_) {
                note(cmd::note::level::warn, "event=drain_timeout in_flight=" + std::to_string(in_flight_records_) +
                                                 " confirmed=" + lsn_text(tracker_.confirmed()));
                finish(now);
                return;
            }
            if (now.mono >= scan_retry_at_) {
                scan_retry_at_ = steady_time::max();
                for (auto& [name, t] : topics_) {
                    if (t.state != topic_state::st::retry_wait) continue;
                    if (now.mono >= t.retry_at)
                        request_scan(name, t);
                    else
                        scan_retry_at_ = std::min(scan_retry_at_, t.retry_at);
                }
            }
            return;
        }
        case session_phase::reconnect_wait:
            maybe_reconnect(now);
            return;
        case session_phase::producer_restart:
            if (now.mono < phase_deadline_) return;
            // The old producer goes with everything it still holds (purged:
            // never confirmed); the stream restarts from what acks confirmed.
            cmds_.emplace_back(cmd::recreate_producer{batch_cap_});
            metrics_.producer_recreated.inc();
            ++producer_epoch_;
            tracker_ = checkpoint_tracker(tracker_.confirmed());
            in_flight_records_ = 0;
            in_flight_bytes_ = 0;
            if (txn_ != txn_state::off) {
                // What it delivered but never committed is aborted by the
                // next producer's initialisation: never confirmed.
                txn_ = txn_state::uninitialized;
                txn_records_ = 0;
                txn_acked_.clear();
                txn_retry_at_ = steady_time::max();
            }
            connect(now);
            return;
        default:
            return;
    }
}

steady_time relay_session::next_deadline() const noexcept {
    switch (phase_) {
        case session_phase::streaming:
        case session_phase::finishing_txn:
        case session_phase::draining: {
            steady_time d = last_status_ + cfg_.status_interval;
            if (status_dirty_) d = std::min(d, last_status_ + confirm_gap);
            if (!paused_) {
                d = std::min(d, last_heard_ + cfg_.pg_silence_timeout);
                if (!probe_sent_) d = std::min(d, last_heard_ + cfg_.pg_silence_timeout / 3);
            }
            if (phase_ != session_phase::streaming) d = std::min(d, phase_deadline_);
            // Only while a commit could go out: a deadline that passes while
            // a Postgres transaction is half in the Kafka one would make the
            // shell tick in a loop until it ends.
            if (commit_possible()) d = std::min({d, txn_opened_at_ + cfg_.kafka_txn_max, quiet_commit_due()});
            if (txn_ == txn_state::idle && !txn_wait_.empty()) d = std::min(d, txn_begin_at_);
            if (txn_ == txn_state::initializing) d = std::min(d, txn_retry_at_);
            d = std::min(d, gap_probe_retry_at_);
            return std::min(d, scan_retry_at_);
        }
        case session_phase::reconnect_wait:
        case session_phase::producer_restart:
            return phase_deadline_;
        default:
            return steady_time::max();
    }
}

std::pair<bool, std::string_view> relay_session::readiness() const noexcept {
    if (phase_ == session_phase::streaming || phase_ == session_phase::finishing_txn) return {true, "streaming"};
    if (!not_ready_.empty()) return {false, not_ready_};
    return {false, phase_name(phase_)};
}

// ---------------------------------------------------------------- frames

void relay_session::on_copy_data(std::string_view frame, event_time now) {
    now_ = now;
    released_.clear();
    dead_letters_.clear();
    if (stream_ != stream_state::live) return;
    last_heard_ = now.mono;
    probe_sent_ = false;
    idle_commit_at_ = steady_time::max();  // not quiet after all
    auto msg = walsender::parse_copy_data(frame);
    if (!msg) {
        fail(exit_code::protocol, "malformed CopyData frame: " + msg.error().describe(), now);
        return;
    }
    if (const auto* x = std::get_if<walsender::xlog_data>(&*msg)) {
        // A frame read before the drain paused the stream: the server resends it.
        if (phase_ == session_phase::draining) return;
        handle(*x, now);
    } else {
        handle(std::get<walsender::keepalive>(*msg), now);
    }
}

// ---------------------------------------------------------------- operability

void relay_session::on_kafka_stats(const kafka_stats& st, event_time now) {
    now_ = now;
    metrics_.kafka_stats_received.inc();
    metrics_.kafka_brokers_up.set(st.brokers_up);
    metrics_.kafka_brokers_known.set(st.brokers_known);
    metrics_.kafka_queue_messages.set(static_cast<double>(st.msg_cnt));
    metrics_.kafka_queue_bytes.set(static_cast<double>(st.msg_size));
    metrics_.kafka_rtt_avg.set(st.rtt_avg_max_s);
    // librdkafka counts per producer; a new producer starts from 0 again.
    if (stats_epoch_ != producer_epoch_) {
        stats_epoch_ = producer_epoch_;
        last_txretries_ = last_txerrs_ = 0;
    }
    if (st.txretries > last_txretries_) metrics_.kafka_retries.inc(static_cast<std::uint64_t>(st.txretries - last_txretries_));
    if (st.txerrs > last_txerrs_) metrics_.kafka_tx_errors.inc(static_cast<std::uint64_t>(st.txerrs - last_txerrs_));
    last_txretries_ = std::max(last_txretries_, st.txretries);
    last_txerrs_ = std::max(last_txerrs_, st.txerrs);
    if (st.brokers_up > 0) {
        broker_link_ = broker_link::up;
    } else {
        broker_link_ = broker_link::down;
        broker_down_reason_ = "no Kafka broker connection (" + std::to_string(st.brokers_known) +
                              " brokers known, none up)";
    }
}

void relay_session::on_kafka_brokers_down(std::string_view reason, event_time now) {
    now_ = now;
    broker_link_ = broker_link::down;
    broker_down_reason_ = "no Kafka broker connection: " + std::string(reason);
    metrics_.kafka_brokers_up.set(0);
}

void relay_session::on_slot_status(const slot_status& st, event_time now) {
    now_ = now;
    metrics_.slot_status_up.set(st.ok ? 1 : 0);
    if (!st.ok) return;  // the last figures stay; slot_status_up says they are old
    metrics_.slot_retained_wal.set(st.retained_wal ? static_cast<double>(*st.retained_wal) : 0);
    metrics_.slot_safe_wal_size.set(st.safe_wal_size ? static_cast<double>(*st.safe_wal_size) : -1);
    metrics_.slot_active_pid.set(st.active_pid ? *st.active_pid : 0);
    metrics_.set_wal_status(st.wal_status);
}

void relay_session::refresh_gauges(event_time now) {
    const lsn c = tracker_.confirmed();
    metrics_.lag_bytes.set(received_ > c ? static_cast<double>(received_.value() - c.value()) : 0);
    const auto oldest = tracker_.oldest_pending_commit_ts();
    metrics_.lag_seconds.set(oldest ? seconds_since_pg_commit(*oldest, now.wall_us) : 0);
}

std::pair<bool, std::string> relay_session::readiness_at(steady_time now) const {
    auto [streaming, why] = readiness();
    if (!streaming) return {false, std::string(why)};
    if (broker_link_ == broker_link::unknown) return {false, "waiting for a Kafka broker connection"};
    if (broker_link_ == broker_link::down) return {false, broker_down_reason_};
    const std::size_t pending = in_flight_records_ + parked_records_ + txn_wait_.size();
    if ((pending > 0 || txn_ == txn_state::committing) && now - last_progress_ > cfg_.ready_stall) {
        const auto ms = std::chrono::duration_cast<milliseconds>(now - last_progress_).count();
        return {false, "stalled: " + std::to_string(pending) + " records pending and nothing acknowledged or "
                                                                "committed for " +
                           std::to_string(ms) + " ms"};
    }
    return {true, "streaming"};
}

void relay_session::handle(const walsender::keepalive& k, event_time now) {
    received_ = std::max(received_, k.wal_end);
    metrics_.received_lsn.set(static_cast<double>(received_.value()));
    if (tracker_.on_keepalive(k.wal_end)) confirmed_moved(now);
    if (k.reply_requested) send_status(now, false);
}

void relay_session::handle(const walsender::xlog_data& x, event_time now) {
    (void)now;
    received_ = std::max(received_, x.wal_end);
    auto msg = decoder_.decode(x.payload);
    if (!msg) {
        fail(exit_code::protocol,
             "undecodable pgoutput message at lsn=" + lsn_text(x.data_start) + ": " + msg.error().describe(), now_);
        return;
    }
    std::visit([&](const auto& m) { on_message(m, x); }, *msg);
}

void relay_session::on_message(const pgoutput::begin& b, const walsender::xlog_data& x) {
    if (in_txn_) {
        fail(exit_code::protocol, "Begin while a transaction is open at lsn=" + lsn_text(x.data_start), now_);
        return;
    }
    tracker_.begin_txn(b.final_lsn, b.commit_ts);
    in_txn_ = true;
    txn_final_lsn_ = b.final_lsn;
    txn_commit_time_us_ = b.commit_ts + pg_epoch_offset_us;
    seq_ = 0;
}

void relay_session::on_message(const pgoutput::commit& c, const walsender::xlog_data&) {
    if (!in_txn_) {
        fail(exit_code::protocol, "Commit without Begin at lsn=" + lsn_text(c.commit_lsn), now_);
        return;
    }
    in_txn_ = false;
    pg_txn_in_kafka_txn_ = false;
    metrics_.transactions.inc();
    if (tracker_.commit_txn(c.end_lsn)) confirmed_moved(now_);
    if (commit_possible() && now_.mono >= txn_opened_at_ + cfg_.kafka_txn_max) try_commit(now_);
    if (phase_ == session_phase::finishing_txn) begin_drain(now_);
}

void relay_session::on_message(const pgoutput::relation& r, const walsender::xlog_data& x) {
    const cached_relation& rel = relations_.apply(r);
    int route = -1;
    for (std::size_t i = 0; i < mappers_.size() && route < 0; ++i)
        if (mappers_[i].is_outbox(rel)) route = static_cast<int>(i);
    route_of_[rel.relid] = route;
    if (route < 0) return;
    // With a dead-letter topic each row that cannot be mapped becomes a dead
    // letter (reason unmapped_column) instead.
    if (!cfg_.dead_letter_topic.empty()) return;
    if (auto ok = mappers_[static_cast<std::size_t>(route)].check_relation(rel); !ok)
        fail(exit_code::outbox_schema, "outbox relation " + rel.nspname + "." + rel.relname +
                                           " lacks mapped column \"" + ok.error().field +
                                           "\" at lsn=" + lsn_text(x.data_start),
             now_);
}

void relay_session::on_message(const pgoutput::insert& ins, const walsender::xlog_data& x) {
    auto rel = relations_.check(ins.relid, ins.new_tuple);
    if (!rel) {
        fail(exit_code::protocol, "Insert for relid " + std::to_string(ins.relid) +
                                      " at lsn=" + lsn_text(x.data_start) + ": " + rel.error().describe(),
             now_);
        return;
    }
    const auto route = route_of_.find(ins.relid);
    if (route == route_of_.end() || route->second < 0) {
        metrics_.ignored_other_table.inc();
        return;
    }
    if (!in_txn_) {
        fail(exit_code::protocol, "Insert outside a transaction at lsn=" + lsn_text(x.data_start), now_);
        return;
    }
    map_row(mappers_[static_cast<std::size_t>(route->second)], **rel, ins.new_tuple, {}, "outbox row", x);
}

void relay_session::map_row(const outbox_mapper& m, const cached_relation& rel, const pgoutput::tuple_data& row,
                            std::span<const header> extra, std::string_view what, const walsender::xlog_data& x) {
    const row_context ctx{txn_commit_time_us_, extra};
    auto rec = m.map(rel, row, ctx, scratch_);
    if (!rec) {
        refuse_row(m, rec.error(), rel, row, ctx, what, x);
        return;
    }
    if (scratch_.trace_dropped) metrics_.trace_context_dropped.inc();
    route(*rec, record_position{txn_final_lsn_, seq_++}, m);
}

namespace {
// The stable word of a dead letter's reason (README "Dead letters").
std::string_view mapping_reason(errc code) noexcept {
    switch (code) {
        case errc::invalid_topic: return "invalid_topic";
        case errc::null_column:
        case errc::unchanged_toast_column: return "null_column";
        case errc::missing_column:
        case errc::column_count_mismatch: return "unmapped_column";
        default: return "bad_value";
    }
}
}  // namespace

// A row the mapper refused: a dead letter when there is a dead-letter topic,
// else a stop that names the row, the reason and the fix.
void relay_session::refuse_row(const outbox_mapper& m, const error& e, const cached_relation& rel,
                               const pgoutput::tuple_data& row, const row_context& ctx, std::string_view what,
                               const walsender::xlog_data& x) {
    const record_position pos{txn_final_lsn_, seq_++};
    const bool message = &m == (message_mapper_ ? &*message_mapper_ : nullptr);
    const errc code = e.code;
    const std::string intended = code == errc::invalid_topic ? scratch_.topic : std::string();
    std::string detail =
        code == errc::invalid_topic ? "the row routes to \"" + intended + "\", not a valid Kafka topic name (template " +
                                          e.field + ")"
        : code == errc::column_count_mismatch ? std::string("the row does not match its relation's columns")
        : message && code == errc::missing_column ? "the message has no field \"" + e.field + "\""
        : code == errc::bad_message               ? e.message
                                                  : (message ? "field \"" : "column \"") + e.field + "\": " +
                                          (e.message.empty() ? std::string(errc_message(code)) : e.message);
    const std::string_view reason = message && (code == errc::missing_column || code == errc::bad_message)
                                        ? std::string_view("bad_message")
                                        : mapping_reason(code);
    const record salvaged = m.salvage(rel, row, ctx, scratch_);
    if (!cfg_.dead_letter_topic.empty()) {
        dead_letter(salvaged, pos, reason, detail, intended, std::nullopt, false, m.label());
        return;
    }
    const std::string id = event_id_of(salvaged);
    const std::string text = std::string(what) + " at lsn=" + lsn_text(x.data_start) + " (" + m.label() +
                             ") event_id=" + id + " cannot be sent (" + std::string(reason) + "): " + detail +
                             "; nothing at or after it is confirmed. Fix the " +
                             (message ? "message's writer" : "row's writer") +
                             " or the routing configuration, or set --dead-letter-topic to set such " +
                             (message ? "messages" : "rows") + " aside";
    fail(code == errc::invalid_topic ? exit_code::record_rejected : exit_code::outbox_schema, text, now_);
}

// pg_logical_emit_message: an outbox message when its prefix is ours. A
// transactional one is part of its transaction (position and order as a
// row's); a non-transactional one is decoded the moment the server reads it,
// outside any transaction, and is relayed as a transaction of its own: its
// position is (message lsn - 1, 0), just inside its own WAL record, which no
// transaction's commit record can share; it is confirmed at its lsn (the
// end of its record), past which the server never sends it again.
void relay_session::relay_message(const pgoutput::message& msg, const walsender::xlog_data& x) {
    if (!message_mapper_ || msg.prefix != cfg_.message_prefix) {
        metrics_.ignored_message.inc();
        return;
    }
    metrics_.outbox_messages.inc();
    const bool own_txn = !msg.transactional();
    if (own_txn == in_txn_) {
        fail(exit_code::protocol, std::string(own_txn ? "non-transactional message inside a transaction"
                                                      : "transactional message outside a transaction") +
                                      " at lsn=" + lsn_text(msg.message_lsn),
             now_);
        return;
    }
    if (own_txn) {
        if (msg.message_lsn.value() == 0) {
            fail(exit_code::protocol, "non-transactional message without an lsn", now_);
            return;
        }
        // The server's clock when it sent the message: there is no commit.
        const std::int64_t sent_us = x.send_time + pg_epoch_offset_us;
        on_message(pgoutput::begin{lsn(msg.message_lsn.value() - 1), x.send_time, 0}, x);
        txn_commit_time_us_ = sent_us;
    }
    const cached_relation* rel = &message_.rel;
    if (auto ok = parse_outbox_message(msg.content, message_); !ok) {
        // Not even fields: a relation of none, so the salvage keeps nothing
        // but the bytes as the value.
        message_.rel.columns.clear();
        message_.columns.clear();
        message_.headers.clear();
        const record_position pos{txn_final_lsn_, seq_++};
        record raw;
        raw.key_null = true;
        raw.value = msg.content;
        raw.timestamp_ms = txn_commit_time_us_ / 1000;
        const std::string detail = ok.error().message;
        if (!cfg_.dead_letter_topic.empty()) {
            dead_letter(raw, pos, "bad_message", detail, {}, std::nullopt, false, message_mapper_->label());
        } else {
            fail(exit_code::outbox_schema,
                 "outbox message at lsn=" + lsn_text(msg.message_lsn) + " (" + message_mapper_->label() +
                     ") cannot be sent (bad_message): " + detail +
                     "; nothing at or after it is confirmed. Fix the message's writer, or set --dead-letter-topic "
                     "to set such messages aside",
                 now_);
            return;
        }
    } else {
        map_row(*message_mapper_, *rel, message_.row(), message_.headers, "outbox message", x);
    }
    // A stop above must not confirm past the message it refused.
    if (own_txn && exit_ == exit_code::ok)
        on_message(pgoutput::commit{0, lsn(msg.message_lsn.value() - 1), msg.message_lsn, x.send_time}, x);
}

void relay_session::on_message(const pgoutput::update&, const walsender::xlog_data&) { metrics_.ignored_update.inc(); }
void relay_session::on_message(const pgoutput::delete_&, const walsender::xlog_data&) { metrics_.ignored_delete.inc(); }
void relay_session::on_message(const pgoutput::truncate&, const walsender::xlog_data&) { metrics_.ignored_truncate.inc(); }
void relay_session::on_message(const pgoutput::message& m, const walsender::xlog_data& x) { relay_message(m, x); }
void relay_session::on_message(const pgoutput::origin&, const walsender::xlog_data&) {}
void relay_session::on_message(const pgoutput::type&, const walsender::xlog_data&) {}

// Streaming and two-phase messages: never requested (proto_version 1), so
// receiving one means the server and we disagree about the protocol.
template <class M>
void relay_session::on_message(const M&, const walsender::xlog_data& x) {
    fail(exit_code::protocol, "unexpected streaming/two-phase message at lsn=" + lsn_text(x.data_start), now_);
}

// ---------------------------------------------------------------- records

void relay_session::route(const record& mapped, record_position pos, const outbox_mapper& m) {
    // Which routes write to which topic, for the table header of a dead
    // letter made from a delivery report (which knows only the topic).
    if (mappers_.size() + (message_mapper_ ? 1 : 0) > 1 &&
        (&m != last_label_mapper_ || mapped.topic != last_label_topic_)) {
        last_label_mapper_ = &m;
        last_label_topic_.assign(mapped.topic);
        std::string& tables = topic_tables_[last_label_topic_];
        if (tables.empty())
            tables = m.label();
        else if (("," + tables + ",").find("," + m.label() + ",") == std::string::npos)
            tables += "," + m.label();
    }
    // The position headers, next to the mapped ones, in storage that lives
    // until the next event (the produce command views it).
    pos_text_ = position_text(pos);
    scratch_.headers.push_back({header_commit_lsn, pos_text_.commit_lsn()});
    scratch_.headers.push_back({header_seq, pos_text_.seq()});
    scratch_.headers.push_back({header_source, source_text_});
    record rec = mapped;
    rec.headers = std::span<const header>(scratch_.headers.data(), scratch_.headers.size());
    send(rec, pos, std::nullopt);
}

// Sends a complete record (position headers included): at once, parked
// behind its topic's scan, skipped when the scan found it, or as a dead
// letter when its topic is dead. `existing`: the checkpoint entry the record
// already counts in (a dead letter of a refused record), else a new count.
void relay_session::send(const record& rec, record_position pos, std::optional<checkpoint_tracker::txn_id> existing) {
    const std::size_t bytes = rec.bytes();
    auto counted = [&] { return existing ? *existing : tracker_.add_record(); };
    // Refused in an earlier (aborted) transaction: straight to the dead letters.
    if (!poison_.empty() && rec.topic != cfg_.dead_letter_topic) {
        if (auto it = poison_.find(pos); it != poison_.end()) {
            const poison p = it->second;
            poison_.erase(it);
            dead_letter(rec, pos, p.reason, p.detail, p.topic, counted());
            return;
        }
    }
    if (cfg_.delivery == delivery_mode::at_least_once) {
        produce_now(rec, pos, counted(), bytes);
        return;
    }
    topic_state* t = last_topic_;
    if (t == nullptr || rec.topic != last_topic_name_) {
        auto [it, fresh] = topics_.try_emplace(std::string(rec.topic));
        t = &it->second;
        last_topic_ = t;
        last_topic_name_.assign(rec.topic);
        // First record of this stream to the topic: what earlier sessions
        // already delivered at or after S is read back before anything of
        // this one goes there. Off the loop; the topic's records wait.
        if (fresh) request_scan(it->first, *t);
    }
    if (t->state == topic_state::st::dead) {
        const std::string reason = t->dead_reason, detail = t->dead_detail;
        dead_letter(rec, pos, reason, detail, rec.topic, counted());
        return;
    }
    if (t->state != topic_state::st::ready) {
        park(*t, rec, pos, counted(), bytes);
        return;
    }
    if (!t->present.empty()) {
        // Positions only grow within a stream: past the newest present one
        // nothing more can be a duplicate.
        if (pos.commit_lsn > t->max_present) {
            t->present.clear();
        } else if (t->present.contains(pos)) {
            metrics_.duplicates_skipped.inc();
            if (existing && tracker_.ack(*existing)) confirmed_moved(now_);
            return;
        }
    }
    produce_now(rec, pos, counted(), bytes);
}

// The record at `pos` cannot go where it was meant to: it goes to the
// dead-letter topic with its key, value and headers, plus why. Deduplicated
// (the dead-letter topic is scanned like any other) and confirmed once acked,
// like any record.
void relay_session::dead_letter(const record& orig, record_position pos, std::string_view reason, std::string detail,
                                std::string_view intended_topic, std::optional<checkpoint_tracker::txn_id> existing,
                                bool without_value, std::string_view table) {
    metrics_.dead_letter(reason).inc();
    dlq_.detail = std::move(detail);
    dlq_.topic.assign(intended_topic);
    if (!table.empty()) {
        dlq_.table.assign(table);
    } else if (mappers_.size() == 1 && !message_mapper_) {
        dlq_.table = mappers_.front().label();
    } else {
        auto it = topic_tables_.find(dlq_.topic);
        dlq_.table = it != topic_tables_.end() ? it->second : std::string();
    }
    dlq_.pos = position_text(pos);
    dlq_.headers.clear();
    for (const header& h : orig.headers)
        if (h.name != header_commit_lsn && h.name != header_seq && h.name != header_source &&
            !h.name.starts_with("outbox-relay.dlq."))
            dlq_.headers.push_back(h);
    dlq_.headers.push_back({header_dlq_reason, reason});
    dlq_.headers.push_back({header_dlq_detail, dlq_.detail});
    dlq_.headers.push_back({header_dlq_topic, dlq_.topic});
    dlq_.headers.push_back({header_dlq_table, dlq_.table});
    record rec = orig;
    rec.topic = cfg_.dead_letter_topic;
    rec.partition = any_partition;  // the partition was chosen for the intended topic
    if (without_value) {
        dlq_.value_bytes = std::to_string(orig.value.size());
        dlq_.headers.push_back({header_dlq_value_bytes, dlq_.value_bytes});
        rec.value = {};
        rec.value_null = true;
    }
    dlq_.headers.push_back({header_commit_lsn, dlq_.pos.commit_lsn()});
    dlq_.headers.push_back({header_seq, dlq_.pos.seq()});
    dlq_.headers.push_back({header_source, source_text_});
    rec.headers = std::span<const header>(dlq_.headers.data(), dlq_.headers.size());
    // Its own copy: one event can make several dead letters, and the produce
    // commands view their record until the event's commands have run.
    dead_letters_.emplace_back(rec);
    const record& owned = dead_letters_.back().get();
    note(cmd::note::level::warn, "event=dead_letter reason=" + std::string(reason) + " topic=" + log_quoted(intended_topic) +
                                     " position=" + std::string(dlq_.pos.commit_lsn()) + "/" + std::string(dlq_.pos.seq()) +
                                     " detail=" + log_quoted(dlq_.detail));
    send(owned, pos, existing);
}

// A broker refused a small record as too large: the batch around it was too
// large for the topic's max.message.bytes (librdkafka 2.0.2 does not split a
// refused batch). Produce with batches half as big, from the confirmed
// position; the replay brings the record again, and once a batch can only
// hold it alone, a refusal is its own size.
void relay_session::shrink_batches(std::size_t record_bytes, event_time now) {
    // Once per producer: the other records of the refused batch say the same.
    if (shrunk_for_epoch_ == producer_epoch_) return;
    shrunk_for_epoch_ = producer_epoch_;
    const std::size_t current = batch_cap_ != 0 ? batch_cap_ : default_batch_size_;
    batch_cap_ = std::max(current / 2, std::max<std::size_t>(record_bytes, 1));
    note(cmd::note::level::warn, "event=batch_too_large record_bytes=" + std::to_string(record_bytes) +
                                     " batch_size=" + std::to_string(current) + " new_batch_size=" +
                                     std::to_string(batch_cap_) + " action=restart_producer confirmed=" +
                                     lsn_text(tracker_.confirmed()));
    metrics_.batch_shrinks.inc();
    // Not a producer fault: it must not count towards producer-restart-limit.
    // Already restarting (another record of the failed transaction said so
    // first): the new producer gets the smaller batches.
    restart_producer("a batch was larger than the topic accepts", now, /*fault=*/false);
}

// To the producer, inside a Kafka transaction when they are used: one is
// opened if none is; while one commits (or the producer has not fenced yet)
// the record waits, in order.
void relay_session::produce_now(const record& rec, record_position pos, checkpoint_tracker::txn_id txn,
                                std::size_t bytes) {
    switch (txn_) {
        case txn_state::off:
        case txn_state::open:
            break;
        case txn_state::idle:
            // Right after a commit (kafka-txn-begin-delay-ms), and behind
            // records already waiting for that, a record waits too.
            if (txn_wait_.empty() && now_.mono >= txn_begin_at_) {
                open_txn();
                break;
            }
            [[fallthrough]];
        default:
            txn_wait_.push_back(parked_record{owned_record(rec), pos, txn, bytes});
            txn_wait_bytes_ += bytes;
            update_backpressure();
            return;
    }
    to_producer(rec, pos, txn, bytes);
}

void relay_session::to_producer(const record& rec, record_position, checkpoint_tracker::txn_id txn,
                                std::size_t bytes) {
    ++in_flight_records_;
    in_flight_bytes_ += bytes;
    metrics_.records_produced.inc();
    if (txn_ == txn_state::open) {
        ++txn_records_;
        if (in_txn_) pg_txn_in_kafka_txn_ = true;
    }
    cmds_.emplace_back(cmd::produce{rec, (producer_epoch_ << tag_shift) | (txn & tag_txn_mask)});
    update_backpressure();
}

void relay_session::open_txn() {
    cmds_.emplace_back(cmd::begin_txn{});
    txn_ = txn_state::open;
    txn_opened_at_ = now_.mono;
    txn_records_ = 0;
    pg_txn_in_kafka_txn_ = false;
}

// Records that waited for a transaction go into a new one, in order.
void relay_session::release_txn_wait() {
    if (txn_wait_.empty() || (txn_ != txn_state::idle && txn_ != txn_state::open)) return;
    if (txn_ == txn_state::idle && now_.mono < txn_begin_at_) return;  // on_tick releases them
    if (txn_ == txn_state::idle) open_txn();
    std::deque<parked_record> batch = std::exchange(txn_wait_, {});
    txn_wait_bytes_ = 0;
    for (parked_record& p : batch) {
        released_.push_back(std::move(p));
        const parked_record& q = released_.back();
        to_producer(q.rec.get(), q.pos, q.txn, q.bytes);
    }
    update_backpressure();
    arm_idle_commit();
}

// Records went out with no frame behind them (a commit or a scan finished):
// the stream may already be quiet and say so no more, so count from now.
void relay_session::arm_idle_commit() {
    if (commit_possible() && idle_commit_at_ == steady_time::max()) idle_commit_at_ = now_.mono + idle_commit_quiet;
}

// Commits the open Kafka transaction when that cannot split a Postgres
// transaction: none of the one being received is in it, and no record of a
// finished one is still parked behind a scan. Then read_committed consumers
// see each Postgres transaction's records all at once.
void relay_session::try_commit(event_time now) {
    if (txn_ != txn_state::open || txn_records_ == 0) return;
    if (pg_txn_in_kafka_txn_ || parked_records_ > 0) return;
    idle_commit_at_ = steady_time::max();
    metrics_.kafka_txn_records.observe(static_cast<double>(txn_records_));
    cmds_.emplace_back(cmd::commit_txn{});
    txn_ = txn_state::committing;
    txn_commit_asked_ = now.mono;
}

void relay_session::on_stream_idle(event_time now) {
    now_ = now;
    released_.clear();
    dead_letters_.clear();
    if (!commit_possible()) return;
    if (now.mono >= txn_opened_at_ + cfg_.kafka_txn_max)
        try_commit(now);
    else if (idle_commit_at_ == steady_time::max())
        idle_commit_at_ = now.mono + idle_commit_quiet;
}

// A quiet stream commits, but not sooner than kafka-txn-min-interval-ms after
// the last commit began: each Kafka transaction costs the producer about 2 ms
// of CPU (librdkafka 2.0.2's main thread spins out the last millisecond before
// each of its timers, and every transaction arms several), so at a thousand
// single-row Postgres transactions a second, committing on every quiet gap
// keeps a core busy.
steady_time relay_session::quiet_commit_due() const noexcept {
    if (idle_commit_at_ == steady_time::max()) return idle_commit_at_;
    return std::max(idle_commit_at_, txn_commit_asked_ + cfg_.kafka_txn_min_interval);
}

bool relay_session::commit_possible() const noexcept {
    return txn_ == txn_state::open && txn_records_ > 0 && !pg_txn_in_kafka_txn_ && parked_records_ == 0;
}

void relay_session::on_txn_done(txn_op op, const txn_outcome& o, event_time now) {
    now_ = now;
    released_.clear();
    dead_letters_.clear();
    if (phase_ == session_phase::stopping || phase_ == session_phase::stopped ||
        phase_ == session_phase::producer_restart)
        return;
    if (o.fenced) {
        fail(exit_code::fenced,
             "fenced: another relay took over this source's Kafka transactions (" + o.message +
                 "); it holds the slot now, so this one stops without producing or confirming anything more",
             now);
        return;
    }
    switch (op) {
        case txn_op::init:
            if (txn_ != txn_state::initializing) return;
            if (o.status == txn_outcome::kind::ok) {
                broker_link_ = broker_link::up;  // the coordinator answered
                txn_ = txn_state::idle;
                begin_scans();
                maybe_probe_gap();
                release_txn_wait();
                return;
            }
            if (o.status == txn_outcome::kind::retriable) {
                note(cmd::note::level::warn, "event=txn_init_retry reason=" + log_quoted(o.message));
                txn_retry_at_ = now.mono + milliseconds{1000};
                return;
            }
            fail(exit_code::producer_failed, "cannot initialise Kafka transactions: " + o.message, now);
            return;
        case txn_op::begin:
            restart_producer("cannot begin a Kafka transaction: " + o.message, now);
            return;
        case txn_op::commit:
            if (txn_ != txn_state::committing) return;
            if (o.status == txn_outcome::kind::ok) {
                note_progress();
                metrics_.kafka_txn_commits.inc();
                metrics_.kafka_txn_commit.observe(std::chrono::duration<double>(now.mono - txn_commit_asked_).count());
                bool moved = false;
                for (checkpoint_tracker::txn_id id : std::exchange(txn_acked_, {})) moved = tracker_.ack(id) || moved;
                txn_ = txn_state::idle;
                txn_begin_at_ = now.mono + cfg_.kafka_txn_begin_delay;
                if (moved) confirmed_moved(now);
                release_txn_wait();
                update_backpressure();
                maybe_finish_drain(now);
                maybe_reconnect(now);
                return;
            }
            if (o.status == txn_outcome::kind::retriable) {
                cmds_.emplace_back(cmd::commit_txn{});  // resumes in librdkafka
                return;
            }
            // Abortable (a record failed in it) or fatal: everything not
            // committed is sent again by a new producer, whose initialisation
            // aborts this transaction.
            restart_producer("the Kafka transaction did not commit: " + o.message, now);
            return;
    }
}

void relay_session::park(topic_state& t, const record& rec, record_position pos, checkpoint_tracker::txn_id txn,
                         std::size_t bytes) {
    t.parked.push_back(parked_record{owned_record(rec), pos, txn, bytes});
    ++parked_records_;
    parked_bytes_ += bytes;
    update_backpressure();
}

void relay_session::request_scan(const std::string& topic, topic_state& t) {
    t.state = topic_state::st::scanning;
    t.scan_id = ++next_scan_;
    // Until the producer has fenced its predecessors, a predecessor's open
    // transaction holds the topic's readable end back: scan afterwards.
    if (txn_ == txn_state::uninitialized || txn_ == txn_state::initializing) {
        deferred_scans_.push_back(topic);
        return;
    }
    cmds_.emplace_back(cmd::scan_topic{t.scan_id, topic, scan_from_, source_});
}

// The slot was made at this start, yet Kafka already holds events of this
// origin: the slot that wrote them is gone, and what was committed between
// its last confirmed position and the new slot's start was never decoded.
// Say so rather than carry on.
void relay_session::slot_gap_found(std::string_view topic, lsn newest, event_time now) {
    if (slot_gap_checked_) return;
    slot_gap_checked_ = true;
    metrics_.slot_gaps.inc();
    const std::string what = "replication slot " + cfg_.slot + " was created at this start, but topic " +
                             std::string(topic) + " already holds records of this source up to commit LSN " +
                             lsn_text(newest) + ": events committed between then and " + lsn_text(scan_from_) +
                             " (the new slot's start) may be missing";
    if (!cfg_.accept_slot_gap) {
        // The slot made at this start goes again, so that every start meets
        // the same gap until an operator accepts it.
        drop_slot_on_exit_ = true;
        fail(exit_code::slot, what + "; the slot made at this start is dropped again. Reconcile them (e.g. re-insert "
                                     "them from the outbox table), then start with --accept-slot-gap",
             now);
        return;
    }
    note(cmd::note::level::warn, "event=slot_gap_accepted reason=" + log_quoted(what));
}

// Records tell which topics to check; with a new slot there may be none for
// a long time, so the topics the template can reach are looked at at once.
void relay_session::maybe_probe_gap() {
    if (!slot_created_ || slot_gap_checked_ || gap_probe_sent_) return;
    if (txn_ == txn_state::uninitialized || txn_ == txn_state::initializing) return;
    gap_probe_sent_ = true;
    std::vector<std::pair<std::string, std::string>> affixes;
    for (const outbox_mapper& m : mappers_) affixes.push_back(m.topic_affixes());
    if (message_mapper_) affixes.push_back(message_mapper_->topic_affixes());
    std::sort(affixes.begin(), affixes.end());
    affixes.erase(std::unique(affixes.begin(), affixes.end()), affixes.end());
    cmds_.emplace_back(cmd::probe_gap{std::move(affixes), source_});
}

void relay_session::on_gap_probe(bool failed, bool found, lsn newest, std::string_view topic, std::string_view message,
                                 event_time now) {
    now_ = now;
    if (stream_ != stream_state::live || slot_gap_checked_) return;
    if (failed) {
        note(cmd::note::level::warn, "event=gap_probe_failed reason=" + log_quoted(message) + " retry_after_ms=1000");
        gap_probe_sent_ = false;
        gap_probe_retry_at_ = now.mono + milliseconds{1000};
        return;
    }
    if (found) {
        slot_gap_found(topic, newest, now);
        return;
    }
    slot_gap_checked_ = true;  // nothing of this origin anywhere: a first start
    note(cmd::note::level::info, "event=gap_probe_clean slot=" + cfg_.slot);
}

void relay_session::begin_scans() {
    for (const std::string& topic : std::exchange(deferred_scans_, {})) {
        auto it = topics_.find(topic);
        if (it == topics_.end() || it->second.state != topic_state::st::scanning) continue;
        cmds_.emplace_back(cmd::scan_topic{it->second.scan_id, topic, scan_from_, source_});
    }
}

void relay_session::on_scan_done(std::uint64_t scan_id, scan_outcome outcome, event_time now) {
    now_ = now;
    released_.clear();
    dead_letters_.clear();
    if (stream_ != stream_state::live) return;
    auto it = std::find_if(topics_.begin(), topics_.end(), [&](const auto& kv) {
        return kv.second.state == topic_state::st::scanning && kv.second.scan_id == scan_id;
    });
    if (it == topics_.end()) return;  // a scan of a stream that is gone
    topic_state& t = it->second;
    switch (outcome.status) {
        case scan_outcome::kind::ok:
            // The slot was made at this start, yet Kafka already holds events
            // of this origin: the slot that wrote them is gone, and what was
            // committed between its last confirmed position and the new
            // slot's start was never decoded. Say so rather than carry on.
            if (slot_created_ && outcome.own_records_seen && !slot_gap_checked_) {
                slot_gap_found(it->first, outcome.newest_own, now);
                if (phase_ == session_phase::stopping || phase_ == session_phase::stopped) return;
            }
            note_progress();
            t.present = std::move(outcome.present);
            t.max_present = t.present.max_commit_lsn();
            t.state = topic_state::st::ready;
            t.failures = 0;
            release_parked(t);
            return;
        case scan_outcome::kind::transient: {
            ++t.failures;
            milliseconds delay = scan_retry_floor;
            for (unsigned i = 1; i < t.failures && delay < cfg_.reconnect_backoff_max; ++i) delay *= 2;
            delay = std::min(delay, std::max(scan_retry_floor, cfg_.reconnect_backoff_max));
            t.state = topic_state::st::retry_wait;
            t.retry_at = now.mono + delay;
            scan_retry_at_ = std::min(scan_retry_at_, t.retry_at);
            metrics_.scan_failures.inc();
            note(cmd::note::level::warn, "event=replay_scan_failed topic=" + it->first + " reason=" +
                                             log_quoted(outcome.message) + " attempt=" + std::to_string(t.failures) +
                                             " retry_after_ms=" + std::to_string(delay.count()) +
                                             " parked=" + std::to_string(t.parked.size()));
            return;
        }
        case scan_outcome::kind::permanent: {
            metrics_.scan_failures.inc();
            if (!cfg_.dead_letter_topic.empty() && it->first != cfg_.dead_letter_topic) {
                // Its records cannot be checked against what is there, nor
                // (most likely) written: they become dead letters.
                t.state = topic_state::st::dead;
                const bool auth = outcome.message.find("uthoriz") != std::string::npos;
                t.dead_reason = auth ? "topic_authorization" : "invalid_topic";
                t.dead_detail = outcome.message;
                note(cmd::note::level::warn, "event=topic_dead topic=" + it->first + " reason=" + t.dead_reason +
                                                 " detail=" + log_quoted(outcome.message));
                std::deque<parked_record> batch = std::exchange(t.parked, {});
                const std::string topic = it->first;
                for (parked_record& p : batch) {
                    --parked_records_;
                    parked_bytes_ -= p.bytes;
                    released_.push_back(std::move(p));
                    const parked_record& q = released_.back();
                    dead_letter(q.rec.get(), q.pos, topics_.at(topic).dead_reason, topics_.at(topic).dead_detail,
                                topic, q.txn);
                }
                update_backpressure();
                return;
            }
            const std::string id = t.parked.empty() ? "?" : event_id_of(t.parked.front().rec.get());
            fail(exit_code::record_rejected, "topic " + it->first + " cannot be read for the exactly-once check (" +
                                                 outcome.message + "); first waiting event_id=" + id +
                                                 "; nothing at or after it is confirmed",
                 now);
            return;
        }
    }
}

// The topic's scan is in: its parked records go out in order, minus those
// the scan found already delivered.
void relay_session::release_parked(topic_state& t) {
    std::deque<parked_record> batch = std::exchange(t.parked, {});
    released_.reserve(released_.size() + batch.size());
    bool moved = false;
    for (parked_record& p : batch) {
        --parked_records_;
        parked_bytes_ -= p.bytes;
        if (!t.present.empty() && p.pos.commit_lsn <= t.max_present && t.present.contains(p.pos)) {
            metrics_.duplicates_skipped.inc();
            moved = tracker_.ack(p.txn) || moved;
            continue;
        }
        released_.push_back(std::move(p));
        const parked_record& q = released_.back();
        produce_now(q.rec.get(), q.pos, q.txn, q.bytes);
    }
    if (moved) confirmed_moved(now_);
    update_backpressure();
    arm_idle_commit();
    maybe_finish_drain(now_);
}

void relay_session::on_delivery(record_tag tag, const delivery& d, event_time now) {
    now_ = now;
    released_.clear();
    dead_letters_.clear();
    // A report of a producer that was replaced: its records were purged and
    // are resent from the confirmed position.
    if ((tag >> tag_shift) != producer_epoch_) return;
    if (in_flight_records_ > 0) --in_flight_records_;
    in_flight_bytes_ -= std::min(in_flight_bytes_, d.bytes);
    const auto txn = static_cast<checkpoint_tracker::txn_id>(tag & tag_txn_mask);
    switch (d.status) {
        case delivery_status::ok: {
            metrics_.records_acked.inc();
            const auto ts = metrics_.topic(d.topic);
            ts.records->inc();
            ts.bytes->inc(d.bytes);
            // An ack is proof of a working broker connection, sooner than the next statistics.
            broker_link_ = broker_link::up;
            note_progress();
            fatal_in_a_row_ = 0;
            producer_backoff_ = milliseconds{0};
            // In a Kafka transaction a record counts once the transaction commits.
            if (txn_ != txn_state::off)
                txn_acked_.push_back(txn);
            else if (tracker_.ack(txn))
                confirmed_moved(now);
            update_backpressure();
            maybe_finish_drain(now);
            maybe_reconnect(now);
            return;
        }
        case delivery_status::permanent: {
            metrics_.records_failed.inc();
            if (phase_ == session_phase::stopping || phase_ == session_phase::stopped) return;
            const std::size_t cap = batch_cap_ != 0 ? batch_cap_ : default_batch_size_;
            if (d.why == refusal::too_large && !d.local && d.bytes < cap) {
                shrink_batches(d.bytes, now);
                return;
            }
            // A producer being replaced: everything not confirmed is sent again.
            if (phase_ == session_phase::producer_restart) return;
            auto pos = position_of(d.rec);
            const bool is_dead_letter = !cfg_.dead_letter_topic.empty() && d.topic == cfg_.dead_letter_topic;
            // A broker refused a record of an open Kafka transaction: the
            // transaction must be aborted. Remember the record, start over
            // from the confirmed position, and send it to the dead-letter
            // topic when it comes again.
            if (txn_ != txn_state::off && !d.local && pos && !cfg_.dead_letter_topic.empty() && !is_dead_letter) {
                poison_[*pos] = poison{std::string(refusal_reason(d.why)), std::string(d.error), std::string(d.topic)};
                restart_producer("a record of the Kafka transaction was refused: " + std::string(d.error), now);
                return;
            }
            if (!cfg_.dead_letter_topic.empty() && pos && !is_dead_letter) {
                dead_letter(d.rec, *pos, refusal_reason(d.why), std::string(d.error), d.topic, txn);
                return;
            }
            // Too large even for the dead-letter topic: it goes there without its value.
            if (is_dead_letter && pos && d.why == refusal::too_large && !d.rec.find(header_dlq_value_bytes)) {
                std::string reason = "record_too_large";
                for (const header& h : d.rec.headers)
                    if (h.name == header_dlq_reason) reason = std::string(h.value);
                std::string intended;
                for (const header& h : d.rec.headers)
                    if (h.name == header_dlq_topic) intended = std::string(h.value);
                std::string detail = std::string(d.error);
                for (const header& h : d.rec.headers)
                    if (h.name == header_dlq_detail) detail = std::string(h.value);
                dead_letter(d.rec, *pos, reason, detail, intended, txn, /*without_value=*/true);
                return;
            }
            const std::string id = d.event_id.empty() ? std::string("?") : std::string(d.event_id);
            fail(exit_code::record_rejected,
                 std::string(is_dead_letter ? "the dead-letter topic refused a dead letter for good: "
                                            : "Kafka refused a record for good: ") +
                     std::string(d.error) + " (" + std::string(refusal_reason(d.why)) + ") topic=" +
                     std::string(d.topic) + " event_id=" + id +
                     "; nothing at or after its transaction is confirmed. " + std::string(refusal_fix(d.why)),
                 now);
            return;
        }
        case delivery_status::transient:
            metrics_.records_failed.inc();
            // Despite message.timeout.ms=0 (a purge, a full queue): the
            // record is resent from the confirmed position by a new producer.
            // In a transaction, a record failing as purged or in an erroneous
            // state is the aftermath of another one's refusal, not a fault.
            restart_producer("delivery failed: " + std::string(d.error), now, /*fault=*/txn_ == txn_state::off);
            if (phase_ == session_phase::producer_restart || phase_ == session_phase::stopped ||
                phase_ == session_phase::stopping)
                maybe_finish_drain(now);
            return;
    }
}

// ---------------------------------------------------------------- flow control

void relay_session::update_backpressure() {
    const std::size_t records = in_flight_records_ + parked_records_ + txn_wait_.size();
    const std::size_t bytes = in_flight_bytes_ + parked_bytes_ + txn_wait_bytes_;
    const bool over = records >= cfg_.max_inflight_records || bytes >= cfg_.max_inflight_bytes;
    // Resume only below 90% so that reading does not flap on every report.
    const bool under = records <= cfg_.max_inflight_records / 10 * 9 && bytes <= cfg_.max_inflight_bytes / 10 * 9;
    if (over && !backpressure_) {
        backpressure_ = true;
        apply_reading();
    } else if (under && backpressure_) {
        backpressure_ = false;
        apply_reading();
    }
    metrics_.inflight_records.set(static_cast<double>(records));
    metrics_.inflight_bytes.set(static_cast<double>(bytes));
    metrics_.parked_records.set(static_cast<double>(parked_records_ + txn_wait_.size()));
    metrics_.pending_txns.set(static_cast<double>(tracker_.pending_txns()));
    // The stall clock of /readyz starts when records begin to be pending.
    if (prev_pending_ == 0 && records > 0) note_progress();
    prev_pending_ = records;
}

void relay_session::apply_reading() {
    metrics_.backpressure_active.set(backpressure_ ? 1 : 0);
    if (stream_ != stream_state::live) return;
    const bool want_paused = backpressure_ || phase_ == session_phase::draining || phase_ == session_phase::stopping;
    if (want_paused == paused_) return;
    paused_ = want_paused;
    if (paused_) {
        cmds_.emplace_back(cmd::pause_reading{});
    } else {
        // Nothing could be heard while paused: the silence clock restarts.
        last_heard_ = now_.mono;
        probe_sent_ = false;
        cmds_.emplace_back(cmd::resume_reading{});
    }
}

void relay_session::confirmed_moved(event_time now) {
    metrics_.confirmed_lsn.set(static_cast<double>(tracker_.confirmed().value()));
    for (std::int64_t ts : tracker_.take_confirmed_commit_times())
        metrics_.commit_to_ack.observe(seconds_since_pg_commit(ts, now.wall_us));
    status_dirty_ = true;
    maybe_send_status(now);
}

void relay_session::maybe_send_status(event_time now) {
    if (status_dirty_ && now.mono >= last_status_ + confirm_gap) send_status(now, false);
}

void relay_session::send_status(event_time now, bool reply_requested) {
    if (stream_ != stream_state::live) return;
    const lsn flush = tracker_.confirmed();
    cmds_.emplace_back(cmd::send_status{std::max(received_, flush), flush, reply_requested});
    last_status_ = now.mono;
    status_dirty_ = false;
    last_sent_flush_ = flush;
    metrics_.status_updates_sent.inc();
    metrics_.received_lsn.set(static_cast<double>(received_.value()));
}

}  // namespace outbox
