// The relay shell: I/O in, session events; session commands, I/O out.
//
// Every rule lives in relay_session (src/core/relay_session.cpp). This file
// only owns the I/O objects (one replication stream at a time, one producer,
// the tail-scan workers, the metrics endpoint, one timer), turns what they
// report into session events, and executes the session's commands in order.
// Callbacks that could arrive while commands are being executed (a stream
// closing inside send_status) are posted, so events never nest.
#include "outbox_relay/io/relay.hpp"

#include "outbox_relay/io/http_server.hpp"
#include "outbox_relay/io/kafka_sink.hpp"
#include "outbox_relay/io/kafka_tail_scanner.hpp"
#include "outbox_relay/io/log.hpp"
#include "outbox_relay/io/outbox_cleanup.hpp"
#include "outbox_relay/io/pg_setup.hpp"
#include "outbox_relay/io/replication_stream.hpp"
#include "outbox_relay/io/slot_monitor.hpp"
#include "outbox_relay/kafka_stats.hpp"
#include "outbox_relay/relay_session.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <chrono>

namespace outbox::io {
namespace {

constexpr std::string_view mod = "relay";

event_time now() {
    return {std::chrono::steady_clock::now(),
            std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
                .count()};
}

template <class... F>
struct overloaded : F... {
    using F::operator()...;
};

stream_end to_stream_end(stream_error_kind k) {
    switch (k) {
        case stream_error_kind::connection_lost: return stream_end::connection_lost;
        case stream_error_kind::slot_busy: return stream_end::slot_busy;
        case stream_error_kind::fatal: return stream_end::fatal;
    }
    return stream_end::fatal;
}

}  // namespace

struct relay::impl {
    impl(boost::asio::io_context& ioc, relay_config cfg)
        : ioc_(ioc), cfg_(std::move(cfg)), session_(cfg_), timer_(ioc), progress_timer_(ioc),
          http_refused_(session_.metrics().registry.add_counter(
              "outbox_relay_http_connections_refused_total",
              "HTTP connections closed at once because metrics-max-connections were open.")),
          http_open_(session_.metrics().registry.add_gauge("outbox_relay_http_connections_open",
                                                          "HTTP connections open on metrics-listen.")) {}

    ~impl() {
        cleaner_.reset();  // joins its thread: nothing it holds outlives us
        // Scans first (they post to the loop), then the stream, then the producer.
        slots_.reset();
        scans_.reset();
        stream_.reset();
        sink_.reset();
    }

    // ---- lifecycle -------------------------------------------------------

    void start() {
        start_cleanup();
        try {
            make_sink();
        } catch (const std::exception& e) {
            throw start_error(exit_code::kafka_config, e.what());
        }
        tail_scan_options so;
        so.brokers = cfg_.brokers;
        so.properties = cfg_.kafka;
        so.deadline = cfg_.scan_timeout;
        scans_ = std::make_unique<tail_scan_pool>(ioc_, std::move(so));
        if (!cfg_.metrics_listen.empty()) {
            http_server_handlers h;
            h.metrics_text = [this] { return metrics_text(); };
            h.ready = [this]() -> std::pair<bool, std::string> {
                return session_.readiness_at(std::chrono::steady_clock::now());
            };
            http_server_limits lim;
            lim.max_connections = cfg_.metrics_max_connections;
            try {
                http_ = std::make_unique<http_server>(ioc_, cfg_.metrics_listen, std::move(h), lim);
            } catch (const std::exception& e) {
                throw start_error(exit_code::metrics_listen, e.what());
            }
            log::info(mod, "event=metrics_listening port={}", http_->local_port());
        }
        if (cfg_.slot_status_interval.count() > 0) {
            slot_monitor_options mo;
            mo.conninfo = cfg_.postgres;
            mo.password = cfg_.postgres_password;
            mo.slot = cfg_.slot;
            mo.interval = cfg_.slot_status_interval;
            slots_ = std::make_unique<slot_monitor>(ioc_, std::move(mo), [this](const slot_status& st) {
                if (stopped_) return;
                // One line when the figures stop (or start again) coming.
                if (st.ok != slot_status_ok_)
                    (st.ok ? log::info(mod, "event=slot_status_ok slot={}", cfg_.slot)
                           : log::warn(mod, "event=slot_status_failed slot={} reason={}", cfg_.slot,
                                       log::quote(st.error)));
                slot_status_ok_ = st.ok;
                session_.on_slot_status(st, now());
                execute();
            });
        }
        arm_progress();
        session_.start(now());
        execute();
    }

    // The rate-limited info line an operator reads in the log: how fast
    // events go, how far behind the relay is, what is in flight.
    void arm_progress() {
        if (cfg_.progress_interval.count() <= 0) return;
        progress_timer_.expires_after(cfg_.progress_interval);
        progress_timer_.async_wait([this](boost::system::error_code ec) {
            if (ec || stopped_) return;
            const auto t = std::chrono::steady_clock::now();
            auto& m = session_.metrics();
            session_.refresh_gauges(now());
            const double secs = std::chrono::duration<double>(t - progress_at_).count();
            const std::uint64_t acked = m.records_acked.value();
            const double rate = secs > 0 && progress_at_ != std::chrono::steady_clock::time_point{}
                                    ? static_cast<double>(acked - progress_acked_) / secs
                                    : 0;
            log::info(mod,
                      "event=progress phase={} events_per_s={:.1f} acked_total={} inflight={} lag_bytes={:.0f} "
                      "lag_seconds={:.3f} confirmed={} slot_retained_wal_bytes={:.0f} kafka_brokers_up={:.0f}",
                      phase_name(session_.phase()), rate, acked, session_.in_flight_records(), m.lag_bytes.value(),
                      m.lag_seconds.value(), session_.confirmed().to_string(), m.slot_retained_wal.value(),
                      m.kafka_brokers_up.value());
            progress_at_ = t;
            progress_acked_ = acked;
            arm_progress();
        });
    }

    void shutdown() {
        if (stopped_) return;
        session_.on_shutdown(now());
        execute();
    }

    // ---- the one loop of the shell: run what the session asked for -------

    void execute() {
        // Commands may be queued while others run (none are today: every
        // callback that could nest is posted); the loop takes them all.
        while (!session_.commands().empty()) {
            batch_.clear();
            batch_.swap(session_.commands());
            for (command& c : batch_) std::visit([this](auto& x) { run(x); }, c);
        }
        batch_.clear();
        arm_timer();
    }

    void run(cmd::start_stream& c) {
        stream_options so;
        so.conninfo = cfg_.postgres;
        so.password = cfg_.postgres_password;
        so.slot = cfg_.slot;
        so.publication = cfg_.publication;
        so.tcp_user_timeout_ms = static_cast<int>(cfg_.pg_silence_timeout.count());
        const std::uint64_t gen = ++stream_gen_;
        stream_handlers h;
        h.on_started = [this, gen](const stream_info& info) {
            if (gen != stream_gen_) return;
            source_id src;
            src.system_id = info.system_id;
            src.timeline = info.timeline;
            src.slot = cfg_.slot;
            src.database = info.database;
            session_.on_stream_started(info.slot_confirmed, src, now());
            execute();
        };
        h.on_copy_data = [this, gen](std::string_view frame) {
            if (gen != stream_gen_) return;
            session_.on_copy_data(frame, now());
            execute();
        };
        h.on_idle = [this, gen] {
            if (gen != stream_gen_) return;
            session_.on_stream_idle(now());
            execute();
        };
        // Posted: the stream may report its end from inside send_status.
        h.on_closed = [this, gen](const stream_error& e) {
            boost::asio::post(ioc_, [this, gen, kind = e.kind, msg = e.message, sqlstate = e.sqlstate] {
                if (gen != stream_gen_ || stopped_) return;
                bury_stream();
                session_.on_stream_closed(to_stream_end(kind),
                                          sqlstate.empty() ? msg : msg + " sqlstate=" + sqlstate, now());
                execute();
            });
        };
        bury_stream();  // at most one stream: a dropped one never lingers
        stream_ = std::make_unique<replication_stream>(ioc_, so, std::move(h));
        stream_->start(c.from);
    }

    void run(cmd::close_stream&) {
        ++stream_gen_;  // whatever the old stream still reports is stale
        bury_stream();
    }

    void run(cmd::stop_stream&) {
        if (!stream_) {
            boost::asio::post(ioc_, [this] { stream_stopped(); });
            return;
        }
        ++stream_gen_;
        stream_->stop([this] { boost::asio::post(ioc_, [this] { stream_stopped(); }); });
    }

    void stream_stopped() {
        if (stopped_) return;
        bury_stream();
        session_.on_stream_stopped(now());
        execute();
    }

    void run(cmd::send_status& c) {
        if (cleaner_) cleaner_->set_confirmed(session_.confirmed());
        if (!stream_) return;
        walsender::status_update s;
        s.write = c.write;
        s.flush = c.flush;
        s.apply = c.flush;
        s.client_time = walsender::to_pg_time(std::chrono::system_clock::now());
        s.reply_requested = c.reply_requested;
        stream_->send_status(s);
        if (c.flush != last_logged_flush_) {
            log::debug("checkpoint", "event=confirmed lsn={}", c.flush.to_string());
            const auto t = std::chrono::steady_clock::now();
            if (t - last_confirm_log_ >= std::chrono::seconds{10}) {
                log::info("checkpoint", "event=confirmed lsn={}", c.flush.to_string());
                last_confirm_log_ = t;
            }
            last_logged_flush_ = c.flush;
        }
    }

    void run(cmd::pause_reading&) {
        if (stream_) stream_->pause_reading();
    }
    void run(cmd::resume_reading&) {
        if (stream_) stream_->resume_reading();
    }

    void run(cmd::produce& c) {
        // No producer only after one could not be recreated; the stop that
        // follows is already posted, and nothing unacked is ever confirmed.
        if (sink_) sink_->produce(c.rec, c.tag);
    }

    void run(cmd::scan_topic& c) {
        // The producer fetches the topic's metadata meanwhile, so the parked
        // records leave at once when the scan is in.
        if (sink_) sink_->prepare_topic(c.topic);
        scans_->submit(c.topic, c.from, c.source,
                       [this, id = c.id, topic = c.topic, from = c.from](std::optional<tail_scan_result> r,
                                                                        std::optional<tail_scan_error> e) {
                           if (stopped_) return;
                           scan_outcome o;
                           if (r) {
                               log::info(mod,
                                         "event=replay_window_scanned topic={} from={} partitions={} "
                                         "records_read={} present={} took_ms={}",
                                         topic, from.to_string(), r->partitions, r->records_read, r->present.size(),
                                         r->took.count());
                               o.present = std::move(r->present);
                               o.own_records_seen = r->own_records_seen;
                               o.newest_own = r->newest_own;
                           } else {
                               o.status = e->permanent ? scan_outcome::kind::permanent : scan_outcome::kind::transient;
                               o.message = e->what();
                           }
                           session_.on_scan_done(id, std::move(o), now());
                           execute();
                       });
    }

    // Transactions: init and commit block on the brokers, so the sink runs
    // them on its worker; the outcome comes back as an event.
    void txn_call(txn_op op, void (kafka_sink::*call)(kafka_sink::txn_done)) {
        if (!sink_) return;
        log::debug(mod, "event=txn_call op={}", op == txn_op::init ? "init" : "commit");
        (sink_.get()->*call)([this, op](txn_result r) {
            if (stopped_) return;
            log::debug(mod, "event=txn_done op={} status={} message={}", op == txn_op::init ? "init" : "commit",
                       static_cast<int>(r.status), log::quote(r.message));
            session_.on_txn_done(op, to_outcome(r), now());
            execute();
        });
    }
    static txn_outcome to_outcome(const txn_result& r) {
        txn_outcome o;
        o.fenced = r.fenced;
        o.message = r.message;
        switch (r.status) {
            case txn_result::kind::ok: o.status = txn_outcome::kind::ok; break;
            case txn_result::kind::retriable: o.status = txn_outcome::kind::retriable; break;
            case txn_result::kind::abortable: o.status = txn_outcome::kind::abortable; break;
            case txn_result::kind::fatal: o.status = txn_outcome::kind::fatal; break;
        }
        return o;
    }
    void run(cmd::init_txn&) { txn_call(txn_op::init, &kafka_sink::init_transactions); }
    void run(cmd::commit_txn&) { txn_call(txn_op::commit, &kafka_sink::commit_transaction); }
    void run(cmd::begin_txn&) {
        if (!sink_) return;
        log::debug(mod, "event=txn_begin");
        std::string why = sink_->begin_transaction();
        if (why.empty()) return;
        // Posted: the session is not re-entered while its commands run.
        boost::asio::post(ioc_, [this, why = std::move(why)] {
            if (stopped_) return;
            txn_outcome o;
            o.status = txn_outcome::kind::fatal;
            o.message = why;
            session_.on_txn_done(txn_op::begin, o, now());
            execute();
        });
    }

    void run(cmd::probe_gap& c) {
        scans_->submit_probe(c.affixes, c.source,
                             [this](std::optional<gap_probe_result> r, std::optional<tail_scan_error> e) {
                                 if (stopped_) return;
                                 if (r)
                                     log::info(mod, "event=gap_probe topics={} found={} newest={} topic={}",
                                               r->topics_probed, r->found, r->newest_own.to_string(), r->topic);
                                 session_.on_gap_probe(!r, r && r->found, r ? r->newest_own : lsn{},
                                                       r ? std::string_view(r->topic) : std::string_view(),
                                                       e ? std::string_view(e->what()) : std::string_view(), now());
                                 execute();
                             });
    }

    void run(cmd::recreate_producer& c) {
        sink_.reset();
        try {
            make_sink(c.batch_size);
        } catch (const std::exception& e) {
            // Posted: the session is not re-entered while its commands run.
            boost::asio::post(ioc_, [this, why = std::string(e.what())] {
                if (stopped_) return;
                session_.on_producer_fatal(producer_fault::config, why, now());
                execute();
            });
        }
    }

    void run(cmd::note& c) {
        switch (c.lvl) {
            case cmd::note::level::info: log::info(mod, "{}", c.text); break;
            case cmd::note::level::warn: log::warn(mod, "{}", c.text); break;
            case cmd::note::level::error: log::error(mod, "{}", c.text); break;
        }
    }

    void run(cmd::stop& c) {
        exit_code_ = to_int(c.code);
        stopped_ = true;
        timer_.cancel();
        progress_timer_.cancel();
        slots_.reset();
        if (http_) http_->stop();
        if (cleaner_) cleaner_->request_stop();
        ++stream_gen_;
        bury_stream();
        scans_.reset();
        if (c.drop_slot) drop_slot();
        log::info(mod, "event=stopped exit_code={} confirmed={}", exit_code_, session_.confirmed().to_string());
        // Purges what is still queued: nothing more is confirmed for it.
        boost::asio::post(ioc_, [this] { sink_.reset(); });
    }

    // Drops the slot (the session's decision, at exit: blocking is fine). Its
    // walsender may take a moment to let go of it after the stream stopped.
    void drop_slot() {
        const auto r = drop_replication_slot(cfg_, std::chrono::seconds(10));
        if (r.empty())
            log::warn(mod, "event=slot_dropped slot={}", cfg_.slot);
        else
            log::error(mod, "event=slot_drop_failed slot={} reason={}", cfg_.slot, log::quote(r));
    }

    // ---- I/O objects -----------------------------------------------------

    // Opt-in outbox cleanup (--cleanup-after; main checked its tables before
    // pg_setup): its own thread; its reports reach the metrics on the loop.
    void start_cleanup() {
        if (cfg_.cleanup_after.count() == 0) return;
        auto report = [this, alive = std::weak_ptr<int>(alive_)](const cleanup_report& r) {
            boost::asio::post(ioc_, [this, alive, r] {
                if (alive.lock()) apply_cleanup_report(session_.metrics(), r);
            });
        };
        cleaner_ = std::make_unique<outbox_cleanup>(cleanup_options_of(cfg_), std::move(report));
    }

    void make_sink(std::size_t batch_size = 0) {
        sink_config sc;
        sc.brokers = cfg_.brokers;
        sc.properties = cfg_.kafka;
        // The session shrinks batches a broker refused as too large for a topic.
        if (batch_size > 0) sc.properties["batch.size"] = std::to_string(batch_size);
        if (session_.transactional()) sc.transactional_id = transactional_id_;
        // librdkafka's own queue holds more than the session lets be in
        // flight, so backpressure is the session's (stop reading) and
        // librdkafka never refuses a record as queue-full first.
        sc.queue_max_messages = std::min<std::size_t>(cfg_.max_inflight_records + 10'000, 10'000'000);
        sc.queue_max_kbytes = std::min<std::size_t>(cfg_.max_inflight_bytes / 1024 + 65'536, 2'097'151);
        // Statistics and "all brokers down" feed the metrics and /readyz.
        // Reports of a replaced producer do not reach the session: the sink
        // that sent them is gone before its successor is made.
        sc.on_stats = [this](std::string_view json) {
            if (stopped_) return;
            auto st = parse_kafka_stats(json);
            if (!st) {
                log::warn(mod, "event=kafka_stats_unreadable reason={}", log::quote(st.error().describe()));
                return;
            }
            session_.on_kafka_stats(*st, now());
            execute();
        };
        sc.on_all_brokers_down = [this](std::string_view reason) {
            if (stopped_) return;
            session_.on_kafka_brokers_down(reason, now());
            execute();
        };
        sink_ = std::make_unique<kafka_sink>(
            ioc_, sc,
            [this](const delivery_report& r) {
                if (stopped_) return;
                delivery d;
                d.status = r.status;
                d.bytes = r.bytes;
                d.error = r.error;
                d.topic = r.topic;
                d.event_id = r.event_id;
                d.why = r.why;
                d.local = r.local;
                d.rec = r.rec;
                session_.on_delivery(r.tag, d, now());
                execute();
            },
            [this](producer_fault fault, const std::string& reason) {
                if (stopped_) return;
                session_.on_producer_fatal(fault, reason, now());
                execute();
            });
    }

    // Closes and drops the current stream now. Safe inside one of its own
    // callbacks: the stream keeps its state alive until that returns and
    // calls nothing more (replication_stream.hpp).
    void bury_stream() { stream_.reset(); }

    // The timer fires at the session's next deadline. It is re-armed only
    // when the deadline moved earlier; firing early is harmless (on_tick
    // does nothing yet and the timer is armed again).
    void arm_timer() {
        if (stopped_) return;
        const steady_time d = session_.next_deadline();
        if (d >= armed_) return;
        armed_ = d;
        timer_.expires_at(d);
        timer_.async_wait([this](boost::system::error_code ec) {
            if (ec || stopped_) return;
            armed_ = steady_time::max();
            session_.on_tick(now());
            execute();
        });
    }

    std::string metrics_text() {
        session_.refresh_gauges(now());
        if (http_) {
            const std::uint64_t refused = http_->refused_connections();
            if (refused > http_refused_.value()) http_refused_.inc(refused - http_refused_.value());
            http_open_.set(static_cast<double>(http_->open_connections()));
        }
        return session_.metrics().registry.render();
    }

    boost::asio::io_context& ioc_;
    relay_config cfg_;
    relay_session session_;
    std::vector<command> batch_;
    std::string transactional_id_;
    std::unique_ptr<kafka_sink> sink_;
    std::unique_ptr<replication_stream> stream_;
    std::uint64_t stream_gen_ = 0;
    std::unique_ptr<tail_scan_pool> scans_;
    std::unique_ptr<http_server> http_;
    std::unique_ptr<slot_monitor> slots_;
    bool slot_status_ok_ = true;
    std::unique_ptr<outbox_cleanup> cleaner_;
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);  // posted cleanup reports check it
    boost::asio::steady_timer timer_;
    boost::asio::steady_timer progress_timer_;
    std::chrono::steady_clock::time_point progress_at_{};
    std::uint64_t progress_acked_ = 0;
    counter& http_refused_;
    gauge& http_open_;
    steady_time armed_ = steady_time::max();
    lsn last_logged_flush_;
    std::chrono::steady_clock::time_point last_confirm_log_{};
    bool stopped_ = false;
    int exit_code_ = 0;
};

int run_guarded(const std::function<int()>& body) noexcept {
    try {
        return body();
    } catch (const std::exception& e) {
        log::error("main", "event=fatal exit_code=1 reason={}", log::quote(e.what()));
    } catch (...) {
        log::error("main", "event=fatal exit_code=1 reason=unknown_exception");
    }
    return to_int(exit_code::runtime);
}

relay::relay(boost::asio::io_context& ioc, relay_config cfg) : impl_(std::make_unique<impl>(ioc, std::move(cfg))) {}
relay::~relay() = default;
void relay::start() { impl_->start(); }
void relay::set_slot_created(bool created) { impl_->session_.set_slot_created(created); }
void relay::set_transactional_id(std::string id) { impl_->transactional_id_ = std::move(id); }
void relay::shutdown() { impl_->shutdown(); }
int relay::exit_code() const noexcept { return impl_->exit_code_; }
bool relay::stopped() const noexcept { return impl_->stopped_ && !impl_->sink_; }
std::string relay::metrics_text() const { return impl_->metrics_text(); }

}  // namespace outbox::io
