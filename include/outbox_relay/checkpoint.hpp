#pragma once
// Per-transaction accounting of records in flight -> the LSN that may be
// confirmed to Postgres (ARCHITECTURE.md invariants 1 and 2).
//
// Transactions are opened and committed in WAL order on the loop thread.
// Records are acked in any order. The confirmed LSN is the end_lsn of the
// newest committed transaction T such that T and every earlier transaction
// have no record left unacked. When nothing is open and nothing is in flight,
// a keepalive's walEnd may be confirmed.
#include "outbox_relay/lsn.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>

namespace outbox {

class checkpoint_tracker {
public:
    using txn_id = std::uint64_t;

    // `start` is the position the stream starts from (the slot's confirmed
    // position); confirmed() never goes below it.
    explicit checkpoint_tracker(lsn start = {}) noexcept;

    // Opens a transaction (pgoutput Begin). Aborts if one is already open.
    txn_id begin_txn(lsn final_lsn);

    // Counts one more record of the open transaction as in flight. Returns the
    // id to pass to ack(). Aborts if no transaction is open.
    txn_id add_record();

    // Closes the open transaction (pgoutput Commit) with its end_lsn. May move
    // confirmed() when the transaction had no record in flight.
    void commit_txn(lsn end_lsn);

    // One record of transaction `id` was acknowledged by Kafka. Returns true
    // when confirmed() moved.
    bool ack(txn_id id);

    // Keepalive walEnd: confirmed when idle (no open txn, nothing in flight).
    // Returns true when confirmed() moved.
    bool on_keepalive(lsn wal_end);

    // Drops the open, uncommitted transaction (stream lost mid-transaction);
    // its records stay counted until acked but it will never be confirmed.
    void abandon_open_txn() noexcept;

    lsn confirmed() const noexcept { return confirmed_; }
    bool idle() const noexcept { return !open_ && in_flight_ == 0; }
    bool has_open_txn() const noexcept { return open_; }
    std::size_t in_flight_records() const noexcept { return in_flight_; }
    std::size_t pending_txns() const noexcept { return txns_.size(); }

private:
    struct txn {
        txn_id id;
        lsn final_lsn;
        lsn end_lsn;
        std::size_t pending = 0;
        bool committed = false;
    };
    bool advance();

    std::deque<txn> txns_;
    txn_id next_id_ = 1;
    bool open_ = false;
    std::size_t in_flight_ = 0;
    lsn confirmed_;
};

}  // namespace outbox
