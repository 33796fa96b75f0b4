#include "outbox_relay/checkpoint.hpp"

#include <cstdio>
#include <cstdlib>
#include <utility>

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

void checkpoint_tracker::begin_txn(lsn final_lsn, std::int64_t commit_ts) {
    if (open_) die("begin_txn while a transaction is open");
    open_ = true;
    open_has_entry_ = false;
    open_final_lsn_ = final_lsn;
    open_commit_ts_ = commit_ts;
}

checkpoint_tracker::txn_id checkpoint_tracker::add_record() {
    if (!open_) die("add_record without an open transaction");
    // The entry is made on the first record, so transactions without records
    // never get one (see commit_txn).
    if (!open_has_entry_) {
        txns_.push_back(txn{next_id_++, lsn{}, open_commit_ts_, 0, false, false, true});
        open_has_entry_ = true;
    }
    txn& t = txns_.back();
    ++t.pending;
    ++in_flight_;
    return t.id;
}

bool checkpoint_tracker::commit_txn(lsn end_lsn) {
    if (!open_) die("commit_txn without an open transaction");
    if (end_lsn.is_zero()) die("commit_txn with end_lsn 0/0");
    open_ = false;
    if (open_has_entry_) {
        txn& t = txns_.back();
        t.end_lsn = end_lsn;
        t.committed = true;
        // Records all acked before their Commit arrived: confirmable now.
        return advance();
    }
    // No records. Nothing pending anywhere: confirm it at once.
    if (txns_.empty()) {
        if (end_lsn <= confirmed_) return false;  // a replay below the watermark
        confirmed_ = end_lsn;
        return true;
    }
    // Something before it is pending: fold it into the newest entry, which is
    // committed (the open transaction had none) and now confirms up to here.
    // An abandoned entry confirms nothing, so it gets a plain marker behind it.
    txn& back = txns_.back();
    if (!back.abandoned) {
        if (end_lsn > back.end_lsn) back.end_lsn = end_lsn;
    } else {
        txns_.push_back(txn{next_id_++, end_lsn, 0, 0, true, false, false});
    }
    return false;
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
    if (!idle() || !txns_.empty()) return false;
    if (wal_end <= confirmed_) return false;
    confirmed_ = wal_end;
    return true;
}

void checkpoint_tracker::abandon_open_txn() noexcept {
    if (!open_) return;
    open_ = false;
    if (!open_has_entry_) return;
    // Keep the entry so its in-flight records can still be acked, but it
    // confirms nothing: the server resends the transaction after the reconnect.
    txn& t = txns_.back();
    t.committed = true;
    t.abandoned = true;
    t.end_lsn = lsn{};
    advance();
}

void checkpoint_tracker::abandon_from(txn_id first) noexcept {
    if (open_) {
        open_ = false;
        // An open transaction without an entry has nothing to mark.
    }
    for (txn& t : txns_) {
        if (t.id < first) continue;
        t.committed = true;
        t.abandoned = true;
        t.end_lsn = lsn{};
    }
    advance();
}

std::vector<std::int64_t> checkpoint_tracker::take_confirmed_commit_times() {
    return std::exchange(confirmed_commit_ts_, {});
}

std::optional<std::int64_t> checkpoint_tracker::oldest_pending_commit_ts() const noexcept {
    for (const txn& t : txns_)
        if (t.has_records && !t.abandoned) return t.commit_ts;
    return std::nullopt;
}

bool checkpoint_tracker::advance() {
    const lsn before = confirmed_;
    bool moved = false;
    while (!txns_.empty() && txns_.front().committed && txns_.front().pending == 0) {
        const txn t = txns_.front();
        txns_.pop_front();
        if (t.abandoned) continue;  // nothing to confirm
        if (t.has_records) confirmed_commit_ts_.push_back(t.commit_ts);
        // A transaction at or below confirmed() is a replay after a
        // reconnect (the server restarts at its own, possibly older,
        // confirmed_flush); it must not pull the watermark back.
        if (t.end_lsn > confirmed_) {
            confirmed_ = t.end_lsn;
            moved = true;
        }
    }
    // Guard against a future edit breaking the max() above: a watermark that
    // moves back would let Postgres recycle WAL it already had to resend.
    if (confirmed_ < before) die("confirmed LSN went backwards");
    return moved;
}

}  // namespace outbox
