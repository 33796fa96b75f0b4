#pragma once
// Shared arrange/act helpers of the numbered integration scenarios: the stack
// environment, a small libpq wrapper, a per-scenario fixture (own table, slot,
// publication and topic prefix, unique per run, cleaned up at the end), an
// outbox writer that keeps a per-aggregate `seq` increasing in commit order,
// and relay start/stop with readiness = slot held by a walsender. Test-side code: failures
// to set up throw std::runtime_error (doctest reports them as errors).
#include "checker.hpp"
#include "relay_process.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace outbox::it::scn {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// OUTBOX_TEST_PG, OUTBOX_TEST_BROKERS and OUTBOX_STACK_SH from
// `eval "$(integration/stack.sh env)"`. Throws (the test fails, never skips)
// when one is missing.
struct stack_env {
    std::string pg;
    std::string brokers;
    std::string stack_sh;
};
const stack_env& env();

// Runs `stack.sh <verb>` and throws if it exits non-zero. Blocking.
void stack(const std::string& verb);

// Brings a stopped stack server back on scope exit while `down` is set, so a
// REQUIRE failing mid-outage does not leave Postgres or Kafka stopped for the
// next scenario. `start_verb` is the stack.sh verb that restarts it
// ("pg-start", "kafka-start"). The destructor runs it on the test thread and
// swallows its failure (it may run during unwinding).
struct restart_guard {
    std::string start_verb;
    bool down = false;
    ~restart_guard();
};

// Polls `pred` every `poll` until it returns true (-> true) or `deadline`
// passes (-> false). Exceptions from `pred` count as "not yet".
bool wait_until(clock::time_point deadline, const std::function<bool()>& pred,
                std::chrono::milliseconds poll = 100ms);

// One libpq connection (not thread-safe; one per thread). Throws on errors.
class pg {
public:
    explicit pg(const std::string& conninfo);
    ~pg();
    pg(const pg&) = delete;
    pg& operator=(const pg&) = delete;

    // Runs `sql` (simple protocol, may hold several statements); returns the
    // rows of the last result, NULL as nullopt.
    std::vector<std::vector<std::optional<std::string>>> query(const std::string& sql);
    void exec(const std::string& sql) { query(sql); }
    // First column of the first row; nullopt for NULL or no row.
    std::optional<std::string> scalar(const std::string& sql);

private:
    void* conn_;
};

// Slot state as pg_replication_slots shows it.
struct slot_state {
    bool exists = false;
    std::optional<int> active_pid;
    std::optional<std::uint64_t> confirmed_flush;  // as a byte position
};

// Per-scenario names and objects. The constructor creates the outbox table
// (id uuid, aggregatetype, aggregateid, type, payload jsonb, seq bigint); the
// relay creates publication and slot. The destructor stops relays it started,
// drops slot, publication and table (set OUTBOX_IT_KEEP=1 to keep them).
class scenario {
public:
    explicit scenario(const std::string& tag);  // e.g. "01_round_trip"
    ~scenario();
    scenario(const scenario&) = delete;
    scenario& operator=(const scenario&) = delete;

    const std::string& prefix() const { return prefix_; }      // it01_<time>_<pid>_<n>
    const std::string& table() const { return table_; }        // public.<prefix>
    const std::string& slot() const { return slot_; }
    const std::string& publication() const { return publication_; }
    std::string topic_template() const { return prefix_ + ".event.{aggregatetype}"; }
    std::string topic(const std::string& aggregatetype) const { return prefix_ + ".event." + aggregatetype; }

    // The `run ...` arguments for this scenario's relay, plus `extra`.
    std::vector<std::string> relay_args(const std::vector<std::string>& extra = {}) const;
    // Starts a relay (log under the build dir, stem = tag + name). The
    // returned reference lives as long as the scenario.
    relay_process& start_relay(const std::string& name = "relay", const std::vector<std::string>& extra = {});
    // A relay run with exactly `args` (the whole command line after the
    // program name), for scenarios that configure routing themselves.
    relay_process& start_relay_with(const std::string& name, std::vector<std::string> args);
    // The same, reaching Postgres through `conninfo` (e.g. a tcp_proxy's port).
    relay_process& start_relay_via(const std::string& conninfo, const std::string& name,
                                   const std::vector<std::string>& extra = {});
    // Waits until a walsender holds the slot (the relay streams). On timeout
    // throws with the relay's log tail.
    void wait_streaming(relay_process& r, std::chrono::seconds timeout = 60s);

    slot_state slot_info();
    std::uint64_t current_wal();                 // pg_current_wal_lsn() as bytes
    pg& admin() { return admin_; }

    // Runs the checker against this scenario's table and topics.
    check::check_report check(std::chrono::seconds wait, bool allow_duplicates,
                              std::optional<std::size_t> expect, bool lsn_headers = true,
                              std::vector<std::string> capture_ids = {});

    // One line for doctest MESSAGE/INFO: the relay log tail.
    static std::string log_tail(const relay_process& r, std::size_t bytes = 4000) { return r.log_text(bytes); }

private:
    std::string tag_, prefix_, table_, slot_, publication_;
    pg admin_;
    std::vector<std::unique_ptr<relay_process>> relays_;
};

// Writes outbox rows in transactions. Aggregate i is `<agg_prefix>-i`, its
// aggregatetype is `type<i % types>`, and its seq increases by one per row in
// commit order (one writer owns its aggregates). Not thread-safe itself; the
// background mode runs it on its own thread.
class outbox_writer {
public:
    outbox_writer(const std::string& conninfo, std::string table, std::string agg_prefix, int aggregates, int types);
    ~outbox_writer();

    // Commits one transaction of `n` rows; returns their ids. Throws on errors.
    std::vector<std::string> write_txn(std::size_t n);

    // Starts a thread that writes transactions with sizes cycling through
    // `sizes`, pausing `pause` between them, until stop() or `max_rows`.
    // With `ride_out_restarts`, a failed transaction (Postgres restarting) is
    // retried on a new connection for up to 60 s; since a lost COMMIT reply
    // leaves it unknown whether the rows went in, the row count and the seq
    // counters are then re-read from the table, which stays the truth.
    void start(std::vector<std::size_t> sizes, std::chrono::milliseconds pause, std::size_t max_rows,
               bool ride_out_restarts = false);
    // Reconnects and re-reads rows() and the per-aggregate seq from the table.
    void resync();
    std::size_t reconnects() const { return reconnects_.load(); }
    // Stops and joins the background thread; returns its error text, empty if none.
    std::string stop();
    bool background_done() const { return done_.load(); }

    std::size_t rows() const { return rows_.load(); }
    std::size_t txns() const { return txns_.load(); }

private:
    std::unique_ptr<pg> conn_;
    std::string conninfo_, table_, agg_prefix_;
    int aggregates_, types_;
    std::vector<std::int64_t> next_seq_;
    std::size_t next_agg_ = 0;
    std::atomic<std::size_t> rows_{0}, txns_{0}, reconnects_{0};
    std::atomic<bool> stop_{false}, done_{false};
    std::thread thread_;
    std::string error_;
};

// Parses "X/X" into a byte position; throws on bad text.
std::uint64_t parse_lsn(const std::string& text);
std::string format_lsn(std::uint64_t v);

}  // namespace outbox::it::scn
