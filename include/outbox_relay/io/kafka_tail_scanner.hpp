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
//   1. Metadata for T -> its partitions; per partition the low/high watermarks.
//   2. Rounds. Round r reads, for every partition not done yet, the chunk
//      [max(lo, end - N_r), end), where end is hi for the first round and the
//      previous chunk's start afterwards, and N_r = first_chunk * 2^r. All
//      pending partitions are assigned at once at their chunk starts; the round
//      ends when each has delivered a record at offset >= end-1 or hit EOF.
//   3. Every record of a chunk whose position is >= `from` goes into the set;
//      records without the two headers, or with malformed ones, are counted in
//      records_without_position and otherwise ignored.
//
// Stop rule. A partition is done after a round whose chunk held a record with
// commit LSN < `from`, or whose chunk reached lo. Why that is enough: one relay
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

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
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
};

struct tail_scan_result {
    position_set present;                     // positions >= from found in the topic
    std::size_t partitions = 0;               // partitions of the topic (0 if it does not exist)
    std::size_t records_read = 0;             // records inside the chunks read
    std::size_t records_without_position = 0; // of those: headers missing or malformed
    std::size_t rounds = 0;                   // chunk rounds needed
    std::chrono::milliseconds took{};
};

// Scans the tail of every partition of `topic` and returns the set of positions
// >= `from` already present (see the algorithm above). Blocks the calling
// thread up to `opts.deadline`; meant for the relay's loop thread at stream
// start, before anything is produced to `topic`. Arguments are only used during
// the call. A topic that does not exist yields an empty result (nothing to skip).
// Throws std::runtime_error naming the topic and the cause when the deadline
// passes (brokers unreachable, leader missing, fetch stuck), on an
// authorization/authentication failure, or when librdkafka rejects a property
// (values of secret properties are not shown).
tail_scan_result scan_topic_tail(const tail_scan_options& opts, const std::string& topic, outbox::lsn from);

}  // namespace outbox::io
