#pragma once
// Per-transaction accounting of records in flight -> the LSN that may be
// confirmed to Postgres (ARCHITECTURE.md invariants 1 and 2).
//
// Transactions are opened and committed in WAL order. Records are acked in
// any order. The confirmed LSN is the end_lsn of the newest committed
// transaction T such that T and every earlier transaction have no record
// left unacked. When nothing is open and nothing is in flight, a keepalive's
// walEnd may be confirmed.
//
// Bounded bookkeeping: only transactions with records get an entry. A
// committed transaction without records (other tables, messages, empty
// transactions) just moves the confirmable end of the entry before it, so
// any number of them behind one pending record costs nothing: the number of
// entries never exceeds the records in flight plus one.
#include "outbox_relay/lsn.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

namespace outbox {

class checkpoint_tracker {
public:
    using txn_id = std::uint64_t;

    // `start` is the position the stream starts from (the slot's confirmed
    // position); confirmed() never goes below it.
    explicit checkpoint_tracker(lsn start = {}) noexcept;

    // Opens a transaction (pgoutput Begin); `commit_ts` is its commit time
    // (µs since 2000-01-01), reported back by take_confirmed_commit_times().
    // Aborts if one is already open.
    void begin_txn(lsn final_lsn, std::int64_t commit_ts);

    // Counts one more record of the open transaction as in flight. Returns the
    // id to pass to ack(). Aborts if no transaction is open.
    txn_id add_record();

    // Closes the open transaction (pgoutput Commit) with its end_lsn. Returns
    // true when confirmed() moved (the transaction had nothing in flight and
    // nothing before it did). Aborts if none is open or end_lsn is 0/0.
    bool commit_txn(lsn end_lsn);

    // One record of transaction `id` was acknowledged by Kafka. Returns true
    // when confirmed() moved. Aborts on an id that has nothing in flight.
    bool ack(txn_id id);

    // Keepalive walEnd: confirmed when idle (no open txn, nothing in flight).
    // Returns true when confirmed() moved.
    bool on_keepalive(lsn wal_end);

    // Drops the open, uncommitted transaction (stream lost mid-transaction);
    // its records stay counted until acked but it will never be confirmed.
    void abandon_open_txn() noexcept;

    // Marks transaction `first` and every later one (the open one included)
    // as never to be confirmed: their records stay counted until acked (or
    // given up with ack()), and the watermark stops before `first`. Used when
    // records of those transactions are dropped unsent (parked records of a
    // lost stream): the server resends them all after the reconnect.
    void abandon_from(txn_id first) noexcept;

    // Commit times of the transactions with records that the last moves of
    // confirmed() passed, oldest first; cleared by the call.
    std::vector<std::int64_t> take_confirmed_commit_times();

    // Commit time (µs since 2000-01-01) of the oldest transaction with
    // records that is not confirmed yet (abandoned ones excluded: they are
    // resent and counted again); nullopt when there is none. For the lag in
    // seconds.
    std::optional<std::int64_t> oldest_pending_commit_ts() const noexcept;

    lsn confirmed() const noexcept { return confirmed_; }
    bool idle() const noexcept { return !open_ && in_flight_ == 0; }
    bool has_open_txn() const noexcept { return open_; }
    std::size_t in_flight_records() const noexcept { return in_flight_; }
    // Entries kept: transactions with records not yet confirmed (plus at most
    // one abandoned or folded marker).
    std::size_t pending_txns() const noexcept { return txns_.size(); }

private:
    struct txn {
        txn_id id;
        lsn end_lsn;               // confirmable once this and every earlier entry is done
        std::int64_t commit_ts;
        std::size_t pending = 0;
        bool committed = false;
        bool abandoned = false;
        bool has_records = false;
    };
    bool advance();

    std::deque<txn> txns_;
    txn_id next_id_ = 1;
    bool open_ = false;
    bool open_has_entry_ = false;
    lsn open_final_lsn_;
    std::int64_t open_commit_ts_ = 0;
    std::size_t in_flight_ = 0;
    lsn confirmed_;
    std::vector<std::int64_t> confirmed_commit_ts_;
};

}  // namespace outbox
