#pragma once
// Opt-in outbox cleanup (--cleanup-after): deletes outbox rows whose
// transaction the relay has confirmed, once it committed longer ago than the
// retention, in bounded batches. It runs on its own thread over its own
// ordinary (non-replication) libpq connection, so it never blocks the relay's
// loop and a failure of it never stops relaying. Which rows may go, and when,
// is decided by the pure cleanup_plan (cleanup_plan.hpp, where the rule and
// its caveats are written down); this module takes the marks, feeds the plan
// the relay's confirmed position and runs the DELETEs:
//
//   DELETE FROM t WHERE ctid = ANY(ARRAY(
//       SELECT ctid FROM t WHERE age(xmin) > age($1::xid) LIMIT $2))
//
// one statement (one transaction) per batch, repeated until a batch deletes
// fewer than the limit, with a pause between batches. Plain tables only:
// ctid is only unique within one relation, so a partitioned outbox is
// refused at start-up (drop its old partitions instead).
#include "outbox_relay/exit_code.hpp"
#include "outbox_relay/lsn.hpp"
#include "outbox_relay/metrics.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace outbox {
struct relay_config;
}

namespace outbox::io {

struct cleanup_options {
    std::string conninfo;  // the relay's postgres conninfo (may hold a password: logged only redacted)
    std::string password;  // --postgres-password-file's content, or empty; never logged
    // (schema, table) of every outbox table, unquoted as configured.
    std::vector<std::pair<std::string, std::string>> tables;
    std::chrono::milliseconds retention{0};  // cleanup-after, within cleanup_after_min..max
    std::size_t batch = 10'000;              // rows per DELETE
    std::chrono::milliseconds reconnect_backoff_max{10'000};
    // Server-side bounds on every statement of the cleaner's connection, so
    // a lock or a huge scan cannot hold it forever; the client gives up on a
    // statement (and the connection) this much later still.
    std::chrono::milliseconds statement_timeout{300'000};
    std::chrono::milliseconds lock_timeout{10'000};
};

// The options for `cfg`: conninfo, retention, batch, backoff, and the
// outbox tables (every table route of cfg).
cleanup_options cleanup_options_of(const relay_config& cfg);

// What happened since the previous report (deltas), for the metrics.
struct cleanup_report {
    std::uint64_t deleted = 0;  // rows deleted
    std::uint64_t runs = 0;     // ticks completed (mark taken; its pass finished when one was usable)
    std::uint64_t errors = 0;   // failed ticks, statements or connection attempts
    // Seconds since the oldest kept mark was taken (the usable one when there
    // is one); unset when no mark is kept.
    std::optional<double> mark_lag_seconds;
};

// Adds `r` to the relay's cleanup metrics. Loop thread (metrics are loop-only).
void apply_cleanup_report(relay_metrics& m, const cleanup_report& r);

struct cleanup_check {
    exit_code failure = exit_code::ok;
    std::string message;  // one line: what is wrong and what to do
};

// Start-up check, blocking; main runs it before pg_setup, so a refused
// configuration creates no slot (which would hold WAL). Every existing table
// must be a plain table (a partitioned one is refused with exit_code::usage
// and a message naming it and saying to drop old partitions instead) that
// the role may DELETE from (else exit_code::privileges with the GRANT to
// run); a missing table is left to pg_setup to report. Logs a warning
// naming each publication that publishes deletes of a table: the cleaner's
// DELETEs reach its subscribers. Cannot connect: exit_code::pg_connect.
cleanup_check check_cleanup_tables(const cleanup_options& o);

class outbox_cleanup {
public:
    // Called on the cleaner's thread after each batch, tick and error. Must
    // not block (the relay posts it to its loop) and must stay callable
    // until the destructor has returned.
    using report_fn = std::function<void(const cleanup_report&)>;

    // Starts the cleaner thread at once. Nothing is deleted until
    // set_confirmed() has been called with a position at or past a mark
    // that is `retention` old, so a fresh cleaner waits at least that long.
    outbox_cleanup(cleanup_options o, report_fn report);
    // request_stop(), then joins the thread. Prompt: every wait of the
    // thread (connect, statement, pause) also watches the stop signal; a
    // DELETE cut off this way is one statement and either happens or not.
    ~outbox_cleanup();
    outbox_cleanup(const outbox_cleanup&) = delete;
    outbox_cleanup& operator=(const outbox_cleanup&) = delete;

    // The relay's confirmed position (Kafka acked every record below it).
    // Any thread, never blocks; a lower value than before is ignored.
    void set_confirmed(lsn confirmed) noexcept;

    // Asks the thread to stop; any thread, never blocks.
    void request_stop() noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace outbox::io
