#pragma once
// Opt-in outbox cleanup (--cleanup-after): which outbox rows the relay may
// delete, and when. Pure: no libpq, no clock of its own; the I/O side
// (io/outbox_cleanup.hpp) takes the marks and runs the DELETEs.
//
// The problem. A row carries no LSN, and its timestamp column says nothing
// about when its transaction committed (a transaction open for an hour commits
// an hour-old row right now). The relay only knows one position: `confirmed`,
// below which Kafka acknowledged every record. So the cleaner works with the
// xid horizon instead of row times:
//
//   every tick it takes a *mark* on an ordinary connection, in one statement:
//     SELECT pg_snapshot_xmin(pg_current_snapshot())::text, pg_current_wal_insert_lsn()
//   The statement's snapshot is taken when the statement starts, the LSN is
//   read while it runs, i.e. after it.
//   - Every transaction with an xid below the snapshot's xmin had finished
//     (committed or aborted) before the snapshot; a transaction inserts its
//     commit record before it leaves the proc array, so that record ends at
//     or before the insert position read afterwards (`at`).
//     pg_current_wal_insert_lsn, not pg_current_wal_lsn: with
//     synchronous_commit = off a finished transaction's commit record may be
//     inserted but not yet written, so the write position can lie before it.
//   - Once confirmed >= at, the walsender has sent every transaction that
//     committed before `at` and Kafka acked (or dead-lettered) its records.
//   - A row whose xmin precedes the mark's xmin was therefore delivered.
//     Rows of a transaction still open at the mark have xmin >= the mark's
//     xmin (subtransaction xids are above their parent's), so they are kept
//     however old they are.
//   The usable mark is the newest one with at <= confirmed AND taken <= now -
//   retention; rows are then deleted with
//     age(xmin) > age(mark.xmin32)
//   (both ages relative to the same reference within one statement). This is
//   wraparound-safe while both ages stay below 2^31: a row whose raw xmin is
//   more than 2^31 transactions old has a negative age and is left alone (it
//   is frozen by then; delete it by hand), and a mark too many transactions
//   old is refused (mark_xid_age_ok).
//
// The mark queue. Marks come in time order. Normally marks older than the
// retention become usable as soon as they are taken `retention` ago, so the
// queue holds about retention/tick + 1 of them. While confirmed stands still
// (Kafka down) no newer mark becomes usable and the queue grows; it is capped
// at capacity() = ceil(retention/tick) + 8 and, when full, the NEWEST
// candidate (the mark being added) is refused. The oldest marks are the ones
// that become usable first once confirmed moves again, so keeping them lets
// cleanup resume at once after the outage; dropping them instead would leave
// only marks whose `at` is far ahead of confirmed, and nothing could be
// deleted until the relay caught up past all of them. The price of refusing
// newer marks: after a long outage the first usable mark is older than it
// could be, so rows written meanwhile wait up to about one more retention
// before a fresh mark covers them. Never unsafe: a refused mark only delays.
//
// Marks live in memory only: after a restart nothing is deleted until a new
// mark is `retention` old.
#include "outbox_relay/errc.hpp"
#include "outbox_relay/lsn.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

namespace outbox {

using cleanup_clock = std::chrono::steady_clock;

// One mark: the horizon of one snapshot.
struct cleanup_mark {
    std::uint64_t xmin = 0;            // snapshot xmin as xid8 (epoch << 32 | xid)
    lsn at;                            // WAL insert position read after the snapshot
    cleanup_clock::time_point taken;   // when the mark was taken (steady clock)

    // The 32-bit xid the DELETE compares with (the row's xmin has no epoch).
    std::uint32_t xid32() const noexcept { return static_cast<std::uint32_t>(xmin & 0xffffffffu); }
    friend bool operator==(const cleanup_mark&, const cleanup_mark&) = default;
};

// Bounds of --cleanup-after. The upper bound keeps the mark queue small
// (30 days / 60 s ticks = 43,200 marks, about 1 MiB) and the mark's xid age
// well inside 2^31 for ordinary transaction rates.
inline constexpr std::chrono::milliseconds cleanup_after_min{1'000};
inline constexpr std::chrono::milliseconds cleanup_after_max{30LL * 24 * 3600 * 1000};

// Parses the --cleanup-after value: a whole number followed by one unit, s,
// m, h or d (`90s`, `15m`, `1h`, `2d`), from 1 s to 30 d. A bare number is
// refused (seconds or milliseconds? the unit is never guessed). "off" or ""
// mean disabled and yield 0 ms. Errors are errc::bad_config with
// field = "cleanup-after" and message = what is wrong.
result<std::chrono::milliseconds> parse_cleanup_after(std::string_view text);

// The canonical text of a retention, read back by parse_cleanup_after: the
// largest unit that divides it (`90s`, `15m`, `36h`, `2d`), "" for 0 (off).
std::string format_cleanup_after(std::chrono::milliseconds retention);

// How often the cleaner takes a mark and deletes: clamp(retention / 4, 1 s, 60 s).
std::chrono::milliseconds cleanup_tick(std::chrono::milliseconds retention) noexcept;

// A mark's xmin may be compared with rows' xmin through age() only while it
// is less than 2^31 transactions old; with a margin (2^26 xids for the time a
// pass takes) the cleaner refuses older marks. `next_xid` is the xid8 of
// pg_snapshot_xmax(pg_current_snapshot()) read just before the pass.
bool mark_xid_age_ok(std::uint64_t mark_xmin, std::uint64_t next_xid) noexcept;

// The mark queue and the rule of which mark is usable. One thread only.
class cleanup_plan {
public:
    // `retention` within [cleanup_after_min, cleanup_after_max].
    explicit cleanup_plan(std::chrono::milliseconds retention);

    std::chrono::milliseconds retention() const noexcept { return retention_; }
    std::chrono::milliseconds tick() const noexcept { return tick_; }
    // At most this many marks are queued: ceil(retention / tick) + 8.
    std::size_t capacity() const noexcept { return capacity_; }
    std::size_t size() const noexcept { return marks_.size(); }

    enum class add_result {
        added,
        refused_full,  // the queue is at capacity: the new (newest) mark is dropped
        reset,         // the mark went back in time, LSN or xid (another server, a restore):
                       // the old marks describe another history and were dropped first
    };
    // Queues a mark. Marks must come in order of `taken`.
    add_result add(const cleanup_mark& m);

    // The newest mark with at <= confirmed and taken <= now - retention, or
    // nullopt. Every mark older than it is dropped (it supersedes them); it
    // stays queued, so it is returned again until a newer one qualifies.
    // Marks are scanned oldest first and the scan stops at the first one that
    // does not qualify, so the answer itself always satisfies both conditions.
    std::optional<cleanup_mark> usable(lsn confirmed, cleanup_clock::time_point now);

    // The oldest queued mark: after usable() that is the usable one when there
    // is one. now - oldest()->taken is how far back the cleanup horizon is.
    std::optional<cleanup_mark> oldest() const;

    // A pass with `m` is needed unless one already completed with a mark of
    // the same xmin: after a complete pass no row with an xid below m.xmin is
    // left, and no such row can appear later (every xid below it had
    // finished), so running it again would only cost a scan of the table. An
    // idle database keeps its xmin, so an idle outbox costs no scans.
    bool pass_needed(const cleanup_mark& m) const noexcept;
    void pass_completed(const cleanup_mark& m) noexcept;

    // Forgets every mark (and the completed pass).
    void clear() noexcept;

private:
    std::chrono::milliseconds retention_;
    std::chrono::milliseconds tick_;
    std::size_t capacity_;
    std::deque<cleanup_mark> marks_;
    std::optional<cleanup_mark> completed_;
};

}  // namespace outbox
