#pragma once
// Reads back the tail of a Kafka topic to find which records of a replayed
// window are already there (ARCHITECTURE.md invariant 6, issue 5).
//
// After a crash the slot replays every transaction whose commit LSN >= the
// slot's confirmed position S. Before producing the first record to a topic T,
// the relay calls scan_topic_tail(opts, T, S) and skips every record whose
// (commit LSN, seq) position is in the returned set.
//
// Algorithm. One librdkafka consumer that never joins a group and never commits
// (assign() only, enable.auto.commit=false, isolation.level=read_committed,
// enable.partition.eof=true):
//   1. Metadata for T -> its partitions; the low and high watermarks of all of
//      them in two ListOffsets round trips (one per partition leader each).
//   2. Rounds. Round r reads, for every partition not done yet, the chunk
//      [max(lo, end - N_r), end), where end is hi for the first round and the
//      previous chunk's start afterwards, and N_r = first_chunk * 2^r. All
//      pending partitions are assigned at once at their chunk starts; the round
//      ends when each has delivered a record at offset >= end-1 or hit EOF.
//   3. Every record of a chunk whose position is >= `from` goes into the set;
//      records without the two headers, or with malformed ones, are counted in
//      records_without_position and otherwise ignored.
//      With a source (tail_scan_options::source), only records of that source
//      count: a record of the same cluster, slot and database and the same
//      timeline goes into the set; one of another timeline does not (its
//      LSNs past the fork point name other transactions, so the relay
//      produces rather than skips: a duplicate, never a loss); records of
//      other sources, or without a source header, are foreign and ignored.
//
// Stop rule. A partition is done after a round whose chunk held a record with
// commit LSN < `from` (with a source: a record of the same origin), or whose
// chunk reached lo. Foreign records, whatever their LSNs, never keep a scan
// going. Why that is enough: one relay
// session produces to a partition in LSN order, so below the newest record under
// `from` lie only records of older transactions, which the replay does not
// resend. The whole chunk is always read, so positions >= `from` that sit among
// older ones inside the same chunk are still found.
//
// Known limit. A session that refills a gap (a record that failed while newer
// ones succeeded) appends it after those newer records. If a later crash makes a
// replay start above that refilled record, the backward read can stop at it
// (it is below `from`) while newer positions of the earlier session sit further
// back, beyond the chunk boundary. Those positions are then missing from the
// set, so the relay produces them again: a duplicate, never a loss. The window
// is narrow (a failed record, a second crash before the slot passed it) and
// shrinks with larger chunks.
//
// Records appended after the watermarks were read (another producer) are not
// looked at: the scan is meant to run before this process produces to T.
#include "outbox_relay/dedupe.hpp"
#include "outbox_relay/lsn.hpp"

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

namespace outbox::io {

struct tail_scan_options {
    std::string brokers;
    // The user's -X settings (the producer's). Only those that matter for
    // reaching the cluster are passed on: security.*, sasl.*, ssl.*,
    // enable.ssl.certificate.verification, client.id, socket.*,
    // broker.address.family. Producer-only ones would be rejected by a consumer.
    std::map<std::string, std::string> properties;
    // Bound on the whole scan (metadata, watermarks, every round, closing).
    std::chrono::milliseconds deadline{60000};
    // Records per partition in the first round (values below 1 count as 1);
    // doubled each round. Tests use small values to exercise several rounds.
    std::int64_t first_chunk = 1000;
    // When set and it becomes true, the scan gives up within ~100 ms
    // (tail_scan_error, not permanent): the relay is stopping.
    const std::atomic<bool>* cancel = nullptr;
    // Whose records count (see above); empty: every record with a position.
    outbox::source_id source;
    // Stop after this many rounds (0: as many as the stop rule needs).
    std::size_t max_rounds = 0;
};

// Why a scan failed. `permanent`: waiting cannot cure it (authorisation or
// authentication refused, a topic name the brokers reject, a property
// librdkafka rejects); otherwise the deadline passed or the scan was
// cancelled, and a later attempt may succeed.
struct tail_scan_error : std::runtime_error {
    tail_scan_error(const std::string& what, bool is_permanent) : std::runtime_error(what), permanent(is_permanent) {}
    bool permanent;
};

struct tail_scan_result {
    position_set present;                     // positions >= from found in the topic
    std::size_t partitions = 0;               // partitions of the topic (0 if it does not exist)
    std::size_t records_read = 0;             // records inside the chunks read
    std::size_t records_without_position = 0; // of those: headers missing or malformed
    std::size_t rounds = 0;                   // chunk rounds needed
    std::size_t foreign_records = 0;          // with a source: records of other sources (or none) in the chunks
    std::size_t other_timeline = 0;           // records of the same origin, another timeline, >= from
    bool own_records_seen = false;            // any record of the same origin (any timeline, any LSN)
    outbox::lsn newest_own;                   // the highest commit LSN among those
    std::chrono::milliseconds took{};
};

// Scans the tail of every partition of `topic` and returns the set of positions
// >= `from` already present (see the algorithm above). Blocks the calling
// thread up to `opts.deadline`; meant for the relay's loop thread at stream
// start, before anything is produced to `topic`. Arguments are only used during
// the call. A topic that does not exist yields an empty result (nothing to skip).
// Throws tail_scan_error naming the topic and the cause when the deadline
// passes (brokers unreachable, leader missing, fetch stuck) or the scan is
// cancelled, on an authorization/authentication failure or an invalid topic
// name (permanent), or when librdkafka rejects a property (permanent; values
// of secret properties are not shown). Any thread; one scan per call.
tail_scan_result scan_topic_tail(const tail_scan_options& opts, const std::string& topic, outbox::lsn from);

struct gap_probe_result {
    bool found = false;           // a topic holds records of opts.source's origin
    outbox::lsn newest_own;       // the highest commit LSN among them
    std::string topic;            // where
    std::size_t topics_probed = 0;
};

// Looks for records of opts.source's origin in the newest records (the first
// chunk) of every partition of every topic named prefix...suffix for one of
// the `affixes` pairs: the topics the routes' templates can reach. Used when the relay had to create its slot,
// before any record tells it which topics matter. Blocking (a worker
// thread); throws tail_scan_error like scan_topic_tail.
using topic_affixes = std::vector<std::pair<std::string, std::string>>;  // (prefix, suffix) pairs
gap_probe_result probe_own_records(const tail_scan_options& opts, const topic_affixes& affixes);

// Runs tail scans off the loop thread: each on a worker thread (at most
// `max_parallel` at once, the rest queued in order), with the completion
// posted to `ioc`. Only `ioc`'s thread may call submit() and destroy the
// pool; completions run there too, and never after the pool is destroyed.
// The destructor cancels the scans still running (they stop within ~100 ms)
// and joins the workers.
class tail_scan_pool {
public:
    // Exactly one of `result` / `error` is set.
    using done_fn = std::function<void(std::optional<tail_scan_result> result, std::optional<tail_scan_error> error)>;

    tail_scan_pool(boost::asio::io_context& ioc, tail_scan_options base, std::size_t max_parallel = 4);
    ~tail_scan_pool();
    tail_scan_pool(const tail_scan_pool&) = delete;
    tail_scan_pool& operator=(const tail_scan_pool&) = delete;

    // Queues a gap probe (probe_own_records) with the base options.
    using probe_done_fn = std::function<void(std::optional<gap_probe_result>, std::optional<tail_scan_error>)>;
    void submit_probe(topic_affixes affixes, outbox::source_id source, probe_done_fn done);

    // Queues a scan of `topic` from `from` with the base options, counting
    // only `source`'s records (empty: every record with a position).
    void submit(std::string topic, outbox::lsn from, outbox::source_id source, done_fn done);

private:
    struct job {
        std::string topic;
        outbox::lsn from;
        outbox::source_id source;
        done_fn done;
        // A gap probe instead of a scan: the topic name patterns.
        topic_affixes affixes;
        probe_done_fn probe_done;
    };
    void work();

    boost::asio::io_context& ioc_;
    tail_scan_options base_;
    std::atomic<bool> cancel_{false};
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<job> queue_;
    bool stopping_ = false;
    std::vector<std::thread> workers_;
};

}  // namespace outbox::io
