#include "outbox_relay/io/relay.hpp"

#include "outbox_relay/checkpoint.hpp"
#include "outbox_relay/dedupe.hpp"
#include "outbox_relay/io/http_server.hpp"
#include "outbox_relay/io/kafka_sink.hpp"
#include "outbox_relay/io/kafka_tail_scanner.hpp"
#include "outbox_relay/io/log.hpp"
#include "outbox_relay/io/replication_stream.hpp"
#include "outbox_relay/metrics.hpp"
#include "outbox_relay/outbox.hpp"
#include "outbox_relay/pgoutput.hpp"
#include "outbox_relay/relation_cache.hpp"
#include "outbox_relay/walsender.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <charconv>
#include <deque>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace outbox::io {
namespace {

using clock = std::chrono::steady_clock;
constexpr const char* mod = "relay";

// One Kafka record as the relay sends it: the mapped row plus its position.
struct record_view {
    std::string_view topic, key, value, id, type, commit_lsn, seq;
    bool key_null = false, value_null = false;
};

// A record that could not be handed to librdkafka yet (its queue was full):
// owned copies, since the replication payload dies with the callback.
struct parked_record {
    std::string topic, key, value, id, type, commit_lsn, seq;
    bool key_null = false, value_null = false;
    checkpoint_tracker::txn_id txn = 0;

    record_view view() const { return {topic, key, value, id, type, commit_lsn, seq, key_null, value_null}; }
};

}  // namespace

struct relay::impl {
    impl(boost::asio::io_context& ioc, relay_config cfg)
        : ioc_(ioc),
          cfg_(std::move(cfg)),
          mapper_(outbox_mapper::create(cfg_.routing).value()),
          decoder_(pgoutput::decoder_options{1, false}),
          status_timer_(ioc),
          reconnect_timer_(ioc),
          drain_timer_(ioc) {}

    // ---- lifecycle -------------------------------------------------------

    void start() {
        make_sink();
        if (!cfg_.metrics_listen.empty()) {
            http_server_handlers h;
            h.metrics_text = [this] { return metrics_text(); };
            h.ready = [this]() -> std::pair<bool, std::string> {
                if (stream_ && stream_->streaming()) return {true, "streaming"};
                return {false, state_};
            };
            http_ = std::make_unique<http_server>(ioc_, cfg_.metrics_listen, std::move(h));
            log::info(mod, "event=metrics_listening port={}", http_->local_port());
        }
        arm_status_timer();
        connect(lsn{});
    }

    void shutdown() {
        if (shutting_down_) return;
        shutting_down_ = true;
        log::info(mod, "event=shutdown_requested open_txn={} in_flight={}", tracker_.has_open_txn(),
                  sink_ ? sink_->in_flight() : 0);
        reconnect_timer_.cancel();
        // Finish the transaction being received first, so that its records can
        // be confirmed and a restart does not replay them.
        if (!tracker_.has_open_txn()) {
            begin_drain();
            return;
        }
        // ... but not for longer than the drain timeout: a huge transaction
        // can take a while to arrive, and SIGTERM must end in bounded time.
        drain_timer_.expires_after(cfg_.drain_timeout);
        drain_timer_.async_wait([this](boost::system::error_code ec) {
            if (ec || draining_) return;
            log::warn(mod, "event=open_txn_not_finished action=stop_reading confirmed={}",
                      tracker_.confirmed().to_string());
            begin_drain();
        });
    }

    void begin_drain() {
        if (draining_) return;
        draining_ = true;
        if (stream_) stream_->pause_reading();
        drain_timer_.expires_after(cfg_.drain_timeout);
        drain_timer_.async_wait([this](boost::system::error_code ec) {
            if (ec) return;
            log::warn(mod, "event=drain_timeout in_flight={} confirmed={}", sink_ ? sink_->in_flight() : 0,
                      tracker_.confirmed().to_string());
            finish();
        });
        maybe_finish_drain();
    }

    void maybe_finish_drain() {
        if (!draining_ || finished_) return;
        if (sink_ && sink_->in_flight() > 0) return;
        finish();
    }

    // Final status update, close the stream, let the io_context run out of work.
    void finish() {
        if (finished_) return;
        finished_ = true;
        drain_timer_.cancel();
        status_timer_.cancel();
        reconnect_timer_.cancel();
        if (http_) http_->stop();
        log::info(mod, "event=stopping confirmed={} in_flight={}", tracker_.confirmed().to_string(),
                  sink_ ? sink_->in_flight() : 0);
        if (stream_ && stream_->streaming()) {
            send_status(false);
            stream_->stop([this] { boost::asio::post(ioc_, [this] { closed(); }); });
        } else {
            boost::asio::post(ioc_, [this] { closed(); });
        }
    }

    void closed() {
        stream_.reset();
        sink_.reset();
        stopped_ = true;
        log::info(mod, "event=stopped exit_code={}", exit_code_);
    }

    // Ends the process with a non-zero code: nothing more is produced or
    // confirmed past what is already confirmed.
    void fail(relay_exit code, const std::string& why) {
        if (finished_) return;
        log::error(mod, "event=fatal exit_code={} reason={}", static_cast<int>(code), log::quote(why));
        exit_code_ = static_cast<int>(code);
        failed_ = true;
        // Do not wait for acks of records after the failure: stop now. What is
        // acked so far is still confirmed by the final status update.
        draining_ = true;
        finish();
    }

    // ---- Kafka side ------------------------------------------------------

    void make_sink() {
        sink_config sc;
        sc.brokers = cfg_.brokers;
        sc.properties = cfg_.kafka;
        // librdkafka's own queue must hold at least what the relay lets be in
        // flight, so that backpressure is ours (pause reading) rather than
        // QUEUE_FULL; the user may still override both.
        sc.properties.try_emplace("queue.buffering.max.messages",
                                  std::to_string(std::min<std::size_t>(cfg_.max_inflight_records + 10'000, 10'000'000)));
        sc.properties.try_emplace("queue.buffering.max.kbytes",
                                  std::to_string(std::min<std::size_t>(cfg_.max_inflight_bytes / 1024 + 65'536, 2'097'151)));
        sink_ = std::make_unique<kafka_sink>(
            ioc_, sc, [this](const delivery_report& r) { on_report(r); },
            [this](const std::string& reason) { on_producer_fatal(reason); });
    }

    void on_report(const delivery_report& r) {
        auto txn = static_cast<checkpoint_tracker::txn_id>(r.tag);
        if (r.err != 0) {
            metrics_.records_failed.inc();
            if (r.permanent) {
                fail(relay_exit::record_rejected,
                     "Kafka rejected a record for good: " + r.error + " topic=" + std::string(r.topic) +
                         " event_id=" + (r.event_id.empty() ? std::string("?") : r.event_id) +
                         "; nothing at or after its transaction is confirmed");
                return;
            }
            // A transient failure reported despite message.timeout.ms=0 (purge,
            // fatal state): restart from the last confirmed position.
            log::warn(mod, "event=delivery_failed err={} txn={}", log::quote(r.error), txn);
            restart_producer("delivery failed: " + r.error);
            return;
        }
        metrics_.records_acked.inc();
        if (tracker_.ack(txn)) on_confirmed_moved();
        retry_parked();
        update_backpressure();
        maybe_finish_drain();
        if (waiting_for_drain_to_reconnect_ && sink_->in_flight() == 0) {
            waiting_for_drain_to_reconnect_ = false;
            connect(tracker_.confirmed());
        }
    }

    void on_producer_fatal(const std::string& reason) {
        log::error(mod, "event=producer_fatal reason={}", log::quote(reason));
        restart_producer(reason);
    }

    // Fatal producer error: stop streaming, drop the producer (purging what it
    // holds), and restart the stream from the last confirmed LSN with a new
    // producer. Records acked but not yet confirmed will be produced again.
    void restart_producer(const std::string& why) {
        if (restarting_producer_ || finished_) return;
        restarting_producer_ = true;
        metrics_.producer_recreated.inc();
        log::warn(mod, "event=producer_restart reason={} confirmed={}", log::quote(why),
                  tracker_.confirmed().to_string());
        ignore_frames_ = true;
        if (stream_) stream_->pause_reading();
        // Defer: we may be inside a librdkafka callback.
        boost::asio::post(ioc_, [this] {
            stream_.reset();
            sink_.reset();
            warmed_topics_.clear();
            parked_.clear();
            unconfirmed_commits_.clear();
            tracker_ = checkpoint_tracker(tracker_.confirmed());
            make_sink();
            restarting_producer_ = false;
            if (shutting_down_) {
                finish();
                return;
            }
            connect(tracker_.confirmed());
        });
    }

    // ---- Postgres side ---------------------------------------------------

    void connect(lsn from) {
        if (finished_ || shutting_down_) return;
        state_ = "connecting";
        stream_options so;
        so.conninfo = cfg_.postgres;
        so.slot = cfg_.slot;
        so.publication = cfg_.publication;
        stream_handlers h;
        h.on_started = [this](lsn slot_confirmed) { on_started(slot_confirmed); };
        h.on_xlog = [this](const walsender::xlog_data& x) { on_xlog(x); };
        h.on_keepalive = [this](const walsender::keepalive& k) { on_keepalive(k); };
        h.on_closed = [this](const stream_error& e) { on_closed(e); };
        decoder_ = pgoutput::decoder(pgoutput::decoder_options{1, false});
        relations_.clear();
        ignore_frames_ = false;
        in_txn_ = false;
        stream_ = std::make_unique<replication_stream>(ioc_, so, std::move(h));
        start_lsn_ = from;
        stream_->start(from);
    }

    void on_started(lsn slot_confirmed) {
        state_ = "streaming";
        backoff_ = std::chrono::milliseconds{0};
        if (slot_busy_logged_) slot_busy_logged_ = false;
        lsn start = std::max(slot_confirmed, start_lsn_);
        // A new session replays from `start`: what earlier sessions (or an
        // earlier process) already delivered at or after it is found per topic
        // by reading back the topic's tail before the first record to it.
        scan_from_ = start;
        scanned_topics_.clear();
        if (tracker_.confirmed() < start && tracker_.idle() && tracker_.pending_txns() == 0)
            tracker_ = checkpoint_tracker(start);
        log::info(mod, "event=streaming slot={} slot_confirmed={} start={}", cfg_.slot,
                  slot_confirmed.to_string(), start.to_string());
        // Tell the server at once what we have confirmed (it may be ahead of
        // the slot when the previous connection dropped before an update).
        send_status(false);
        if (draining_) stream_->pause_reading();
        update_backpressure();
    }

    void on_closed(const stream_error& e) {
        // Defer destruction: we are inside the stream's callback.
        boost::asio::post(ioc_, [this] { stream_.reset(); });
        tracker_.abandon_open_txn();
        in_txn_ = false;
        if (finished_) return;
        switch (e.kind) {
            case stream_error_kind::fatal:
                fail(relay_exit::slot, "replication stream failed: " + e.message +
                                          (e.sqlstate.empty() ? "" : " sqlstate=" + e.sqlstate));
                return;
            case stream_error_kind::slot_busy:
                state_ = "waiting for slot";
                if (!slot_busy_logged_) {
                    log::info(mod, "event=slot_busy slot={} msg={} action=retrying", cfg_.slot, log::quote(e.message));
                    slot_busy_logged_ = true;
                }
                schedule_reconnect(std::chrono::milliseconds{1000});
                return;
            case stream_error_kind::connection_lost:
                state_ = "reconnecting";
                metrics_.pg_reconnects.inc();
                log::warn(mod, "event=connection_lost msg={} confirmed={}", log::quote(e.message),
                          tracker_.confirmed().to_string());
                if (shutting_down_) {
                    begin_drain();
                    return;
                }
                backoff_ = std::clamp(backoff_ * 2, std::chrono::milliseconds{200}, cfg_.reconnect_backoff_max);
                schedule_reconnect(backoff_);
                return;
        }
    }

    void schedule_reconnect(std::chrono::milliseconds delay) {
        if (shutting_down_) {
            begin_drain();
            return;
        }
        reconnect_timer_.expires_after(delay);
        reconnect_timer_.async_wait([this](boost::system::error_code ec) {
            if (ec || finished_) return;
            // Records of the lost stream still in flight: restart only once
            // they are acked, from the position they let us confirm, so the
            // server does not send them again.
            if (sink_ && sink_->in_flight() > 0) {
                waiting_for_drain_to_reconnect_ = true;
                return;
            }
            connect(tracker_.confirmed());
        });
    }

    void on_keepalive(const walsender::keepalive& k) {
        if (ignore_frames_ || finished_) return;
        received_ = std::max(received_, k.wal_end);
        if (tracker_.on_keepalive(k.wal_end)) on_confirmed_moved();
        if (k.reply_requested) send_status(false);
    }

    void on_xlog(const walsender::xlog_data& x) {
        // Frames still buffered in a stream being dropped, or after a fatal
        // error, must not touch the tracker: their transaction was abandoned.
        if (ignore_frames_ || finished_) return;
        received_ = std::max(received_, x.wal_end);
        auto msg = decoder_.decode(x.payload);
        if (!msg) {
            const auto& site = decoder_.last_error_site();
            fail(relay_exit::protocol, "undecodable pgoutput message at lsn=" + x.data_start.to_string() + " tag='" +
                                          std::string(1, site.tag ? site.tag : '?') + "' field=" + site.field +
                                          " offset=" + std::to_string(site.offset) + ": " + msg.error().message());
            return;
        }
        std::visit([&](const auto& m) { handle(m, x); }, *msg);
    }

    void handle(const pgoutput::begin& b, const walsender::xlog_data&) {
        current_txn_ = tracker_.begin_txn(b.final_lsn);
        in_txn_ = true;
        current_commit_lsn_ = b.final_lsn.to_string();
        current_final_lsn_ = b.final_lsn;
        current_commit_ts_ = b.commit_ts;
        seq_ = 0;
    }

    void handle(const pgoutput::commit& c, const walsender::xlog_data&) {
        if (!in_txn_) {
            fail(relay_exit::protocol, "Commit without Begin at lsn=" + c.commit_lsn.to_string());
            return;
        }
        in_txn_ = false;
        metrics_.transactions.inc();
        if (seq_ > 0) unconfirmed_commits_.push_back({c.end_lsn, current_commit_ts_});
        lsn before = tracker_.confirmed();
        tracker_.commit_txn(c.end_lsn);
        if (tracker_.confirmed() != before) on_confirmed_moved();
        if (shutting_down_) begin_drain();
    }

    void handle(const pgoutput::relation& r, const walsender::xlog_data& x) {
        const auto& rel = relations_.apply(r);
        if (mapper_.is_outbox(rel)) {
            mapping_error err;
            if (!mapper_.check_relation(rel, &err)) {
                fail(relay_exit::outbox_schema, "outbox relation " + rel.nspname + "." + rel.relname +
                                                   " lacks mapped column \"" + err.column +
                                                   "\" at lsn=" + x.data_start.to_string());
            }
        }
    }

    void handle(const pgoutput::insert& ins, const walsender::xlog_data& x) {
        auto rel = relations_.check(ins.relid, ins.new_tuple);
        if (!rel) {
            fail(relay_exit::protocol, "Insert for relid " + std::to_string(ins.relid) + " at lsn=" +
                                          x.data_start.to_string() + ": " + rel.error().message());
            return;
        }
        if (!mapper_.is_outbox(**rel)) {
            metrics_.ignored_other_table.inc();
            return;
        }
        if (!in_txn_) {
            fail(relay_exit::protocol, "Insert outside a transaction at lsn=" + x.data_start.to_string());
            return;
        }
        mapping_error err;
        auto rec = mapper_.map(**rel, ins.new_tuple, &err);
        if (!rec) {
            fail(relay_exit::outbox_schema, "outbox row at lsn=" + x.data_start.to_string() + " column \"" +
                                               err.column + "\": " + rec.error().message());
            return;
        }
        char seqbuf[24];
        auto [end, ec] = std::to_chars(seqbuf, seqbuf + sizeof seqbuf, seq_);
        (void)ec;
        std::string_view seq_text(seqbuf, static_cast<std::size_t>(end - seqbuf));
        const auto seq = static_cast<std::uint32_t>(seq_++);
        if (cfg_.delivery == delivery_mode::at_least_once && warmed_topics_.insert(rec->topic).second)
            sink_->warm_topic(rec->topic, std::chrono::milliseconds{2000});
        if (cfg_.delivery == delivery_mode::exactly_once) {
            const position_set* present = present_in(rec->topic);
            if (present == nullptr) return;  // scan failed; the stream restarts
            if (!present->empty() && present->contains(record_position{current_final_lsn_, seq})) {
                metrics_.duplicates_skipped.inc();
                return;
            }
        }
        auto txn = tracker_.add_record();
        metrics_.records_produced.inc();

        const record_view r{rec->topic, rec->key, rec->value, rec->id, rec->type, current_commit_lsn_,
                            seq_text, rec->key_null, rec->value_null};
        // Records queue behind parked ones, so that per-key order holds.
        if (!parked_.empty() || !produce(r, txn)) park(r, txn);
    }

    void handle(const pgoutput::update&, const walsender::xlog_data&) { metrics_.ignored_update.inc(); }
    void handle(const pgoutput::delete_&, const walsender::xlog_data&) { metrics_.ignored_delete.inc(); }
    void handle(const pgoutput::truncate&, const walsender::xlog_data&) { metrics_.ignored_truncate.inc(); }
    void handle(const pgoutput::message&, const walsender::xlog_data&) { metrics_.ignored_message.inc(); }
    void handle(const pgoutput::origin&, const walsender::xlog_data&) {}
    void handle(const pgoutput::type&, const walsender::xlog_data&) {}

    // Streaming and two-phase messages: never requested (proto_version 1), so
    // receiving one means the server and we disagree about the protocol.
    template <class M>
    void handle(const M&, const walsender::xlog_data& x) {
        fail(relay_exit::protocol, "unexpected streaming/two-phase message at lsn=" + x.data_start.to_string());
    }

    // ---- exactly-once: what the replayed window already delivered --------

    // The positions >= scan_from_ already in `topic`, scanning its tail on
    // first use in this session (before anything of this session is produced
    // to it). Blocks the loop for the scan (bounded by its deadline; measured
    // in the README). On failure restarts the stream and returns nullptr.
    const position_set* present_in(const std::string& topic) {
        if (auto it = scanned_topics_.find(topic); it != scanned_topics_.end()) return &it->second;
        tail_scan_options o;
        o.brokers = cfg_.brokers;
        o.properties = cfg_.kafka;
        try {
            auto r = scan_topic_tail(o, topic, scan_from_);
            // The producer has not seen this topic yet either: fetch its
            // metadata now rather than wait for librdkafka's 1 s timer.
            sink_->warm_topic(topic, std::chrono::milliseconds{2000});
            log::info(mod, "event=replay_window_scanned topic={} from={} partitions={} records_read={} present={} took_ms={}",
                      topic, scan_from_.to_string(), r.partitions, r.records_read, r.present.size(), r.took.count());
            return &scanned_topics_.emplace(topic, std::move(r.present)).first->second;
        } catch (const std::exception& e) {
            log::warn(mod, "event=replay_scan_failed topic={} reason={} action=restart_stream", topic,
                      log::quote(e.what()));
            restart_stream();
            return nullptr;
        }
    }

    // Drops the current stream (inside its callback: deferred) and reconnects
    // after a backoff, from the position acks allow.
    void restart_stream() {
        tracker_.abandon_open_txn();
        in_txn_ = false;
        ignore_frames_ = true;
        if (stream_) stream_->pause_reading();
        boost::asio::post(ioc_, [this] { stream_.reset(); });
        backoff_ = std::clamp(backoff_ * 2, std::chrono::milliseconds{500}, cfg_.reconnect_backoff_max);
        schedule_reconnect(backoff_);
    }

    // ---- backpressure ----------------------------------------------------

    // Hands one record to the producer. False when librdkafka's queue is full
    // (the caller parks it); a producer in fatal state restarts the stream
    // (the record is replayed then) and counts as handed over.
    bool produce(const record_view& r, checkpoint_tracker::txn_id txn) {
        const kafka_header headers[] = {
            {header_id, r.id}, {header_type, r.type}, {header_commit_lsn, r.commit_lsn}, {header_seq, r.seq}};
        const kafka_message m{r.topic, r.key, r.key_null, r.value, r.value_null, headers};
        switch (sink_->produce(m, txn)) {
            case kafka_sink::produce_result::ok:
                update_backpressure();
                return true;
            case kafka_sink::produce_result::queue_full:
                return false;
            case kafka_sink::produce_result::fatal:
                restart_producer("producer in fatal state");
                return true;
        }
        return true;
    }

    void park(const record_view& r, checkpoint_tracker::txn_id txn) {
        parked_.push_back(parked_record{std::string(r.topic), std::string(r.key), std::string(r.value),
                                        std::string(r.id), std::string(r.type), std::string(r.commit_lsn),
                                        std::string(r.seq), r.key_null, r.value_null, txn});
        if (stream_) stream_->pause_reading();
        set_backpressure(true);
    }

    void retry_parked() {
        while (!parked_.empty() && sink_ && !restarting_producer_) {
            if (!produce(parked_.front().view(), parked_.front().txn)) return;
            parked_.pop_front();
        }
    }

    void update_backpressure() {
        if (!sink_) return;
        bool over = !parked_.empty() || sink_->in_flight() >= cfg_.max_inflight_records ||
                    sink_->bytes_in_flight() >= cfg_.max_inflight_bytes;
        // Resume only below 90% so that we do not flap on every report.
        bool under = parked_.empty() && sink_->in_flight() <= cfg_.max_inflight_records * 9 / 10 &&
                     sink_->bytes_in_flight() <= cfg_.max_inflight_bytes / 10 * 9;
        if (over && !backpressure_) set_backpressure(true);
        else if (under && backpressure_) set_backpressure(false);
        metrics_.inflight_records.set(static_cast<double>(sink_->in_flight()));
        metrics_.inflight_bytes.set(static_cast<double>(sink_->bytes_in_flight()));
    }

    void set_backpressure(bool on) {
        backpressure_ = on;
        metrics_.backpressure_active.set(on ? 1 : 0);
        if (!stream_) return;
        if (on) {
            stream_->pause_reading();
        } else if (!draining_) {
            stream_->resume_reading();
        }
    }

    // ---- status updates --------------------------------------------------

    void on_confirmed_moved() {
        metrics_.confirmed_lsn.set(static_cast<double>(tracker_.confirmed().value()));
        if (!unconfirmed_commits_.empty()) {
            auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
            while (!unconfirmed_commits_.empty() && unconfirmed_commits_.front().end_lsn <= tracker_.confirmed()) {
                metrics_.commit_to_ack.observe(seconds_since_pg_commit(unconfirmed_commits_.front().commit_ts, now));
                unconfirmed_commits_.pop_front();
            }
        }
        // Coalesce: many acks served in one poll produce one update.
        if (status_posted_) return;
        status_posted_ = true;
        boost::asio::post(ioc_, [this] {
            status_posted_ = false;
            if (tracker_.confirmed() != last_sent_flush_) send_status(false);
        });
    }

    void send_status(bool reply_requested) {
        if (!stream_ || !stream_->streaming()) return;
        walsender::status_update s;
        s.flush = tracker_.confirmed();
        s.write = std::max(received_, s.flush);
        s.apply = s.flush;
        s.client_time = walsender::to_pg_time(std::chrono::system_clock::now());
        s.reply_requested = reply_requested;
        stream_->send_status(s);
        metrics_.status_updates_sent.inc();
        metrics_.received_lsn.set(static_cast<double>(received_.value()));
        if (s.flush != last_sent_flush_) {
            log::debug("checkpoint", "event=confirmed lsn={}", s.flush.to_string());
            auto now = clock::now();
            if (now - last_confirm_log_ >= std::chrono::seconds{10}) {
                log::info("checkpoint", "event=confirmed lsn={}", s.flush.to_string());
                last_confirm_log_ = now;
            }
        }
        last_sent_flush_ = s.flush;
    }

    // At least every status_interval, also while backpressure stopped reading
    // (invariant 5): otherwise wal_sender_timeout ends the connection.
    void arm_status_timer() {
        status_timer_.expires_after(cfg_.status_interval);
        status_timer_.async_wait([this](boost::system::error_code ec) {
            if (ec || finished_) return;
            send_status(false);
            arm_status_timer();
        });
    }

    std::string metrics_text() const { return metrics_.registry.render(); }

    // ---- state -----------------------------------------------------------

    boost::asio::io_context& ioc_;
    relay_config cfg_;
    outbox_mapper mapper_;
    pgoutput::decoder decoder_;
    relation_cache relations_;
    checkpoint_tracker tracker_;
    relay_metrics metrics_;
    std::unique_ptr<kafka_sink> sink_;
    std::unique_ptr<replication_stream> stream_;
    std::unique_ptr<http_server> http_;
    boost::asio::steady_timer status_timer_, reconnect_timer_, drain_timer_;

    // Committed transactions with records, oldest first, until confirmed:
    // their commit time feeds the commit-to-ack latency histogram.
    struct pending_commit {
        lsn end_lsn;
        std::int64_t commit_ts;  // Postgres commit timestamp (pg µs)
    };
    std::deque<pending_commit> unconfirmed_commits_;
    std::deque<parked_record> parked_;
    lsn scan_from_;
    std::unordered_map<std::string, position_set> scanned_topics_;
    std::unordered_set<std::string> warmed_topics_;  // at-least-once: metadata fetched

    checkpoint_tracker::txn_id current_txn_ = 0;
    std::string current_commit_lsn_;
    lsn current_final_lsn_;
    std::int64_t current_commit_ts_ = 0;
    std::uint64_t seq_ = 0;
    bool in_txn_ = false;

    lsn received_, last_sent_flush_, start_lsn_;
    clock::time_point last_confirm_log_{};
    std::chrono::milliseconds backoff_{0};
    std::string state_ = "starting";
    bool status_posted_ = false;
    bool backpressure_ = false;
    bool shutting_down_ = false, draining_ = false, finished_ = false, failed_ = false;
    bool restarting_producer_ = false;
    bool waiting_for_drain_to_reconnect_ = false;
    bool slot_busy_logged_ = false;
    bool ignore_frames_ = false;
    bool stopped_ = false;
    int exit_code_ = 0;
};

relay::relay(boost::asio::io_context& ioc, relay_config cfg) : impl_(std::make_unique<impl>(ioc, std::move(cfg))) {}
relay::~relay() = default;
void relay::start() { impl_->start(); }
void relay::shutdown() { impl_->shutdown(); }
int relay::exit_code() const noexcept { return impl_->exit_code_; }
bool relay::stopped() const noexcept { return impl_->stopped_; }
std::string relay::metrics_text() const { return impl_->metrics_text(); }

}  // namespace outbox::io
