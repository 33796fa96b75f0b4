#pragma once
// Positions of records the relay produced, for skipping what a replayed window
// already delivered (ARCHITECTURE.md invariant 6).
//
// Every record carries two headers, formatted and parsed here (and nowhere else):
//   outbox-relay.commit-lsn  X/X text of the transaction's commit LSN (Begin.final_lsn)
//   outbox-relay.seq         decimal index of the record inside its transaction, from 0
// Together they name the record's place in the WAL: (commit_lsn, seq) is unique
// per outbox row, and identical when the same transaction is replayed.
//
// The set is filled by the tail scanner (io/kafka_tail_scanner.hpp) and read by
// the relay before producing a replayed record. Set-based on purpose: a record
// that failed while newer ones succeeded leaves a gap that a replay refills,
// which "last position per partition" would skip for good.
#include "outbox_relay/errc.hpp"
#include "outbox_relay/lsn.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>

namespace outbox {

inline constexpr std::string_view header_commit_lsn = "outbox-relay.commit-lsn";  // Begin.final_lsn, X/X
inline constexpr std::string_view header_seq = "outbox-relay.seq";                 // index in txn, decimal
inline constexpr std::string_view header_source = "outbox-relay.source";           // source_id::header_value()

// Where a record comes from: the Postgres cluster (its system identifier,
// shared by its physical standbys), the timeline, the slot and the database.
// A position (commit LSN, seq) only names an event within one source: two
// clusters, two databases or two slots have unrelated LSNs, and a new
// timeline reuses LSNs past its fork point for other transactions.
struct source_id {
    std::string system_id;       // decimal digits (IDENTIFY_SYSTEM systemid)
    std::uint32_t timeline = 0;
    std::string slot;            // [a-z0-9_]
    std::string database;        // any text, last so it may hold ':'

    bool empty() const noexcept { return system_id.empty(); }
    // "<system_id>:<timeline>:<slot>:<database>", e.g. "7301...:1:outbox_relay:app".
    std::string header_value() const;
    // Parses header_value()'s form; errc::bad_value for anything else.
    static result<source_id> parse(std::string_view text);
    // Same cluster, slot and database (any timeline): the same event stream.
    bool same_origin(const source_id& o) const noexcept {
        return system_id == o.system_id && slot == o.slot && database == o.database;
    }
    friend bool operator==(const source_id&, const source_id&) = default;
};

struct record_position {
    lsn commit_lsn;
    std::uint32_t seq = 0;

    friend constexpr bool operator==(const record_position&, const record_position&) noexcept = default;
};

struct record_position_hash {
    // Mixes both fields (splitmix64 finaliser): commit LSNs of neighbouring
    // transactions differ in few low bits, so the raw value hashes badly.
    std::size_t operator()(const record_position& p) const noexcept;
};

// Parses the two header values of one record. `lsn_text` must be X/X as
// lsn::parse accepts it (errc::bad_lsn_text otherwise); `seq_text` must be
// 1+ decimal digits without sign or spaces whose value fits in 32 bits
// (errc::bad_value otherwise). Pure; the views need only live for the call.
result<record_position> parse_position(std::string_view lsn_text, std::string_view seq_text) noexcept;

// The Kafka transactional.id of a source's producer: one per cluster,
// database and slot (not timeline: a promoted standby's relay fences its
// predecessor), e.g. "outbox-relay:7301...:app:outbox_relay".
std::string transactional_id_of(std::string_view system_id, std::string_view database, std::string_view slot);

// The header values of one position, in its own small buffers (no allocation).
class position_text {
public:
    explicit position_text(const record_position& p) noexcept;
    std::string_view commit_lsn() const noexcept { return {lsn_, lsn_len_}; }
    std::string_view seq() const noexcept { return {seq_, seq_len_}; }

private:
    char lsn_[17];  // "FFFFFFFF/FFFFFFFF"
    char seq_[10];  // 4294967295
    std::size_t lsn_len_ = 0, seq_len_ = 0;
};

// A set of record positions. Not thread-safe: one thread at a time (the scanner
// fills it, then hands it to the loop thread by move).
class position_set {
public:
    // Adds `p`; returns true when it was not present yet. Throws only
    // std::bad_alloc, like the standard container under it.
    bool insert(const record_position& p) { return set_.insert(p).second; }

    bool contains(const record_position& p) const noexcept { return set_.find(p) != set_.end(); }

    std::size_t size() const noexcept { return set_.size(); }
    bool empty() const noexcept { return set_.empty(); }

    // Adds every position of `other` (a union); `other` is left unchanged.
    void merge(const position_set& other);

    // Removes every position whose commit LSN is below `bound`: once the slot's
    // confirmed position passes `bound`, those transactions are never replayed
    // again, so the relay can drop them to keep the set small.
    void erase_below(lsn bound) noexcept;

    void clear() noexcept { set_.clear(); }

    // The highest commit LSN in the set (0/0 when empty). O(size).
    lsn max_commit_lsn() const noexcept;

private:
    std::unordered_set<record_position, record_position_hash> set_;
};

}  // namespace outbox
