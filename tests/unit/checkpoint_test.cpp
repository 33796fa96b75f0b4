#include "outbox_relay/checkpoint.hpp"

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <functional>
#include <random>
#include <utility>
#include <vector>

using outbox::checkpoint_tracker;
using outbox::lsn;

namespace {

// Runs `f` in a forked child and reports whether it died of SIGABRT: the
// tracker aborts on a broken invariant, and that is the behaviour under test.
bool aborts(const std::function<void()>& f) {
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
        // Keep the child's expected abort message out of the test output.
        std::freopen("/dev/null", "w", stderr);
        // doctest traps SIGABRT to report crashes; the child must really die.
        std::signal(SIGABRT, SIG_DFL);
        f();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

}  // namespace

TEST_CASE("starts_at_start_lsn_and_idle") {
    checkpoint_tracker t{lsn{0x1000}};
    CHECK(t.confirmed() == lsn{0x1000});
    CHECK(t.idle());
    CHECK_FALSE(t.has_open_txn());
    CHECK(t.pending_txns() == 0);
}

TEST_CASE("single_txn_confirms_after_all_acks") {
    checkpoint_tracker t{lsn{0x100}};
    t.begin_txn(lsn{0x200}, 0);
    auto a = t.add_record();
    auto b = t.add_record();
    t.commit_txn(lsn{0x228});
    CHECK(t.confirmed() == lsn{0x100});
    CHECK(t.in_flight_records() == 2);
    CHECK_FALSE(t.ack(a));
    CHECK(t.confirmed() == lsn{0x100});
    CHECK(t.ack(b));
    CHECK(t.confirmed() == lsn{0x228});
    CHECK(t.idle());
    CHECK(t.pending_txns() == 0);
}

TEST_CASE("confirms_end_lsn_not_commit_lsn") {
    // The server resends a transaction iff commit_lsn >= confirmed_flush, so
    // the watermark must land on end_lsn (past the commit record).
    checkpoint_tracker t;
    const lsn commit_lsn{0x5000};
    const lsn end_lsn{0x5030};
    t.begin_txn(commit_lsn, 0);
    auto id = t.add_record();
    t.commit_txn(end_lsn);
    CHECK(t.ack(id));
    CHECK(t.confirmed() == end_lsn);
    CHECK(t.confirmed() != commit_lsn);
}

TEST_CASE("ack_out_of_order_holds_watermark") {
    checkpoint_tracker t{lsn{0x10}};
    t.begin_txn(lsn{0x100}, 0);
    auto a1 = t.add_record();
    auto a2 = t.add_record();
    t.commit_txn(lsn{0x120});
    t.begin_txn(lsn{0x200}, 0);
    auto b1 = t.add_record();
    t.commit_txn(lsn{0x220});

    // The newer transaction is fully acked first: nothing may move.
    CHECK_FALSE(t.ack(b1));
    CHECK(t.confirmed() == lsn{0x10});
    CHECK_FALSE(t.ack(a2));
    CHECK(t.confirmed() == lsn{0x10});
    // The last record of the oldest one releases both at once.
    CHECK(t.ack(a1));
    CHECK(t.confirmed() == lsn{0x220});
    CHECK(t.pending_txns() == 0);
}

TEST_CASE("watermark_stops_at_first_unacked_txn") {
    checkpoint_tracker t;
    std::vector<checkpoint_tracker::txn_id> ids;
    for (std::uint64_t i = 1; i <= 3; ++i) {
        t.begin_txn(lsn{i * 0x100}, 0);
        ids.push_back(t.add_record());
        t.commit_txn(lsn{i * 0x100 + 0x20});
    }
    CHECK(t.ack(ids[0]));
    CHECK(t.confirmed() == lsn{0x120});
    CHECK_FALSE(t.ack(ids[2]));
    CHECK(t.confirmed() == lsn{0x120});
    CHECK(t.ack(ids[1]));
    CHECK(t.confirmed() == lsn{0x320});
}

TEST_CASE("empty_txn_confirms_at_commit") {
    checkpoint_tracker t{lsn{0x10}};
    t.begin_txn(lsn{0x100}, 0);
    CHECK(t.confirmed() == lsn{0x10});
    t.commit_txn(lsn{0x130});
    CHECK(t.confirmed() == lsn{0x130});
    CHECK(t.pending_txns() == 0);
}

TEST_CASE("empty_txn_waits_for_earlier_acks") {
    checkpoint_tracker t;
    t.begin_txn(lsn{0x100}, 0);
    auto a = t.add_record();
    t.commit_txn(lsn{0x120});
    t.begin_txn(lsn{0x200}, 0);
    t.commit_txn(lsn{0x220});
    CHECK(t.confirmed() == lsn{});
    // Folded into the pending entry: no entry of its own.
    CHECK(t.pending_txns() == 1);
    CHECK(t.ack(a));
    CHECK(t.confirmed() == lsn{0x220});
}

TEST_CASE("empty_txns_fold_into_one_entry") {
    // A broker outage behind one pending record, while Postgres commits a
    // million transactions without outbox rows (other tables, messages):
    // the bookkeeping stays one entry, and the ack confirms all of them.
    checkpoint_tracker t{lsn{0x10}};
    t.begin_txn(lsn{0x100}, 0);
    auto a = t.add_record();
    CHECK_FALSE(t.commit_txn(lsn{0x120}));
    for (std::uint64_t i = 0; i < 1'000'000; ++i) {
        t.begin_txn(lsn{0x200 + i * 0x40}, 0);
        CHECK_FALSE(t.commit_txn(lsn{0x220 + i * 0x40}));
    }
    CHECK(t.pending_txns() == 1);
    CHECK(t.confirmed() == lsn{0x10});
    CHECK(t.ack(a));
    CHECK(t.confirmed() == lsn{0x220 + 999'999 * 0x40});
    CHECK(t.pending_txns() == 0);
}

TEST_CASE("empty_txn_after_abandoned_one_is_not_folded_into_it") {
    // An abandoned entry confirms nothing, so a later empty transaction keeps
    // its own end: it is confirmed once the abandoned records are acked.
    checkpoint_tracker t{lsn{0x10}};
    t.begin_txn(lsn{0x100}, 0);
    auto lost = t.add_record();
    t.abandon_open_txn();
    t.begin_txn(lsn{0x300}, 0);
    CHECK_FALSE(t.commit_txn(lsn{0x320}));
    CHECK(t.pending_txns() == 2);
    CHECK(t.ack(lost));
    CHECK(t.confirmed() == lsn{0x320});
}

TEST_CASE("abandon_from_stops_the_watermark_before_it") {
    checkpoint_tracker t{lsn{0x10}};
    t.begin_txn(lsn{0x100}, 0);
    auto a = t.add_record();
    t.commit_txn(lsn{0x120});
    t.begin_txn(lsn{0x200}, 0);
    auto b = t.add_record();
    t.commit_txn(lsn{0x220});
    t.begin_txn(lsn{0x300}, 0);
    auto c = t.add_record();  // still open
    t.abandon_from(b);
    CHECK_FALSE(t.has_open_txn());
    CHECK_FALSE(t.ack(c));
    CHECK_FALSE(t.ack(b));
    CHECK(t.confirmed() == lsn{0x10});
    // Only what came before `b` is still confirmable.
    CHECK(t.ack(a));
    CHECK(t.confirmed() == lsn{0x120});
    CHECK(t.idle());
    CHECK(t.pending_txns() == 0);
}

TEST_CASE("confirmed_commit_times_are_reported_once") {
    checkpoint_tracker t;
    t.begin_txn(lsn{0x100}, 111);
    auto a = t.add_record();
    t.commit_txn(lsn{0x120});
    t.begin_txn(lsn{0x200}, 222);  // no records: not a latency sample
    t.commit_txn(lsn{0x220});
    t.begin_txn(lsn{0x300}, 333);
    auto c = t.add_record();
    t.commit_txn(lsn{0x320});
    CHECK(t.ack(a));
    CHECK(t.take_confirmed_commit_times() == std::vector<std::int64_t>{111});
    CHECK(t.ack(c));
    CHECK(t.take_confirmed_commit_times() == std::vector<std::int64_t>{333});
    CHECK(t.take_confirmed_commit_times().empty());
}

TEST_CASE("records_acked_before_commit_confirm_at_commit") {
    // Kafka can ack faster than the rest of a big transaction arrives.
    checkpoint_tracker t;
    t.begin_txn(lsn{0x100}, 0);
    auto a = t.add_record();
    CHECK_FALSE(t.ack(a));
    CHECK(t.confirmed() == lsn{});
    CHECK(t.has_open_txn());
    t.commit_txn(lsn{0x140});
    CHECK(t.confirmed() == lsn{0x140});
}

TEST_CASE("keepalive_confirmed_when_idle") {
    checkpoint_tracker t{lsn{0x100}};
    CHECK(t.on_keepalive(lsn{0x900}));
    CHECK(t.confirmed() == lsn{0x900});
}

TEST_CASE("keepalive_ignored_while_in_flight") {
    checkpoint_tracker t{lsn{0x100}};
    t.begin_txn(lsn{0x200}, 0);
    auto a = t.add_record();
    t.commit_txn(lsn{0x220});
    CHECK_FALSE(t.on_keepalive(lsn{0x900}));
    CHECK(t.confirmed() == lsn{0x100});
    CHECK(t.ack(a));
    CHECK(t.confirmed() == lsn{0x220});
    // Once idle, the next keepalive may move it.
    CHECK(t.on_keepalive(lsn{0x900}));
    CHECK(t.confirmed() == lsn{0x900});
}

TEST_CASE("keepalive_ignored_while_txn_open") {
    checkpoint_tracker t{lsn{0x100}};
    t.begin_txn(lsn{0x200}, 0);  // open, no record yet
    CHECK_FALSE(t.idle());
    CHECK_FALSE(t.on_keepalive(lsn{0x900}));
    CHECK(t.confirmed() == lsn{0x100});
}

TEST_CASE("keepalive_never_moves_backwards") {
    checkpoint_tracker t{lsn{0x500}};
    CHECK_FALSE(t.on_keepalive(lsn{0x400}));
    CHECK_FALSE(t.on_keepalive(lsn{0x500}));
    CHECK(t.confirmed() == lsn{0x500});
}

TEST_CASE("replayed_txn_below_confirmed_does_not_move_back") {
    // After a reconnect the server restarts at its own confirmed_flush, which
    // can be older than ours when the last status update was not sent yet.
    checkpoint_tracker t{lsn{0x1000}};
    t.begin_txn(lsn{0x800}, 0);
    auto a = t.add_record();
    t.commit_txn(lsn{0x820});
    CHECK_FALSE(t.ack(a));
    CHECK(t.confirmed() == lsn{0x1000});
    CHECK(t.idle());
}

TEST_CASE("abandoned_txn_is_never_confirmed") {
    checkpoint_tracker t{lsn{0x100}};
    t.begin_txn(lsn{0x200}, 0);
    auto a = t.add_record();
    t.abandon_open_txn();
    CHECK_FALSE(t.has_open_txn());
    CHECK(t.in_flight_records() == 1);
    CHECK_FALSE(t.ack(a));
    CHECK(t.confirmed() == lsn{0x100});
    CHECK(t.idle());
    CHECK(t.pending_txns() == 0);
}

TEST_CASE("abandoned_txn_blocks_later_txns_until_acked") {
    checkpoint_tracker t{lsn{0x100}};
    t.begin_txn(lsn{0x200}, 0);
    auto lost = t.add_record();
    t.abandon_open_txn();
    // The resent transaction after the reconnect.
    t.begin_txn(lsn{0x200}, 0);
    auto again = t.add_record();
    t.commit_txn(lsn{0x220});
    CHECK_FALSE(t.ack(again));
    CHECK(t.confirmed() == lsn{0x100});
    CHECK(t.ack(lost));
    CHECK(t.confirmed() == lsn{0x220});
}

TEST_CASE("abandoned_txn_without_records_is_dropped") {
    checkpoint_tracker t{lsn{0x100}};
    t.begin_txn(lsn{0x200}, 0);
    t.abandon_open_txn();
    CHECK(t.pending_txns() == 0);
    CHECK(t.idle());
    CHECK(t.confirmed() == lsn{0x100});
    t.abandon_open_txn();  // nothing open: no-op
    CHECK(t.idle());
}

TEST_CASE("ack_of_unknown_txn_aborts") {
    CHECK(aborts([] {
        checkpoint_tracker t;
        t.ack(42);
    }));
    CHECK(aborts([] {
        checkpoint_tracker t;
        t.begin_txn(lsn{0x100}, 0);
        auto a = t.add_record();
        t.ack(a + 1);
    }));
}

TEST_CASE("ack_of_finished_txn_aborts") {
    CHECK(aborts([] {
        checkpoint_tracker t;
        t.begin_txn(lsn{0x100}, 0);
        auto a = t.add_record();
        t.commit_txn(lsn{0x120});
        t.ack(a);
        t.ack(a);  // double delivery report
    }));
    CHECK(aborts([] {
        // Entry still queued behind an older txn, but with nothing in flight.
        checkpoint_tracker t;
        t.begin_txn(lsn{0x100}, 0);
        t.add_record();
        t.commit_txn(lsn{0x120});
        t.begin_txn(lsn{0x200}, 0);
        auto b = t.add_record();
        t.commit_txn(lsn{0x220});
        t.ack(b);
        t.ack(b);
    }));
}

TEST_CASE("misuse_of_txn_boundaries_aborts") {
    CHECK(aborts([] {
        checkpoint_tracker t;
        t.begin_txn(lsn{0x100}, 0);
        t.begin_txn(lsn{0x200}, 0);
    }));
    CHECK(aborts([] {
        checkpoint_tracker t;
        t.add_record();
    }));
    CHECK(aborts([] {
        checkpoint_tracker t;
        t.commit_txn(lsn{0x100});
    }));
    // The helper itself must not report a clean exit as an abort.
    CHECK_FALSE(aborts([] {
        checkpoint_tracker t;
        t.begin_txn(lsn{0x100}, 0);
        t.commit_txn(lsn{0x120});
    }));
}

TEST_CASE("random_ack_order_matches_reference_model") {
    // Many transactions, records acked in a shuffled order; after every ack
    // the watermark must equal the end_lsn of the longest fully-acked prefix,
    // computed here independently by brute force.
    std::mt19937_64 rng{20240611};
    for (int round = 0; round < 20; ++round) {
        checkpoint_tracker t{lsn{0x10}};
        struct rec {
            std::size_t txn_index;
            checkpoint_tracker::txn_id id;
        };
        std::vector<rec> recs;
        std::vector<std::size_t> left;  // unacked records per txn
        std::vector<lsn> ends;
        const std::size_t ntx = 1 + rng() % 30;
        for (std::size_t i = 0; i < ntx; ++i) {
            t.begin_txn(lsn{0x1000 * (i + 1)}, 0);
            const std::size_t n = rng() % 4;  // zero-record txns included
            for (std::size_t j = 0; j < n; ++j) recs.push_back({i, t.add_record()});
            left.push_back(n);
            ends.push_back(lsn{0x1000 * (i + 1) + 0x28});
            t.commit_txn(ends.back());
        }
        auto expected = [&] {
            lsn e{0x10};
            for (std::size_t i = 0; i < ntx && left[i] == 0; ++i) e = ends[i];
            return e;
        };
        CHECK(t.confirmed() == expected());
        std::shuffle(recs.begin(), recs.end(), rng);
        for (const rec& r : recs) {
            const lsn before = t.confirmed();
            --left[r.txn_index];
            const bool moved = t.ack(r.id);
            REQUIRE(t.confirmed() == expected());
            CHECK(moved == (t.confirmed() != before));
        }
        CHECK(t.idle());
        CHECK(t.confirmed() == ends.back());
    }
}
