#include "outbox_relay/checkpoint.hpp"

#include <cstdio>
#include <cstdlib>

namespace outbox {
namespace {

// A broken invariant means the relay could confirm WAL whose records never
// reached Kafka; stopping hard is the only safe answer (ARCHITECTURE.md
// "Errors"). stderr because pure code has no logger.
[[noreturn]] void die(const char* what) noexcept {
    std::fprintf(stderr, "checkpoint: invariant broken: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

}  // namespace

checkpoint_tracker::checkpoint_tracker(lsn start) noexcept : confirmed_(start) {}

checkpoint_tracker::txn_id checkpoint_tracker::begin_txn(lsn final_lsn) {
    if (open_) die("begin_txn while a transaction is open");
    txns_.push_back(txn{next_id_++, final_lsn, lsn{}, 0, false});
    open_ = true;
    return txns_.back().id;
}

checkpoint_tracker::txn_id checkpoint_tracker::add_record() {
    if (!open_) die("add_record without an open transaction");
    txn& t = txns_.back();
    ++t.pending;
    ++in_flight_;
    return t.id;
}

void checkpoint_tracker::commit_txn(lsn end_lsn) {
    if (!open_) die("commit_txn without an open transaction");
    // A zero end_lsn is the abandoned-transaction marker below; no real
    // Commit carries it (end_lsn is past the commit record).
    if (end_lsn.is_zero()) die("commit_txn with end_lsn 0/0");
    txn& t = txns_.back();
    t.end_lsn = end_lsn;
    t.committed = true;
    open_ = false;
    // A transaction whose records were all acked before its Commit arrived
    // (or that had none) may be confirmable right now.
    advance();
}

bool checkpoint_tracker::ack(txn_id id) {
    // Ids are handed out in increasing order and entries leave only from the
    // front, so the deque is indexed by id - front.id: O(1) per ack, which
    // matters at millions of acks per second.
    if (txns_.empty() || id < txns_.front().id) die("ack of an unknown or finished transaction");
    const std::uint64_t idx = id - txns_.front().id;
    if (idx >= txns_.size()) die("ack of an unknown transaction");
    txn& t = txns_[static_cast<std::size_t>(idx)];
    if (t.pending == 0) die("ack of a transaction with no record in flight");
    --t.pending;
    --in_flight_;
    // Only the front can unblock the watermark: an ack further back just
    // waits for the older transactions.
    if (idx != 0) return false;
    return advance();
}

bool checkpoint_tracker::on_keepalive(lsn wal_end) {
    // The server sends keepalives in the middle of a transaction's output
    // too, so walEnd says nothing about records still in flight (invariant 2).
    if (!idle()) return false;
    if (wal_end <= confirmed_) return false;
    confirmed_ = wal_end;
    return true;
}

void checkpoint_tracker::abandon_open_txn() noexcept {
    if (!open_) return;
    // Keep the entry so its in-flight records can still be acked; mark it
    // committed with end_lsn 0/0 so advance() drops it without confirming
    // anything: the server resends it after the reconnect.
    txn& t = txns_.back();
    t.committed = true;
    t.end_lsn = lsn{};
    open_ = false;
    advance();
}

bool checkpoint_tracker::advance() {
    const lsn before = confirmed_;
    bool moved = false;
    while (!txns_.empty() && txns_.front().committed && txns_.front().pending == 0) {
        const lsn end = txns_.front().end_lsn;
        txns_.pop_front();
        if (end.is_zero()) continue;  // abandoned: nothing to confirm
        // A transaction at or below confirmed() is a replay after a
        // reconnect (the server restarts at its own, possibly older,
        // confirmed_flush); it must not pull the watermark back.
        if (end > confirmed_) {
            confirmed_ = end;
            moved = true;
        }
    }
    // Guard against a future edit breaking the max() above: a watermark that
    // moves back would let Postgres recycle WAL it already had to resend.
    if (confirmed_ < before) die("confirmed LSN went backwards");
    return moved;
}

}  // namespace outbox
